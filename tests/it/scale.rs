//! Constant cost per operation (SCALE.md), measured on a private Redis with
//! `INFO commandstats` and on a private PostgreSQL with `pg_stat_statements`.

use std::time::{Duration, Instant};

use crate::common::stores::{command_calls, PrivatePgBouncer, PrivatePostgres, PrivateRedis};
use crate::common::*;
use serde_json::json;
use sha2::Digest;

async fn reset_stats(redis: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(redis).await.unwrap();
}

/// What a node does by itself every second may run during a measurement: its
/// heartbeat script (counted as its 8 commands), two matchmaking rounds (a script
/// and its range, a queue length: 6) and a cache refresh now and then.
const BACKGROUND_PER_SEC: u64 = 18;

#[tokio::test]
async fn count_asks_redis_nothing_and_an_offline_target_costs_no_publish() {
    let private = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &private.url()).await;
    let unlimited = [("MAX_MESSAGES_PER_SEC", "0"), ("CHAT_MESSAGES_PER_SEC", "0")];
    let node = cluster.node_with(&unlimited).await;
    let mut player = node.player("counter").await;
    let mut redis = cluster.redis().await;

    reset_stats(&mut redis).await;
    let started = Instant::now();
    for _ in 0..1000 {
        assert_eq!(player.request(json!({"type": "count"})).await["type"], "player_count");
    }
    let secs = started.elapsed().as_secs() + 1;
    let calls = command_calls(&mut redis).await;
    let total: u64 =
        calls.iter().filter(|(name, _)| *name != "info" && *name != "config|resetstat").map(|(_, n)| n).sum();
    eprintln!("1000 count in {secs} s: Redis commands {calls:?}");
    assert!(total <= BACKGROUND_PER_SEC * secs, "1000 count requests cost {total} Redis commands");

    reset_stats(&mut redis).await;
    let started = Instant::now();
    for i in 0..1000 {
        player
            .send(json!({"type": "private_chat", "payload": {"target": "nobody-online", "message": format!("{i}")}}))
            .await;
    }
    // No reply comes to a private message: a count behind them says they are done.
    assert_eq!(player.request(json!({"type": "count"})).await["type"], "player_count");
    let secs = started.elapsed().as_secs() + 1;
    let calls = command_calls(&mut redis).await;
    eprintln!("1000 private_chat to an offline name in {secs} s: Redis commands {calls:?}");
    assert_eq!(calls.get("publish").copied().unwrap_or(0), 0, "a private message to nobody was published");
    let total: u64 =
        calls.iter().filter(|(name, _)| *name != "info" && *name != "config|resetstat").map(|(_, n)| n).sum();
    // Per message: the account-route pipeline (GET, SMEMBERS) and the display name's
    // SMEMBERS; once: the name's "not an account" entry.
    assert!(total <= 3 * 1000 + 2 + BACKGROUND_PER_SEC * secs, "{total} Redis commands for 1000 private messages");

    reset_stats(&mut redis).await;
    for i in 0..100 {
        player.send(json!({"type": "global_chat", "payload": format!("hello {i}")})).await;
        player.recv().await;
    }
    let calls = command_calls(&mut redis).await;
    assert_eq!(calls.get("publish").copied(), Some(100), "one publish per global message: {calls:?}");
}

/// A private message reaches only the node that holds its target.
#[tokio::test]
async fn a_private_message_is_published_only_to_the_node_holding_the_target() {
    let private = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &private.url()).await;
    let nodes = [cluster.node().await, cluster.node().await, cluster.node().await];
    let jane = unique_name("jane");
    let mut on_c = nodes[2].client().await;
    on_c.signed_up(&jane).await;
    let mut sender = nodes[0].player("sender").await;
    let mut bystander = nodes[1].player("bystander").await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // every node has seen the others' heartbeat

    let mut redis = cluster.redis().await;
    reset_stats(&mut redis).await;
    for i in 0..10 {
        sender.send(json!({"type": "private_chat", "payload": {"target": jane, "message": format!("psst {i}")}})).await;
        assert_eq!(on_c.recv().await["payload"]["message"], format!("psst {i}"));
    }
    let calls = command_calls(&mut redis).await;
    assert_eq!(calls.get("publish").copied(), Some(10), "{calls:?}");
    bystander.expect_silence(Duration::from_millis(300)).await;
}

