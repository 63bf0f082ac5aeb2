//! The three seed documents: `login`, `token_auth`, `set_username`, every reply and
//! error text as the contract spells it.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn login_issues_a_new_token_and_authenticates() {
    let node = inproc_node(&[]).await;
    let name = unique_name("jane.doe");
    let first = node.client().await.signed_up(&name).await;

    let mut client = node.client().await;
    let reply = client.login(&name, PASSWORD).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    assert_eq!(reply["payload"]["username"], name.as_str());
    let token = reply["payload"]["token"].as_str().unwrap();
    let parsed = uuid::Uuid::parse_str(token).expect("token is a UUID");
    assert_eq!(parsed.get_version_num(), 4);
    assert_ne!(token, first, "each login issues a new token");
    // Authenticated now: a message that needs it is served.
    assert_eq!(client.request(json!({"type": "count"})).await["type"], "player_count");
}

#[tokio::test]
async fn login_answers_with_the_stored_account_name() {
    let node = inproc_node(&[]).await;
    let name = unique_name("Jane.Doe");
    node.client().await.signed_up(&name).await;
    let reply = node.client().await.login(&name.to_lowercase(), PASSWORD).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    assert_eq!(reply["payload"]["username"], name.as_str());
}

#[tokio::test]
async fn login_rejects_malformed_payloads() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let bad = [
        json!({"type": "login"}),
        json!({"type": "login", "payload": null}),
        json!({"type": "login", "payload": "jane.doe"}),
        json!({"type": "login", "payload": ["jane.doe", "securePassword123"]}),
        json!({"type": "login", "payload": {"username": "jane.doe"}}),
        json!({"type": "login", "payload": {"password": "securePassword123"}}),
        json!({"type": "login", "payload": {"username": 42, "password": "securePassword123"}}),
        json!({"type": "login", "payload": {"username": "jane.doe", "password": 123456}}),
        json!({"type": "login", "payload": {"username": "ja", "password": "securePassword123"}}),
        json!({"type": "login", "payload": {"username": "jane.doe", "password": "12345"}}),
    ];
    for message in bad {
        assert_eq!(client.request(message.clone()).await, auth_error("Invalid login format"), "{message}");
    }
    // Still unauthenticated after all that.
    assert_eq!(client.request(json!({"type": "count"})).await, error("Authentication required", "AUTH_REQUIRED"));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_reply() {
    let node = inproc_node(&[]).await;
    let name = unique_name("jane.doe");
    node.client().await.signed_up(&name).await;
    let mut client = node.client().await;
    assert_eq!(client.login(&name, "wrongPassword").await, auth_error("Invalid username or password"));
    assert_eq!(client.login(&unique_name("nobody"), PASSWORD).await, auth_error("Invalid username or password"));
}

#[tokio::test]
async fn unknown_user_costs_a_hash_like_a_wrong_password() {
    // Realistic cost so the difference a skipped hash would make is visible.
    let node =
        inproc_node(&["--argon2-memory-kib", "19456", "--argon2-iterations", "2", "--login-free-failures", "30"]).await;
    let name = unique_name("jane.doe");
    node.client().await.signed_up(&name).await;
    let mut client = node.client().await;
    let nobody = unique_name("nobody");
    let [known, unknown] = median_failed_logins(&mut client, [&name, &nobody]).await;
    let ratio = unknown / known;
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:.4}s vs known {known:.4}s");
}

/// Median time of a failed login, alternating between two users so machine noise
/// hits both alike.
async fn median_failed_logins(client: &mut Client, users: [&str; 2]) -> [f64; 2] {
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..7 {
        for (i, user) in users.iter().enumerate() {
            let start = std::time::Instant::now();
            let reply = client.login(user, "wrongPassword").await;
            assert_eq!(reply, auth_error("Invalid username or password"));
            samples[i].push(start.elapsed().as_secs_f64());
        }
    }
    samples.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    })
}

#[tokio::test]
async fn repeated_failures_from_one_address_back_off() {
    let node = inproc_node(&["--login-free-failures", "3"]).await;
    let name = unique_name("jane.doe");
    node.client().await.signed_up(&name).await;
    let mut client = node.client().await;
    for _ in 0..3 {
        assert_eq!(client.login(&name, "wrongPassword").await, auth_error("Invalid username or password"));
    }
    // The next guess from this address must wait a second: even the right password
    // is not checked before then.
    assert_eq!(client.login(&name, PASSWORD).await, auth_error("Too many attempts, try again later"));
    // Another account from the same address is unaffected.
    let other = unique_name("john.smith");
    node.client().await.signed_up(&other).await;
    assert_eq!(client.login(&other, PASSWORD).await["type"], "auth_success");
    // Once the wait is over, the right password gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.login(&name, PASSWORD).await["type"], "auth_success");
}

