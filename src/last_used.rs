//! `last_used_at` is written behind: `token_auth` only marks the token here, and a
//! flush every second writes the whole batch in one UPDATE (and once more at shutdown).

use std::collections::HashSet;
use std::mem;
use std::sync::Mutex;
use std::time::Duration;

use crate::auth::TokenHash;
use crate::store::UserStore;

pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct LastUsed {
    pending: Mutex<HashSet<TokenHash>>,
}

impl LastUsed {
    pub fn mark(&self, token: TokenHash) {
        self.pending.lock().unwrap().insert(token);
    }

    /// Writes the pending batch; on failure it is kept for the next flush.
    pub async fn flush(&self, users: &dyn UserStore) {
        let batch: Vec<TokenHash> = mem::take(&mut *self.pending.lock().unwrap()).into_iter().collect();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = users.touch_tokens(&batch).await {
            tracing::warn!(error = %e, tokens = batch.len(), "could not write last_used_at; will retry");
            self.pending.lock().unwrap().extend(batch);
        }
    }
}
