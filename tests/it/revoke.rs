//! Ending tokens: the operator's `openchampps revoke`, and accounts deleted from the
//! database. A revoked token must stop working on every node at once, even where it
//! was cached; nothing else may stop working with it.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const INVALID_TOKEN: &str = "Invalid or expired token";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn auth_success(username: &str, token: &str) -> Value {
    json!({"type": "auth_success", "payload": {"username": username, "token": token}})
}

/// A token_auth on a fresh connection.
async fn token_auth(node: &NodeProc, token: &str) -> Value {
    node.client().await.token_auth(token).await
}

async fn login_token(node: &NodeProc, user: &str) -> String {
    let reply = node.client().await.login(user, PASSWORD).await;
    reply["payload"]["token"].as_str().unwrap_or_else(|| panic!("login: {reply}")).to_owned()
}

#[tokio::test]
async fn revoking_a_user_ends_all_its_cached_tokens_on_every_node_at_once() {
    let cluster = Cluster::new().await;
    let nodes = [cluster.node().await, cluster.node().await];
    let jane = unique_name("Jane");
    let jane_tokens = [nodes[0].client().await.signed_up(&jane).await, login_token(&nodes[1], &jane).await];
    let bob = unique_name("bob");
    let bob_token = nodes[0].client().await.signed_up(&bob).await;
    // Every token works on both nodes, so each is in the cache.
    for node in &nodes {
        for token in &jane_tokens {
            assert_eq!(token_auth(node, token).await, auth_success(&jane, token));
        }
        assert_eq!(token_auth(node, &bob_token).await, auth_success(&bob, &bob_token));
    }

    // Account names are case-insensitive for the operator too.
    let out = cluster.revoke(&["--user", &jane.to_uppercase()]).await;
    assert!(out.status.success(), "revoke failed: {}", stderr(&out));
    assert!(stdout(&out).contains("revoked 2 token(s)"), "stdout: {}", stdout(&out));

    // No waiting: the first attempt after the command returns is refused everywhere.
    for node in &nodes {
        for token in &jane_tokens {
            assert_eq!(token_auth(node, token).await, auth_error(INVALID_TOKEN), "on {}", node.node_id);
        }
        assert_eq!(token_auth(node, &bob_token).await, auth_success(&bob, &bob_token), "bob on {}", node.node_id);
    }
    // The account itself still works: a new login gets a new, working token.
    let fresh = login_token(&nodes[1], &jane).await;
    assert_eq!(token_auth(&nodes[0], &fresh).await, auth_success(&jane, &fresh));
}

#[tokio::test]
async fn revoking_one_token_leaves_the_users_other_tokens_working() {
    let cluster = Cluster::new().await;
    let nodes = [cluster.node().await, cluster.node().await];
    let jane = unique_name("jane");
    let stolen = nodes[0].client().await.signed_up(&jane).await;
    let kept = login_token(&nodes[1], &jane).await;
    for node in &nodes {
        assert_eq!(token_auth(node, &stolen).await, auth_success(&jane, &stolen));
        assert_eq!(token_auth(node, &kept).await, auth_success(&jane, &kept));
    }

    // Any case of the token is the same token.
    let out = cluster.revoke(&["--token", &stolen.to_uppercase()]).await;
    assert!(out.status.success(), "revoke failed: {}", stderr(&out));
    assert!(stdout(&out).contains("revoked 1 token(s)"), "stdout: {}", stdout(&out));

    for node in &nodes {
        assert_eq!(token_auth(node, &stolen).await, auth_error(INVALID_TOKEN), "on {}", node.node_id);
        assert_eq!(token_auth(node, &kept).await, auth_success(&jane, &kept), "on {}", node.node_id);
    }
}

#[tokio::test]
async fn revoke_refuses_malformed_and_unknown_tokens_with_one_line() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let jane = unique_name("jane");
    let token = node.client().await.signed_up(&jane).await;

    let unknown = uuid::Uuid::new_v4().to_string();
    for bad in ["not-a-token", "", &token.replace('-', ""), &unknown] {
        let out = cluster.revoke(&["--token", bad]).await;
        assert!(!out.status.success(), "revoke --token {bad:?} succeeded: {}", stdout(&out));
        let message = stderr(&out);
        assert_eq!(message.trim_end().lines().count(), 1, "revoke --token {bad:?}: not one line: {message:?}");
        assert!(message.starts_with("openchampps: "), "revoke --token {bad:?}: {message:?}");
    }
    // None of that touched the real token.
    assert_eq!(token_auth(&node, &token).await, auth_success(&jane, &token));
}

#[tokio::test]
async fn a_deleted_accounts_tokens_stop_once_the_cache_entry_expires() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("TOKEN_CACHE_TTL_SECS", "1")]).await;
    let jane = unique_name("jane");
    let token = node.client().await.signed_up(&jane).await;
    assert_eq!(token_auth(&node, &token).await, auth_success(&jane, &token));
    let bob = unique_name("bob");
    let bob_token = node.client().await.signed_up(&bob).await;

    let deleted = cluster.psql().await.execute("DELETE FROM users WHERE username = $1", &[&jane]).await.unwrap();
    assert_eq!(deleted, 1);

    // Until the 1 s cache entry expires the token may still be served from Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    let last = loop {
        let reply = token_auth(&node, &token).await;
        if reply == auth_error(INVALID_TOKEN) || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last, auth_error(INVALID_TOKEN), "token of a deleted account still works after 5 s");
    assert_eq!(token_auth(&node, &bob_token).await, auth_success(&bob, &bob_token));
}