#[tokio::test]
async fn rate_limits_hold_across_nodes() {
    let cluster = Cluster::new().await;
    let limit = [("LOGIN_MAX_FAILURES_PER_ACCOUNT", "2")];
    let (a, b) = (cluster.node_with(&limit).await, cluster.node_with(&limit).await);
    let name = unique_name("jane.doe");
    a.client().await.signed_up(&name).await;
    a.client().await.login(&name, "wrongPassword").await;
    b.client().await.login(&name, "wrongPassword").await;
    assert_eq!(a.client().await.login(&name, PASSWORD).await, auth_error("Too many attempts, try again later"));
}

#[tokio::test]
async fn a_saturated_hash_pool_answers_server_busy() {
    let node = inproc_node(&[
        "--hash-workers",
        "1",
        "--hash-queue",
        "0",
        "--argon2-memory-kib",
        "65536",
        "--argon2-iterations",
        "4",
    ])
    .await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(node.client().await);
    }
    for client in &mut clients {
        client.send(json!({"type": "login", "payload": {"username": "nobody", "password": "whatever1"}})).await;
    }
    let mut busy = 0;
    for client in &mut clients {
        let reply = client.recv().await;
        if reply == auth_error("Server busy, try again later") {
            busy += 1;
        } else {
            assert_eq!(reply, auth_error("Invalid username or password"));
        }
    }
    assert!(busy >= 1, "no login was refused with one worker and no queue");
}

#[tokio::test]
async fn token_auth_restores_the_account() {
    let node = inproc_node(&[]).await;
    let name = unique_name("jane.doe");
    let token = node.client().await.signed_up(&name).await;
    let mut client = node.client().await;
    let reply = client.token_auth(&token).await;
    assert_eq!(reply, json!({"type": "auth_success", "payload": {"username": name, "token": token}}));
    assert_eq!(client.request(json!({"type": "count"})).await["type"], "player_count");
}

#[tokio::test]
async fn token_auth_echoes_the_token_as_sent() {
    let node = inproc_node(&[]).await;
    let token = node.client().await.signed_up(&unique_name("jane.doe")).await;
    let upper = token.to_uppercase();
    let reply = node.client().await.token_auth(&upper).await;
    assert_eq!(reply["type"], "auth_success");
    assert_eq!(reply["payload"]["token"], upper.as_str());
}

#[tokio::test]
async fn token_auth_rejects_malformed_payloads() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let bad = [
        json!({"type": "token_auth"}),
        json!({"type": "token_auth", "payload": "550e8400-e29b-41d4-a716-446655440000"}),
        json!({"type": "token_auth", "payload": {}}),
        json!({"type": "token_auth", "payload": {"token": 42}}),
        json!({"type": "token_auth", "payload": {"token": "not-a-uuid"}}),
        json!({"type": "token_auth", "payload": {"token": "550e8400-e29b-41d4-a716-44665544000"}}),
        json!({"type": "token_auth", "payload": {"token": ""}}),
    ];
    for message in bad {
        assert_eq!(client.request(message.clone()).await, auth_error("Invalid token format"), "{message}");
    }
}

#[tokio::test]
async fn unknown_expired_and_revoked_tokens_are_refused() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let mut client = node.client().await;
    let refused = auth_error("Invalid or expired token");
    assert_eq!(client.token_auth(&uuid::Uuid::new_v4().to_string()).await, refused);

    // Expired: issued with a one-second lifetime.
    let short = inproc_node(&["--token-ttl-secs", "1"]).await;
    let token = short.client().await.signed_up(&unique_name("brief")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(client.token_auth(&token).await, refused);

    // Revoked in the database (and the cache entry gone with it).
    let token = node.client().await.signed_up(&unique_name("revoked")).await;
    let db = cluster.psql().await;
    db.execute("UPDATE auth_tokens SET revoked_at = now()", &[]).await.unwrap();
    let mut redis = cluster.redis().await;
    for key in cluster.redis_keys().await.into_iter().filter(|k| k.ends_with(":tok")) {
        let _: () = redis::AsyncCommands::del(&mut redis, key).await.unwrap();
    }
    assert_eq!(client.token_auth(&token).await, refused);
}

