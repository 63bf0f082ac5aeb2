//! The protocol on each Redis topology of SCALE.md, chosen by `REDIS_URL`: one
//! server, Sentinel (a master, a replica, three sentinels) and Redis Cluster (three
//! masters), each started privately. Two nodes serve one cluster of players on
//! each; afterwards no Redis server may have refused a command for spanning two hash
//! slots (CROSSSLOT) or redirected more than a handful (MOVED/ASK). Then a master is
//! killed under Sentinel and under Cluster, and the time until the nodes work again
//! (without a restart) is measured.

use std::time::{Duration, Instant};

use crate::common::stores::{error_stats, redis_cli, PrivateRedis, PrivateRedisCluster, PrivateRedisSentinel, TestPki};
use crate::common::*;
use serde_json::json;

/// The nodes re-check live sessions' tokens every second, and let chat through unthrottled.
const NODE_ENV: [(&str, &str); 4] = [
    ("SESSION_CHECK_SECS", "1"),
    ("MAX_MESSAGES_PER_SEC", "0"),
    ("CHAT_MESSAGES_PER_SEC", "0"),
    ("GAME_SERVERS", "203.0.113.7:7001"),
];

/// Redirections a cluster client may see while it learns the slot map.
const STARTUP_REDIRECTS: u64 = 10;

