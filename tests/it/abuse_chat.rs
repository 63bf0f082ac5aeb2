//! Chat abuse against real nodes, PostgreSQL and Redis: names and targets far longer
//! than any name, and one account chatting from several nodes at once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::stores::{command_calls, PrivateRedis};
use crate::common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn rate_limited() -> Value {
    error("Too many messages, slow down", "RATE_LIMITED")
}

fn bad_message() -> Value {
    error("Invalid message format", "BAD_MESSAGE")
}

fn private(target: &str, message: &str) -> Value {
    json!({"type": "private_chat", "payload": {"target": target, "message": message}})
}

/// Redis key of a token's session display name (see the key schema in src/store/redis/mod.rs).
fn session_key(cluster: &Cluster, token: &str) -> String {
    let hash: String = Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{{t:{hash}}}:sess", cluster.prefix)
}

/// The cluster's Redis keys once they stop changing (the directory is written just
/// after a login, by a background task).
async fn settled_keys(cluster: &Cluster) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = cluster.redis_keys().await.into_iter().collect();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now: BTreeSet<String> = cluster.redis_keys().await.into_iter().collect();
        if now == keys {
            break;
        }
        keys = now;
    }
    keys
}

#[tokio::test]
async fn a_private_chat_target_longer_than_any_name_is_refused_before_any_store_work() {
    let cluster = Cluster::new().await;
    // One a second: each message taken keeps the chat bucket's key a second longer.
    let node = cluster.node_with(&[("CHAT_MESSAGES_PER_SEC", "1"), ("CHAT_BURST", "10")]).await;
    let mut mallory = node.player("mallory").await;
    let before = settled_keys(&cluster).await;

    let target = "t".repeat(16_000);
    assert_eq!(mallory.request(private(&target, "hi")).await, bad_message());
    // One past the longest username (64 characters, in characters, not bytes).
    assert_eq!(mallory.request(private(&"é".repeat(65), "hi")).await, bad_message());
    // Nothing was written: no route lookup cached, no chat bucket taken.
    let after: BTreeSet<String> = cluster.redis_keys().await.into_iter().collect();
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(new.is_empty(), "keys written for a refused target: {new:?}");
    assert!(after.iter().all(|k| k.len() < 200), "a key with the target in its name");

    // A target as long as the longest username is a name: looked up (and remembered
    // as nobody's), and the sender's chat bucket taken from. No reply.
    for _ in 0..5 {
        mallory.send(private(&"é".repeat(64), "hi")).await;
    }
    mallory.expect_silence(Duration::from_millis(200)).await;
    let after: BTreeSet<String> = cluster.redis_keys().await.into_iter().collect();
    assert!(after.iter().any(|k| k.contains(":rate:")), "no chat bucket taken: {after:?}");
    assert!(after.iter().any(|k| k.contains(&"é".repeat(64))), "no lookup remembered: {after:?}");
}

#[tokio::test]
async fn a_display_name_that_is_no_name_is_ignored_and_chat_keeps_the_old_one() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let jane = unique_name("jane");
    let mut client = a.client().await;
    let token = client.signed_up(&jane).await;
    let mut redis = cluster.redis().await;
    let stored = |redis: &mut redis::aio::MultiplexedConnection| {
        let key = session_key(&cluster, &token);
        let mut redis = redis.clone();
        async move { redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut redis).await.unwrap() }
    };
    assert_eq!(
        client.request(json!({"type": "set_username", "payload": "JaneShown"})).await,
        json!({"type": "display_name_updated", "payload": "JaneShown"})
    );

    // 16,000 characters, 33, blank, padded, with a control or an invisible character:
    // no reply, nothing stored.
    let huge = "x".repeat(16_000);
    let too_long = "y".repeat(33);
    for name in [huge.as_str(), too_long.as_str(), "", "   ", " Jane", "Jane ", "Ja\nne", "Ja\u{202e}ne"] {
        client.send(json!({"type": "set_username", "payload": name})).await;
    }
    client.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(stored(&mut redis).await.as_deref(), Some("JaneShown"));
    client.send(json!({"type": "global_chat", "payload": "x"})).await;
    assert_eq!(client.recv().await, chat("global_chat", "JaneShown", &jane, "x"));

    // 32 characters is a name; it comes back on another node with the token.
    let longest = "Z".repeat(32);
    assert_eq!(
        client.request(json!({"type": "set_username", "payload": longest})).await,
        json!({"type": "display_name_updated", "payload": longest})
    );
    client.send(json!({"type": "global_chat", "payload": "y"})).await;
    assert_eq!(client.recv().await, chat("global_chat", &longest, &jane, "y"));
    let mut on_b = b.client().await;
    assert_eq!(on_b.token_auth(&token).await["type"], "auth_success");
    on_b.send(json!({"type": "global_chat", "payload": "z"})).await;
    assert_eq!(on_b.recv().await, chat("global_chat", &longest, &jane, "z"));

    // A 16 KB name stored before names had a format is not restored: the session
    // starts with the account name.
    let mut conn = redis.clone();
    let key = session_key(&cluster, &token);
    redis::cmd("SET").arg(key).arg(&huge).arg("EX").arg(600).query_async::<()>(&mut conn).await.unwrap();
    let mut again = b.client().await;
    assert_eq!(again.token_auth(&token).await["type"], "auth_success");
    again.send(json!({"type": "global_chat", "payload": "back"})).await;
    loop {
        let line = again.recv().await;
        if line["payload"]["message"] == "back" {
            assert_eq!(line, chat("global_chat", &jane, &jane, "back"));
            break;
        }
    }
}