/// A node SIGKILLed while holding a player leaves its routes in the directory. Any
/// node, even one started after the death and so never having seen the dead node
/// alive, drops them on its first private message to that player instead of
/// publishing to a node nobody listens for, forever.
#[tokio::test]
async fn the_routes_of_a_killed_node_are_dropped_by_nodes_that_never_saw_it() {
    let private = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &private.url()).await;
    let (mut holder, _judge) = (cluster.node().await, cluster.node().await);
    let jane = unique_name("jane");
    let mut jane_there = holder.client().await;
    jane_there.signed_up(&jane).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the route is announced
    holder.kill();
    drop(jane_there);
    // Stale after PRESENCE_STALE_MS (5 s); the surviving node then judges it dead.
    tokio::time::sleep(Duration::from_secs(7)).await;

    let newcomer = cluster.node().await;
    let mut sender = newcomer.player("sender").await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // its first heartbeats
    let mut redis = cluster.redis().await;
    reset_stats(&mut redis).await;
    for i in 0..10 {
        sender.send(json!({"type": "private_chat", "payload": {"target": jane, "message": format!("psst {i}")}})).await;
    }
    sender.send(json!({"type": "count"})).await;
    sender.next_of("player_count").await; // the private messages before it were handled
    let calls = command_calls(&mut redis).await;
    assert_eq!(calls.get("publish"), None, "published to a dead node: {calls:?}");
    assert_eq!(calls.get("srem").copied(), Some(1), "the dead node's route dropped once: {calls:?}");

    // Jane back on the new node gets her private messages again.
    let mut jane_back = newcomer.client().await;
    jane_back.login(&jane, PASSWORD).await;
    let third = cluster.node().await;
    let mut other = third.player("other").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    other.send(json!({"type": "private_chat", "payload": {"target": jane, "message": "welcome back"}})).await;
    assert_eq!(jane_back.next_of("private_chat").await["payload"]["message"], "welcome back");
}

/// Connects one client per token, spread over `endpoints`, [`IN_FLIGHT`] at a time,
/// each resumed with `token_auth`.
async fn connect_all(tokens: &[String], endpoints: &[&Endpoint]) -> Vec<Client> {
    let mut clients = Vec::with_capacity(tokens.len());
    for (chunk, start) in tokens.chunks(IN_FLIGHT).zip((0..).step_by(IN_FLIGHT)) {
        let batch = chunk.iter().enumerate().map(|(i, token)| {
            let endpoint = endpoints[(start + i) % endpoints.len()];
            async move {
                let mut client = endpoint.client().await;
                let reply = client.token_auth(token).await;
                assert_eq!(reply["type"], "auth_success", "{reply}");
                client
            }
        });
        clients.extend(futures_util::future::join_all(batch).await);
    }
    clients
}

/// Reconnects in flight at once.
const IN_FLIGHT: usize = 200;