#[tokio::test]
async fn token_auth_updates_last_used_at_within_two_seconds() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let token = node.client().await.signed_up(&unique_name("jane.doe")).await;
    let db = cluster.psql().await;
    let before: Option<std::time::SystemTime> =
        db.query_one("SELECT last_used_at FROM auth_tokens", &[]).await.unwrap().get(0);
    assert!(before.is_none());
    assert_eq!(node.client().await.token_auth(&token).await["type"], "auth_success");
    let written = eventually(Duration::from_secs(2), || async {
        let row = db.query_one("SELECT last_used_at IS NOT NULL FROM auth_tokens", &[]).await.unwrap();
        row.get::<_, bool>(0)
    })
    .await;
    assert!(written, "last_used_at not written within 2 s");
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let token = node.client().await.signed_up(&unique_name("jane.doe")).await;
    node.client().await.token_auth(&token).await;
    let db = cluster.psql().await;
    let row = db.query_one("SELECT token_hash FROM auth_tokens", &[]).await.unwrap();
    let stored: Vec<u8> = row.get(0);
    use sha2::Digest;
    assert_eq!(stored, sha2::Sha256::digest(token.as_bytes()).to_vec());
    let mut redis = cluster.redis().await;
    for key in cluster.redis_keys().await {
        assert!(!key.contains(&token), "raw token in Redis key {key}");
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await.unwrap();
        if kind == "string" {
            let value: String = redis::AsyncCommands::get(&mut redis, &key).await.unwrap();
            assert!(!value.contains(&token), "raw token in Redis value of {key}");
        }
    }
}

#[tokio::test]
async fn set_username_requires_authentication() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let reply = client.request(json!({"type": "set_username", "payload": "CoolGamer42"})).await;
    assert_eq!(reply, error("Authentication required", "AUTH_REQUIRED"));
}

#[tokio::test]
async fn set_username_renames_the_session() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let account = unique_name("jane.doe");
    client.signed_up(&account).await;
    let reply = client.request(json!({"type": "set_username", "payload": "CoolGamer42"})).await;
    assert_eq!(reply, json!({"type": "display_name_updated", "payload": "CoolGamer42"}));
    client.send(json!({"type": "global_chat", "payload": "hi"})).await;
    assert_eq!(client.recv().await, chat("global_chat", "CoolGamer42", &account, "hi"));
}

#[tokio::test]
async fn set_username_round_trips_quotes_and_backslashes() {
    let node = inproc_node(&[]).await;
    let mut client = node.player("jane.doe").await;
    for name in [r#"Cool"Gamer\42"#, "\\\"", "Gamer <script>", "名前 🎮"] {
        let reply = client.request(json!({"type": "set_username", "payload": name})).await;
        assert_eq!(reply, json!({"type": "display_name_updated", "payload": name}));
    }
}

#[tokio::test]
async fn set_username_with_a_non_string_payload_is_silently_ignored() {
    let node = inproc_node(&[]).await;
    let mut client = node.player("jane.doe").await;
    for payload in [json!(42), json!(null), json!({"name": "x"}), json!(["x"]), json!(true)] {
        client.send(json!({"type": "set_username", "payload": payload})).await;
    }
    client.send(json!({"type": "set_username"})).await;
    client.expect_silence(Duration::from_millis(500)).await;
    // The connection still works, and the next reply is the next request's.
    let reply = client.request(json!({"type": "set_username", "payload": "Next"})).await;
    assert_eq!(reply, json!({"type": "display_name_updated", "payload": "Next"}));
}

#[tokio::test]
async fn display_name_belongs_to_the_session_not_the_account() {
    let node = inproc_node(&[]).await;
    let name = unique_name("jane.doe");
    let mut first = node.client().await;
    let token = first.signed_up(&name).await;
    first.request(json!({"type": "set_username", "payload": "Renamed"})).await;
    first.close().await;

    // Same token: the session's name comes back.
    let mut again = node.client().await;
    assert_eq!(again.token_auth(&token).await["payload"]["username"], name.as_str());
    again.send(json!({"type": "global_chat", "payload": "back"})).await;
    assert_eq!(again.recv().await["payload"]["username"], "Renamed");

    // A new login is a new session: the account name again.
    let mut fresh = node.client().await;
    fresh.login(&name, PASSWORD).await;
    fresh.send(json!({"type": "global_chat", "payload": "new"})).await;
    // `again` is authenticated too and sees the chat; read fresh's own copy.
    assert_eq!(fresh.recv().await["payload"]["username"], name.as_str());
}