/// One account on three nodes sends global chat as fast as its connections may (30 a
/// second each): cluster-wide, about its burst plus its rate gets through, not three
/// times that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_on_three_nodes_chats_at_its_rate_once() {
    let cluster = Cluster::new().await;
    let env = [("CHAT_MESSAGES_PER_SEC", "5"), ("CHAT_BURST", "10"), ("MAX_MESSAGES_PER_SEC", "50")];
    let nodes = [cluster.node_with(&env).await, cluster.node_with(&env).await, cluster.node_with(&env).await];
    let spammer = unique_name("spammer");
    let token = nodes[0].client().await.signed_up(&spammer).await;
    let mut reader = nodes[1].player("reader").await;
    let mut senders = Vec::new();
    for node in &nodes {
        let mut client = node.client().await;
        assert_eq!(client.token_auth(&token).await["type"], "auth_success");
        senders.push(client);
    }

    const PER_CONNECTION: usize = 90;
    let started = Instant::now();
    let floods = senders.into_iter().enumerate().map(|(n, mut client)| {
        tokio::spawn(async move {
            for i in 0..PER_CONNECTION {
                client.send(json!({"type": "global_chat", "payload": format!("{n}:{i}")})).await;
                tokio::time::sleep(Duration::from_millis(33)).await;
            }
            client
        })
    });
    let senders: Vec<Client> = futures_util::future::join_all(floods).await.into_iter().map(Result::unwrap).collect();
    let sending = started.elapsed().as_secs_f64();

    // What reached a player, and what each sender was refused.
    let mut delivered = 0;
    while let Some(line) = reader.next_text(Duration::from_secs(2)).await {
        if line["type"] == "global_chat" && line["payload"]["account"] == spammer.as_str() {
            delivered += 1;
        }
    }
    let mut refused = 0;
    for mut client in senders {
        while let Some(reply) = client.next_text(Duration::from_secs(1)).await {
            if reply == rate_limited() {
                refused += 1;
            }
        }
    }
    let sent = 3 * PER_CONNECTION;
    eprintln!("{sent} sent in {sending:.1} s: {delivered} delivered, {refused} refused");
    // Burst 10 plus 5 a second, with two seconds of margin for a node's lag; three
    // nodes each on their own would let about 3 × (10 + 5 × 3) = 75 through.
    let most = 10.0 + 5.0 * (sending + 2.0);
    assert!((delivered as f64) <= most, "{delivered} delivered in {sending:.1} s; at most {most:.0} allowed");
    assert!(delivered >= 10, "only {delivered} delivered: the burst alone is 10");
    assert_eq!(delivered + refused, sent, "every message was either delivered or refused");
}

/// Redis down: each node holds the account to its rate with its own bucket.
#[tokio::test]
async fn chat_is_still_rate_limited_while_redis_is_down() {
    let mut redis = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis.url()).await;
    let node = cluster.node_with(&[("CHAT_MESSAGES_PER_SEC", "5"), ("CHAT_BURST", "10")]).await;
    let mut player = node.player("chatty").await;
    redis.stop();

    let started = Instant::now();
    for i in 0..30 {
        player.send(json!({"type": "global_chat", "payload": format!("m{i}")})).await;
    }
    let (mut delivered, mut refused) = (0, 0);
    for _ in 0..30 {
        let reply = player.recv().await;
        if reply == rate_limited() {
            refused += 1;
        } else {
            assert_eq!(reply["type"], "global_chat", "{reply}");
            delivered += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("Redis down: {delivered} delivered, {refused} refused in {elapsed:.1} s");
    assert!(delivered >= 10, "the burst of 10 was not delivered locally: {delivered}");
    assert!((delivered as f64) <= 10.0 + 5.0 * (elapsed + 1.0), "{delivered} delivered in {elapsed:.1} s");
}

/// The cluster-wide check costs `global_chat` no round trip: one script call per
/// message, which publishes.
#[tokio::test]
async fn a_global_message_is_one_redis_call_with_its_rate_check() {
    let private = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &private.url()).await;
    let env = [("CHAT_MESSAGES_PER_SEC", "1000"), ("CHAT_BURST", "1000"), ("MAX_MESSAGES_PER_SEC", "0")];
    let node = cluster.node_with(&env).await;
    let mut player = node.player("chatty").await;
    let mut redis = cluster.redis().await;
    // Loads the script, so the count below is of calls alone.
    player.send(json!({"type": "global_chat", "payload": "first"})).await;
    player.recv().await;

    redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(&mut redis).await.unwrap();
    for i in 0..100 {
        player.send(json!({"type": "global_chat", "payload": format!("hello {i}")})).await;
        assert_eq!(player.recv().await["type"], "global_chat");
    }
    let calls = command_calls(&mut redis).await;
    eprintln!("100 global_chat: Redis commands {calls:?}");
    assert_eq!(calls.get("evalsha").copied(), Some(100), "{calls:?}");
    assert_eq!(calls.get("publish").copied(), Some(100), "published from the script: {calls:?}");
}
