//! Graceful drain on SIGTERM / SIGINT.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn sigterm_drains_then_closes_with_1001_and_exits_0() {
    let cluster = Cluster::new().await;
    let mut node = cluster.node_with(&[("SHUTDOWN_DRAIN_SECS", "2")]).await;
    let other = cluster.node().await;
    let mut player = node.client().await;
    let token = player.signed_up(&unique_name("jane")).await;
    let _watcher = other.player("watcher").await;
    // A token_auth right before the signal: its last_used_at must survive shutdown.
    let mut late = node.client().await;
    assert_eq!(late.token_auth(&token).await["type"], "auth_success");
    assert!(eventually(Duration::from_secs(5), || async { watcher_count(&other).await == 3 }).await);

    let signalled = Instant::now();
    node.signal("TERM");
    // Not ready at once, saying why.
    assert!(
        eventually(Duration::from_millis(500), || async {
            matches!(http(node.public, "GET", "/ready", None, &[]).await, Ok((503, body))
            if serde_json::from_str::<Value>(&body).map(|v| v["status"] == "draining").unwrap_or(false))
        })
        .await
    );
    // New WebSocket connections are refused while existing ones keep working.
    assert!(tokio_tungstenite::connect_async(node.ws_url()).await.is_err());
    assert_eq!(player.request(json!({"type": "count"})).await["type"], "player_count");

    // After the drain time the remaining sockets are told to go away.
    assert_eq!(player.expect_close().await, Some(CloseCode::Away));
    assert!(signalled.elapsed() >= Duration::from_millis(1900));
    let code = node.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10), "took {:?}", signalled.elapsed());

    // Presence removed at once: the other node sees it at its next heartbeat (1 s),
    // not after the stale timeout. last_used_at flushed.
    assert!(eventually(Duration::from_secs(2), || async { watcher_count(&other).await == 1 }).await);
    let db = cluster.psql().await;
    let used: i64 =
        db.query_one("SELECT count(*) FROM auth_tokens WHERE last_used_at IS NOT NULL", &[]).await.unwrap().get(0);
    assert_eq!(used, 1);
}

#[tokio::test]
async fn sigint_with_no_clients_exits_promptly() {
    let cluster = Cluster::new().await;
    let mut node = cluster.node_with(&[("SHUTDOWN_DRAIN_SECS", "10")]).await;
    let started = Instant::now();
    node.signal("INT");
    assert_eq!(node.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(3), "an empty node need not wait out the drain");
}

async fn watcher_count(node: &NodeProc) -> u64 {
    let mut c = node.player("counter").await;
    let n = c.request(json!({"type": "count"})).await["payload"].as_u64().unwrap();
    c.close().await;
    n - 1
}