/// A node holding 2,000 players dies; they reconnect to the two other nodes with
/// `token_auth` and find their tokens in the cache, kept warm while their sessions
/// lived although the cache's lifetime passed: PostgreSQL is asked about under 1%.
/// The accounts and tokens are written straight into PostgreSQL (2,000 argon2 hashes
/// would take minutes); every session is a real WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_of_a_dead_node_reconnect_without_asking_postgres() {
    let _alone = HEAVY.lock().await;
    const PLAYERS: usize = 2_000;
    let pg = PrivatePostgres::start();
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    // A lifetime longer than the reconnects take (about 2.5 s here), so what is left of
    // it after the node's last refresh covers them.
    // All 2,000 players come from one address here: no per-address cap.
    let warm = [("TOKEN_CACHE_TTL_SECS", "10"), ("SESSION_CHECK_SECS", "1"), ("MAX_CONNECTIONS_PER_ADDRESS", "0")];
    let mut doomed = cluster.node_with(&warm).await;
    let survivors = [cluster.node_with(&warm).await, cluster.node_with(&warm).await];

    let names: Vec<String> = (0..PLAYERS).map(|i| unique_name(&format!("s{i}"))).collect();
    let tokens: Vec<String> = (0..PLAYERS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| sha2::Sha256::digest(t.as_bytes()).to_vec()).collect();
    cluster
        .psql()
        .await
        .execute(
            "WITH u AS (INSERT INTO users (username, password_hash) SELECT n, 'not-a-hash' FROM unnest($1::text[]) n \
             RETURNING id, username) \
             INSERT INTO auth_tokens (user_id, token_hash, expires_at) \
             SELECT u.id, x.h, now() + interval '1 day' FROM unnest($1::text[], $2::bytea[]) AS x(n, h) \
             JOIN u ON u.username = x.n",
            &[&names, &hashes],
        )
        .await
        .unwrap();

    let held = connect_all(&tokens, &[&doomed]).await;
    // Past the cache's lifetime: only the refresh of live sessions keeps them cached.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let (admin, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", &[]).await.unwrap();
    let lookups = || async {
        admin
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid \
                 WHERE d.datname = $1 AND s.query LIKE '%WHERE t.token_hash = $1 AND%'",
                &[&cluster.db_name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = lookups().await;
    doomed.kill();
    drop(held);
    let started = Instant::now();
    let back = connect_all(&tokens, &[&survivors[0], &survivors[1]]).await;
    let took = started.elapsed();
    let queried = lookups().await - before;
    eprintln!("{} players back on two other nodes in {took:?}: {queried} PostgreSQL token lookups", back.len());
    assert!(queried * 100 < PLAYERS as i64, "{queried} of {PLAYERS} reconnects asked PostgreSQL");
}

/// Through PgBouncer in transaction mode (a server connection changes hands after
/// every transaction): no statement may rely on a prepared statement or a session
/// lock outliving its transaction. Migrations go over the direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_works_through_pgbouncer_in_transaction_mode() {
    let bouncer = PrivatePgBouncer::start();
    let cluster = Cluster::new().await;
    let pooled = bouncer.url(&cluster.db_name);
    let through_pooler =
        [("DB_CONN", pooled.as_str()), ("DB_MIGRATION_URL", cluster.db_url.as_str()), ("SESSION_CHECK_SECS", "1")];
    let (a, b) = (cluster.node_with(&through_pooler).await, cluster.node_with(&through_pooler).await);

    let jane = unique_name("jane");
    let mut on_a = a.client().await;
    let token = on_a.signed_up(&jane).await;
    for _ in 0..5 {
        let reply = b.client().await.login(&jane, PASSWORD).await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
    }
    let mut redis = cluster.redis().await;
    let keys = cluster.redis_keys().await;
    for key in keys.iter().filter(|k| k.ends_with(":tok")) {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut redis).await.unwrap();
    }
    // A cache miss: the token is looked up in PostgreSQL, through the pooler.
    assert_eq!(b.client().await.token_auth(&token).await["type"], "auth_success");
    assert_eq!(a.client().await.token_auth(&uuid::Uuid::new_v4().to_string()).await["type"], "auth_error");
    assert_eq!(on_a.request(json!({"type": "set_username", "payload": "Jane"})).await["type"], "display_name_updated");
    // Session checks and write-behind run through it too, for a few rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(on_a.request(json!({"type": "count"})).await["type"], "player_count");
    let db = cluster.psql().await;
    let used: i64 =
        db.query_one("SELECT count(*) FROM auth_tokens WHERE last_used_at IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(used >= 1, "last_used_at was never written through the pooler");
    drop(db);
    drop(redis);
}
