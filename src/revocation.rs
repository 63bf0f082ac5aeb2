//! A session ends with its token. Every `SESSION_CHECK_SECS` each node asks
//! PostgreSQL which of its live sessions' tokens are still valid (one query per
//! batch of tokens); a token that was revoked, has expired, or whose account was
//! deleted ends every session using it on this node (`Invalid or expired token`), and
//! leaves the token cache, so no node accepts it again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Tokens asked about per query.
const BATCH: usize = 5_000;

pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(node.config.session_check_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => check(&node).await,
        }
    }
}

async fn check(node: &Node) {
    for batch in node.registry.tokens().chunks(BATCH) {
        // Without PostgreSQL nothing can be told: sessions go on until it answers.
        let Ok(live) = node.stores.users.live_tokens(batch).await else {
            return;
        };
        let ended: Vec<_> = batch.iter().filter(|t| !live.contains(t)).copied().collect();
        if ended.is_empty() {
            continue;
        }
        tracing::info!(tokens = ended.len(), "ending sessions whose tokens are no longer valid");
        let _ = node.stores.tokens.forget(&ended).await;
        for token in &ended {
            node.registry.revoke(token);
        }
    }
}
