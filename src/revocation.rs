//! A session ends with its token, and a live session's token stays in the cache.
//! Every `SESSION_CHECK_SECS` each node asks PostgreSQL which of its live sessions'
//! tokens are still valid (one query per batch of tokens):
//! - a token that was revoked, has expired, or whose account was deleted ends every
//!   session using it on this node (`Invalid or expired token`) and leaves the token
//!   cache, so no node accepts it again;
//! - a valid one is written to the token cache again once half the cache's lifetime
//!   has passed since it last was, so when this node dies and its players reconnect
//!   elsewhere all at once, their `token_auth` finds the cache warm and asks
//!   PostgreSQL nothing;
//! - a ban or mute in force on a live session's account is carried out here too, so
//!   one imposed while this node could not hear the bus (Redis down) still reaches
//!   its sessions within `SESSION_CHECK_SECS`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenHash;
use crate::error::store_skipped;
use crate::node::Node;
use crate::outbox::Moderated;
use crate::store::{unix_now, TokenRecord};

/// Tokens asked about per query.
const BATCH: usize = 5_000;
/// Cache writes in flight at once while refreshing.
const REFRESH_IN_FLIGHT: usize = 64;

pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(node.config.session_check_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each live token was last written to the cache.
    let mut cached: HashMap<TokenHash, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => check(&node, &mut cached).await,
        }
    }
}

async fn check(node: &Node, cached: &mut HashMap<TokenHash, Instant>) {
    let refresh_after = Duration::from_secs(node.config.token_cache_ttl_secs / 2);
    let tokens = node.registry.tokens();
    cached.retain(|token, _| tokens.binary_search_by_key(&token.0, |t| t.0).is_ok());
    for batch in tokens.chunks(BATCH) {
        // Without PostgreSQL nothing can be told: sessions go on until it answers.
        let Ok(live) = node.stores.users.live_tokens(batch).await else {
            return;
        };
        let live: HashMap<TokenHash, _> = live.into_iter().collect();
        enforce_standing(node, &live);
        // Many writes in flight at once: one at a time, thousands of players would take
        // longer than the cache's lifetime on a slow link.
        let due: Vec<_> = live
            .iter()
            .filter(|(token, _)| cached.get(*token).is_none_or(|at| at.elapsed() >= refresh_after))
            .collect();
        for chunk in due.chunks(REFRESH_IN_FLIGHT) {
            let writes = chunk.iter().map(|&(token, record)| async move {
                let ttl = node.cache_ttl(record.expires_at);
                node.stores.tokens.cache(token, record, ttl, None).await.ok().map(|()| *token)
            });
            let now = Instant::now();
            cached.extend(join_all(writes).await.into_iter().flatten().map(|token| (token, now)));
        }
        let ended: Vec<_> = batch.iter().filter(|t| !live.contains_key(t)).copied().collect();
        if ended.is_empty() {
            continue;
        }
        tracing::info!(tokens = ended.len(), "ending sessions whose tokens are no longer valid");
        if let Err(e) = node.stores.tokens.forget(&ended).await {
            store_skipped(e, "ended tokens left in the cache until it expires");
        }
        for token in &ended {
            cached.remove(token);
            node.registry.revoke(token);
        }
    }
}

/// Bans and mutes in force on the accounts of live sessions (their tokens' records).
fn enforce_standing(node: &Node, live: &HashMap<TokenHash, TokenRecord>) {
    let now = unix_now();
    for (token, record) in live {
        let standing = &record.standing;
        if let Some(ban) = standing.ban(now) {
            let action = Moderated::Banned { reason: ban.reason.clone(), until: ban.until };
            node.registry.moderate_token(token, &Arc::new(action));
        } else if let Some(mute) = standing.mute(now) {
            node.registry.moderate_token(token, &Arc::new(Moderated::Muted { until: mute.until }));
        }
    }
}