async fn cache_hits(node: &NodeProc) -> u64 {
    let text = node.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with("openchampps_token_cache_lookups_total") && l.contains("outcome=\"hit\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn count(client: &mut Client) -> u64 {
    client.request(json!({"type": "count"})).await["payload"].as_u64().unwrap()
}

/// Asserts no server refused a cross-slot command and none redirected more than a
/// handful of commands.
fn assert_clean_error_stats(ports: &[u16]) {
    for &port in ports {
        let stats = error_stats(port);
        eprintln!("Redis :{port} errorstats {stats:?}");
        assert_eq!(stats.get("CROSSSLOT"), None, "CROSSSLOT on :{port}: {stats:?}");
        let redirects = stats.get("MOVED").unwrap_or(&0) + stats.get("ASK").unwrap_or(&0);
        assert!(redirects <= STARTUP_REDIRECTS, "{redirects} MOVED/ASK on :{port}: {stats:?}");
    }
}

/// Every part of the protocol that crosses nodes, on two nodes sharing `redis_url`.
async fn two_nodes_are_one_server(redis_url: &str) {
    let cluster = Cluster::with_stores(&pg_admin_url(), redis_url).await;
    let (a, b) = (cluster.node_with(&NODE_ENV).await, cluster.node_with(&NODE_ENV).await);

    // A token made on A works on B, the second time from the cache.
    let jane = unique_name("jane");
    let mut jane_a = a.client().await;
    let token = jane_a.signed_up(&jane).await;
    let hits = cache_hits(&b).await;
    for _ in 0..2 {
        let reply = b.client().await.token_auth(&token).await;
        assert_eq!(reply, json!({"type": "auth_success", "payload": {"username": jane, "token": token}}));
    }
    assert!(cache_hits(&b).await > hits, "no token cache hit on B");

    // A display name set on A comes back after reconnecting on B.
    let reply = jane_a.request(json!({"type": "set_username", "payload": "JaneShown"})).await;
    assert_eq!(reply["type"], "display_name_updated", "{reply}");
    jane_a.close().await;
    let mut jane_b = b.client().await;
    assert_eq!(jane_b.token_auth(&token).await["type"], "auth_success");

    // Global chat crosses nodes, with the restored display name.
    let mut bob_a = a.player("bob").await;
    jane_b.send(json!({"type": "global_chat", "payload": "hello all"})).await;
    let expected = chat("global_chat", "JaneShown", &jane, "hello all");
    assert_eq!(jane_b.recv().await, expected);
    assert_eq!(bob_a.recv().await, expected);

    // A private message to an account on the other node reaches it, and not a
    // session on this node whose display name looks the same.
    let carol = unique_name("carol");
    let mut carol_a = a.client().await;
    carol_a.signed_up(&carol).await;
    let mut lookalike_b = b.player("mallory").await;
    let reply = lookalike_b.request(json!({"type": "set_username", "payload": carol})).await;
    assert_eq!(reply["type"], "display_name_updated", "{reply}");
    jane_b.send(json!({"type": "private_chat", "payload": {"target": carol, "message": "psst"}})).await;
    assert_eq!(carol_a.recv().await, chat("private_chat", "JaneShown", &jane, "psst"));
    lookalike_b.expect_silence(Duration::from_millis(300)).await;
    bob_a.expect_silence(Duration::from_millis(10)).await;

    // `count` agrees across nodes: jane and mallory on B, bob and carol on A.
    let mut agreed = false;
    for _ in 0..50 {
        if count(&mut jane_b).await == 4 && count(&mut bob_a).await == 4 {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agreed, "count never reached 4 on both nodes");

    // The operator revokes carol: her live session on A ends within 5 s (told so
    // with an auth_error, or closed).
    let out = cluster.revoke(&["--user", &carol]).await;
    assert!(out.status.success(), "revoke: {}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    loop {
        match carol_a.next_frame(Duration::from_secs(5).saturating_sub(started.elapsed())).await {
            Frame::Closed(_) => break,
            Frame::Text(v) if v == auth_error("Invalid or expired token") => break,
            Frame::Nothing => panic!("carol's session still open 5 s after revoke"),
            Frame::Text(_) => continue,
        }
    }
    eprintln!("revoked session ended after {:?}", started.elapsed());
    assert_eq!(bob_a.request(json!({"type": "count"})).await["type"], "player_count");

    // Matchmaking: bob on A and jane on B are matched with each other.
    assert_eq!(bob_a.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    assert_eq!(jane_b.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    for client in [&mut bob_a, &mut jane_b] {
        let found = loop {
            match client.next_frame(Duration::from_secs(10)).await {
                Frame::Text(v) if v["type"] == "match_found" => break v,
                Frame::Text(_) => continue,
                other => panic!("no match_found: {other:?}"),
            }
        };
        assert_eq!(found["payload"]["port"], 7001, "{found}");
    }
}

#[tokio::test]
async fn one_redis_server() {
    let redis = PrivateRedis::start();
    two_nodes_are_one_server(&redis.url()).await;
    assert_clean_error_stats(&[redis.port()]);
}

#[tokio::test]
async fn redis_sentinel() {
    let sentinel = PrivateRedisSentinel::start();
    two_nodes_are_one_server(&sentinel.url()).await;
    assert_clean_error_stats(&sentinel.ports());
}

#[tokio::test]
async fn redis_cluster() {
    let redis = PrivateRedisCluster::start(3, 0);
    two_nodes_are_one_server(&redis.url()).await;
    assert_clean_error_stats(&redis.ports());
    // Nothing was published the unsharded way, which Cluster copies to every shard.
    for port in redis.ports() {
        let stats = redis_cli(port, &["INFO", "commandstats"]);
        assert!(!stats.contains("cmdstat_publish:"), "PUBLISH on :{port}");
    }
}

/// Until when nodes `a` and `b` fail to serve after a master died: each round
/// registers a new account on A (a login), authenticates its token on B, logs in
/// with it on B, and sends a global message from A that must reach a player on B.
/// Returns the time from `killed` until the first round that passed, and until
/// `failed_over` first held (polled between rounds).
async fn time_to_recover(
    a: &NodeProc,
    b: &NodeProc,
    killed: Instant,
    limit: Duration,
    mut failed_over: impl FnMut() -> bool,
) -> (Duration, Option<Duration>) {
    let mut listener = b.player("listener").await;
    let mut failover = None;
    let mut round = 0;
    while killed.elapsed() < limit {
        round += 1;
        if failover.is_none() && failed_over() {
            failover = Some(killed.elapsed());
        }
        let name = unique_name("after");
        let mut on_a = a.client().await;
        let reply = on_a.register(&name, PASSWORD).await;
        let token = reply["payload"]["token"].as_str().map(str::to_owned);
        let mut ok = token.is_some();
        if let Some(token) = &token {
            ok &= b.client().await.token_auth(token).await["type"] == "auth_success";
            ok &= b.client().await.login(&name, PASSWORD).await["type"] == "auth_success";
            let text = format!("round {round}");
            on_a.send(json!({"type": "global_chat", "payload": text})).await;
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut heard = false;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match listener.next_text(left).await {
                    Some(v) if v["payload"]["message"] == text => {
                        heard = true;
                        break;
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
            ok &= heard;
        }
        if ok {
            let recovered = killed.elapsed();
            // Served again, perhaps before the failover completed (a shard's replica
            // may carry its sharded pub/sub): still time the failover itself.
            while failover.is_none() && killed.elapsed() < limit {
                if failed_over() {
                    failover = Some(killed.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return (recovered, failover);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nodes did not recover within {limit:?} (failover after {failover:?})");
}

/// Kills the Sentinel set's master under two nodes started with `env` and prints
/// how long until the sentinels named the replica and the nodes served again.
async fn sentinel_failover(sentinel: &mut PrivateRedisSentinel, env: &[(&str, &str)], label: &str) {
    let cluster = Cluster::with_stores(&pg_admin_url(), &sentinel.url()).await;
    let (a, b) = (cluster.node_with(env).await, cluster.node_with(env).await);
    let (old, replica) = (sentinel.master, sentinel.replica);
    // Everything works before.
    let (_, _) = time_to_recover(&a, &b, Instant::now(), Duration::from_secs(5), || true).await;

    sentinel.kill(old);
    let killed = Instant::now();
    let (recovered, failover) =
        time_to_recover(&a, &b, killed, Duration::from_secs(40), || sentinel.current_master() == Some(replica)).await;
    let failover = failover.expect("never failed over");
    eprintln!("{label}: master killed; sentinels named the replica after {failover:?}; nodes served again (login, token_auth, chat) after {recovered:?}");
    assert!(recovered <= failover + Duration::from_secs(10), "recovered {recovered:?} after failover at {failover:?}");
    assert_eq!(sentinel.current_master(), Some(replica));
}

#[tokio::test]
async fn sentinel_failover_without_restarting_nodes() {
    let mut sentinel = PrivateRedisSentinel::start();
    sentinel_failover(&mut sentinel, &NODE_ENV, "SENTINEL FAILOVER").await;
    assert_clean_error_stats(&sentinel.ports());
}

/// The same with sentinels, master and replica all TLS-only (`rediss+sentinel://`):
/// the node asks the sentinels over TLS and reaches each master they name over TLS.
#[tokio::test]
async fn sentinel_failover_over_tls() {
    let pki = TestPki::generate();
    let mut sentinel = PrivateRedisSentinel::start_tls(&pki);
    assert!(sentinel.url().starts_with("rediss+sentinel://"));
    let ca = pki.ca().display().to_string();
    let env: Vec<(&str, &str)> = NODE_ENV.iter().copied().chain([("REDIS_CA_FILE", ca.as_str())]).collect();
    sentinel_failover(&mut sentinel, &env, "SENTINEL TLS FAILOVER").await;
}

/// The port of the master serving `key`'s slot.
fn master_of(redis: &PrivateRedisCluster, key: &str) -> u16 {
    let any = redis.masters()[0];
    let slot: u16 = redis_cli(any, &["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap();
    let nodes = redis_cli(any, &["CLUSTER", "NODES"]);
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        let port: u16 = fields[1].split('@').next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        for range in &fields[8..] {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                if (lo..=hi).contains(&slot) {
                    return port;
                }
            }
        }
    }
    panic!("no master serves slot {slot}");
}

#[tokio::test]
async fn cluster_failover_without_restarting_nodes() {
    let mut redis = PrivateRedisCluster::start(3, 1);
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis.url()).await;
    let (a, b) = (cluster.node_with(&NODE_ENV).await, cluster.node_with(&NODE_ENV).await);
    let (_, _) = time_to_recover(&a, &b, Instant::now(), Duration::from_secs(5), || true).await;

    // The master of the global chat channel's slot: the hardest one to lose.
    let victim = master_of(&redis, &format!("{}chat", cluster.prefix));
    redis.kill(victim);
    let killed = Instant::now();
    let survivors = redis.ports();
    let (recovered, failover) = time_to_recover(&a, &b, killed, Duration::from_secs(40), || {
        survivors.iter().all(|p| redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            && redis.masters().len() == 3
    })
    .await;
    let failover = failover.expect("never failed over");
    eprintln!("CLUSTER FAILOVER: master :{victim} killed; cluster ok again after {failover:?}; nodes served again (login, token_auth, chat) after {recovered:?}");
    assert!(recovered <= failover + Duration::from_secs(10), "recovered {recovered:?} after failover at {failover:?}");
    for port in redis.ports() {
        let stats = error_stats(port);
        assert_eq!(stats.get("CROSSSLOT"), None, "CROSSSLOT on :{port}: {stats:?}");
    }
}
