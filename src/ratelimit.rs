//! Failed-login counters per account and per client address, in fixed windows.
//! They live in Redis so limits hold across nodes; while Redis is unreachable each
//! node falls back to counting on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Limits;

pub struct RateLimiter {
    limits: Arc<dyn Limits>,
    local: Mutex<HashMap<String, (u64, Instant)>>,
    window: Duration,
    per_account: u64,
    per_address: u64,
}

/// Keys for one attempt: the account (if any) and the client address.
pub struct Subject {
    keys: Vec<String>,
    limits: Vec<u64>,
}

impl RateLimiter {
    pub fn new(limits: Arc<dyn Limits>, window: Duration, per_account: u64, per_address: u64) -> Self {
        RateLimiter { limits, local: Mutex::default(), window, per_account, per_address }
    }

    pub fn subject(&self, account: Option<&str>, address: &str) -> Subject {
        let mut keys = vec![format!("ip:{address}")];
        let mut limits = vec![self.per_address];
        if let Some(account) = account {
            keys.push(account_key(account));
            limits.push(self.per_account);
        }
        Subject { keys, limits }
    }

    /// Whether this subject has used up its failures for the window.
    pub async fn is_limited(&self, subject: &Subject) -> bool {
        for (key, limit) in subject.keys.iter().zip(&subject.limits) {
            let count = match self.limits.count(key).await {
                Ok(count) => count,
                Err(_) => self.local_count(key),
            };
            if count >= *limit {
                return true;
            }
        }
        false
    }

    pub async fn record_failure(&self, subject: &Subject) {
        for key in &subject.keys {
            if self.limits.hit(key, self.window.as_secs()).await.is_err() {
                let mut local = self.local.lock().unwrap();
                let now = Instant::now();
                local.retain(|_, (_, start)| now.duration_since(*start) < self.window);
                local.entry(key.clone()).or_insert((0, now)).0 += 1;
            }
        }
    }

    /// A successful login forgives the account's earlier failures.
    pub async fn clear_account(&self, account: &str) {
        let key = account_key(account);
        let _ = self.limits.clear(&key).await;
        self.local.lock().unwrap().remove(&key);
    }

    fn local_count(&self, key: &str) -> u64 {
        let local = self.local.lock().unwrap();
        match local.get(key) {
            Some((count, start)) if start.elapsed() < self.window => *count,
            _ => 0,
        }
    }
}

/// Accounts are counted by name regardless of case, as they are looked up.
fn account_key(account: &str) -> String {
    format!("acct:{}", account.to_lowercase())
}
