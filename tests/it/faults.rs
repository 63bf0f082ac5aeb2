//! The node under faults and floods: a store going away and coming back, bogus-token
//! and login floods, clients hiding behind a load balancer, clients that stop reading.
//!
//! Tests that stop a store run their own PostgreSQL / Redis (`crate::common::stores`) on
//! private ports; the machine's shared servers are never touched.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::stores::{PrivatePostgres, PrivateRedis};
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const SERVER_ERROR: &str = "Server error, try again later";
const TOO_MANY: &str = "Too many attempts, try again later";
const INVALID_TOKEN: &str = "Invalid or expired token";
const BAD_CREDENTIALS: &str = "Invalid username or password";
const BUSY: &str = "Server busy, try again later";

/// Samples a process's resident memory in the background; `stop` returns the peak.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn watch(pid: u32) -> RssPeak {
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return };
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssPeak { peak, stop }
    }

    fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of one sample in a Prometheus text exposition (`name{labels}` exactly).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn ready(node: &NodeProc) -> (u16, Value) {
    let (status, body) = http(node.public, "GET", "/ready", None, &[]).await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("/ready body is JSON: {body}")))
}

/// Sends `count` and returns the number, skipping chat that arrives meanwhile.
async fn player_count(client: &mut Client) -> u64 {
    client.send(json!({"type": "count"})).await;
    loop {
        let reply = client.recv().await;
        if reply["type"] != "global_chat" {
            assert_eq!(reply["type"], "player_count", "{reply}");
            return reply["payload"].as_u64().expect("a count");
        }
    }
}

fn global_chat(text: &str) -> Value {
    json!({"type": "global_chat", "payload": text})
}

fn chat_from(username: &str, text: &str) -> Value {
    chat("global_chat", username, username, text)
}

fn auth_success(username: &str, token: &str) -> Value {
    json!({"type": "auth_success", "payload": {"username": username, "token": token}})
}

/// Redis key of a token's cache entry (see the key schema in src/store/redis/mod.rs).
fn token_cache_key(cluster: &Cluster, token: &str) -> String {
    format!("{}{{t:{}}}:tok", cluster.prefix, hex(&Sha256::digest(token.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------
// Redis down
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn redis_outage_leaves_each_node_working_alone_and_the_cluster_heals_without_restarts() {
    let mut redis = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis.url()).await;
    let limits = [("LOGIN_MAX_FAILURES_PER_ACCOUNT", "2")];
    let a = cluster.node_with(&limits).await;
    let b = cluster.node_with(&limits).await;
    let jane = unique_name("jane");
    let token = a.client().await.signed_up(&jane).await;
    let bob = unique_name("bob");
    b.client().await.signed_up(&bob).await;

    redis.stop();

    // token_auth of a valid token: the cache is gone, PostgreSQL answers.
    let mut jane_by_token = a.client().await;
    let started = Instant::now();
    assert_eq!(jane_by_token.token_auth(&token).await, auth_success(&jane, &token));
    assert!(started.elapsed() < Duration::from_secs(3), "token_auth took {:?}", started.elapsed());
    // login and register still work.
    let mut jane_by_login = a.client().await;
    assert_eq!(jane_by_login.login(&jane, PASSWORD).await["type"], "auth_success");
    let mut carol = a.client().await;
    let carol_name = unique_name("carol");
    carol.signed_up(&carol_name).await;

    // Ready (a Redis outage must not pull every node out of the load balancer), and says why.
    assert_eq!(ready(&a).await, (200, json!({"status": "ready", "postgres": "up", "redis": "down"})));

    // Global chat reaches this node's clients, the sender included.
    jane_by_token.send(global_chat("redis is down")).await;
    for client in [&mut jane_by_token, &mut jane_by_login, &mut carol] {
        assert_eq!(client.recv().await, chat_from(&jane, "redis is down"));
    }

    // count answers with this node's own authenticated connections.
    assert_eq!(player_count(&mut carol).await, 3);

    // Failed logins are still limited, by this node's own counters.
    let mut bob_on_a = a.client().await;
    assert_eq!(bob_on_a.login(&bob, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
    assert_eq!(bob_on_a.login(&bob, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
    assert_eq!(bob_on_a.login(&bob, PASSWORD).await, auth_error(TOO_MANY), "limited without checking the password");
    // ... which node B does not share while Redis is down.
    let mut bob_on_b = b.client().await;
    assert_eq!(bob_on_b.login(&bob, PASSWORD).await["type"], "auth_success");

    assert_eq!(metric(&a.metrics_text().await, "openchampps_redis_degraded"), Some(1.0));

    redis.restart();

    // Cross-node chat comes back by itself (the chat bus resubscribes).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut probe = 0;
    let healed = loop {
        probe += 1;
        let text = format!("probe {probe}");
        carol.send(global_chat(&text)).await;
        if let Some(message) = bob_on_b.next_text(Duration::from_millis(500)).await {
            assert_eq!(message["type"], "global_chat", "{message}");
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(healed, "global_chat from node A never reached node B after Redis came back");

    // Presence heals too: count is cluster-wide again (4 on A, bob on B).
    let mut counter = a.client().await;
    counter.token_auth(&token).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (counted, last) = loop {
        let n = player_count(&mut counter).await;
        if n == 5 || Instant::now() > deadline {
            break (n == 5, n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(counted, "count never became cluster-wide again; last count {last}");

    // The directory of who is where heals too: Redis came back empty, and each node,
    // finding itself unknown to it, announces the players it holds again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut probe = 0;
    let healed = loop {
        probe += 1;
        let text = format!("private probe {probe}");
        carol.send(json!({"type": "private_chat", "payload": {"target": bob, "message": text}})).await;
        if let Some(message) = bob_on_b.next_text(Duration::from_millis(500)).await {
            if message["type"] == "private_chat" {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(healed, "private_chat from node A never reached bob on node B after Redis came back");

    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut degraded = metric(&node.metrics_text().await, "openchampps_redis_degraded");
        while degraded != Some(0.0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            degraded = metric(&node.metrics_text().await, "openchampps_redis_degraded");
        }
        assert_eq!(degraded, Some(0.0), "openchampps_redis_degraded on {}", node.node_id);
    }
}

/// A cache read that gets no answer is given up after its timeout (500 ms), and the
/// token is checked in PostgreSQL: a stalled Redis slows `token_auth`, never strands it.
#[tokio::test]
async fn a_redis_that_stops_answering_slows_token_auth_but_never_strands_it() {
    let cluster = Cluster::new().await;
    let jane = unique_name("jane");
    let token = cluster.node().await.client().await.signed_up(&jane).await;
    let silent = format!("redis://127.0.0.1:{}/0", fake_redis(|_| None).await);
    let node = cluster.node_with(&[("REDIS_URL", &silent)]).await;
    for _ in 0..3 {
        let mut client = node.client().await;
        let started = Instant::now();
        assert_eq!(client.token_auth(&token).await, auth_success(&jane, &token));
        assert!(started.elapsed() < Duration::from_secs(10), "token_auth took {:?}", started.elapsed());
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL down
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn postgres_outage_keeps_cached_tokens_working_and_fails_the_rest_fast() {
    let mut pg = PrivatePostgres::start();
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    let node = cluster.node().await;
    let jane = unique_name("jane");
    let cached = node.client().await.signed_up(&jane).await;
    assert_eq!(node.client().await.token_auth(&cached).await, auth_success(&jane, &cached));
    // A valid token the cache does not know (evicted, or cached before a Redis restart).
    let uncached = node.client().await.login(&jane, PASSWORD).await["payload"]["token"].as_str().unwrap().to_owned();
    let mut redis = cluster.redis().await;
    let _: () = redis::cmd("DEL").arg(token_cache_key(&cluster, &uncached)).query_async(&mut redis).await.unwrap();

    pg.stop();

    let mut client = node.client().await;
    assert_eq!(client.token_auth(&cached).await, auth_success(&jane, &cached), "cached token");

    let mut client = node.client().await;
    let timed = |started: Instant| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
    };
    let started = Instant::now();
    assert_eq!(client.login(&jane, PASSWORD).await, auth_error(SERVER_ERROR), "login");
    timed(started);
    let started = Instant::now();
    assert_eq!(client.token_auth(&uncached).await, auth_error(SERVER_ERROR), "token_auth cache miss");
    timed(started);
    let started = Instant::now();
    assert_eq!(
        client.register(&unique_name("newbie"), PASSWORD).await,
        error("Registration failed due to a server error", "REGISTRATION_ERROR")
    );
    timed(started);

    assert_eq!(ready(&node).await, (200, json!({"status": "ready", "postgres": "down", "redis": "up"})));

    pg.restart();

    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        last = node.client().await.login(&jane, PASSWORD).await;
        if last["type"] == "auth_success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last["type"], "auth_success", "login after PostgreSQL came back: {last}");
    // The outage did not poison the uncached token (no negative cache entry).
    assert_eq!(node.client().await.token_auth(&uncached).await, auth_success(&jane, &uncached));
    assert_eq!(ready(&node).await, (200, json!({"status": "ready", "postgres": "up", "redis": "up"})));
}

// ---------------------------------------------------------------------------------
// Token floods
// ---------------------------------------------------------------------------------

/// Statements executed in one database so far, from `pg_stat_statements` (preloaded
/// by the private instance). It counts every statement a node runs, prepared or not,
/// attributed to its database, so our own counting queries (made from the `postgres`
/// database) stay out of the figures. Exact, unlike `xact_commit`/`tup_returned`
/// deltas, and cheaper than parsing a `log_statement=all` log.
async fn statements_run(admin: &tokio_postgres::Client, database: &str) -> i64 {
    admin
        .query_one(
            "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

async fn statement_counter(pg: &PrivatePostgres) -> tokio_postgres::Client {
    let (admin, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", &[]).await.unwrap();
    admin
}

/// Sends every frame on its connection without waiting, then reads every reply:
/// connections in parallel, each pipelined, as a flooding client would.
async fn flood(node: &NodeProc, frames_per_connection: Vec<Vec<Value>>) -> Vec<Value> {
    let mut tasks = Vec::new();
    for frames in frames_per_connection {
        let mut client = node.client().await;
        tasks.push(tokio::spawn(async move {
            for frame in &frames {
                client.send(frame.clone()).await;
            }
            let mut replies = Vec::new();
            for _ in &frames {
                replies.push(client.recv().await);
            }
            replies
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.extend(task.await.unwrap());
    }
    replies
}

fn token_auth_frame(token: &str) -> Value {
    json!({"type": "token_auth", "payload": {"token": token}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bogus_token_500_times_costs_a_handful_of_queries() {
    let pg = PrivatePostgres::start();
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    // No message rate in the way: the negative cache alone must hold the flood back.
    let node = cluster.node_with(&[("MAX_MESSAGES_PER_SEC", "0")]).await;
    let admin = statement_counter(&pg).await;
    let bogus = uuid::Uuid::new_v4().to_string();

    let before = statements_run(&admin, &cluster.db_name).await;
    let frames = vec![vec![token_auth_frame(&bogus); 125]; 4];
    let replies = flood(&node, frames).await;
    let queries = statements_run(&admin, &cluster.db_name).await - before;

    assert_eq!(replies.len(), 500);
    for reply in &replies {
        assert_eq!(reply, &auth_error(INVALID_TOKEN));
    }
    // One lookup per connection at most: the first ones race before the negative entry lands.
    assert!(queries <= 5, "500 lookups of one bogus token cost {queries} PostgreSQL statements");
}

/// Distinct bogus tokens each miss the cache; what bounds their PostgreSQL work is
/// the per-connection message rate: a connection that floods is closed (1008).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_bogus_tokens_is_cut_off_by_the_message_rate() {
    let pg = PrivatePostgres::start();
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    let node = cluster.node_with(&[("MAX_MESSAGES_PER_SEC", "20")]).await;
    let admin = statement_counter(&pg).await;

    let before = statements_run(&admin, &cluster.db_name).await;
    let mut answered = 0;
    for _ in 0..4 {
        let mut client = node.client().await;
        for _ in 0..500 {
            if client
                .send_message(Message::text(token_auth_frame(&uuid::Uuid::new_v4().to_string()).to_string()))
                .await
                .is_err()
            {
                break;
            }
        }
        loop {
            match client.next_frame(REPLY_TIMEOUT).await {
                Frame::Text(reply) => {
                    assert_eq!(reply, auth_error(INVALID_TOKEN));
                    answered += 1;
                }
                Frame::Closed(code) => {
                    // 1008, or a reset when the close met the rest of the flood.
                    assert!(matches!(code, Some(CloseCode::Policy) | None), "closed with {code:?}");
                    break;
                }
                Frame::Nothing => panic!("a flooding connection was neither answered nor closed"),
            }
        }
    }
    let queries = statements_run(&admin, &cluster.db_name).await - before;
    // A burst of 40 per connection passes the rate, plus 20 a second while the node
    // works through it; the rest of the 2,000 never does.
    assert!(answered <= 4 * 60, "{answered} bogus tokens were looked up");
    assert!(queries <= 4 * 60, "2000 bogus tokens cost {queries} PostgreSQL statements");
    // A valid token on a fresh connection is not refused by anything the flood did.
    let name = unique_name("innocent");
    let token = node.client().await.signed_up(&name).await;
    assert_eq!(node.client().await.token_auth(&token).await["type"], "auth_success");
}

// ---------------------------------------------------------------------------------
// Client address behind a load balancer
// ---------------------------------------------------------------------------------

async fn from(node: &NodeProc, forwarded_for: &str) -> Client {
    Client::connect_with_headers(&node.ws_url(), &[("X-Forwarded-For", forwarded_for)]).await
}

/// Guesses at an account count per (account, client address): behind a trusted
/// proxy that is the forwarded address.
#[tokio::test]
async fn behind_a_trusted_proxy_guesses_count_per_forwarded_address() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("TRUSTED_PROXIES", "127.0.0.0/8"), ("LOGIN_FREE_FAILURES", "3")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;

    let mut attacker = from(&node, "203.0.113.7").await;
    for _ in 0..3 {
        assert_eq!(attacker.login(&jane, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
    }
    assert_eq!(attacker.login(&jane, PASSWORD).await, auth_error(TOO_MANY));
    // A new connection from the same forwarded address is still throttled.
    assert_eq!(from(&node, "203.0.113.7").await.login(&jane, PASSWORD).await, auth_error(TOO_MANY));

    // Jane, behind the same load balancer from her own address, is not.
    assert_eq!(from(&node, "198.51.100.9").await.login(&jane, PASSWORD).await["type"], "auth_success");
    // Nor is a client with a chain of proxies whose nearest untrusted hop differs.
    assert_eq!(from(&node, "203.0.113.7, 192.0.2.44").await.login(&jane, PASSWORD).await["type"], "auth_success");
    // Nor the load balancer's own address (no header).
    assert_eq!(node.client().await.login(&jane, PASSWORD).await["type"], "auth_success");
}

#[tokio::test]
async fn without_trusted_proxies_the_forwarded_header_is_ignored() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("LOGIN_FREE_FAILURES", "3")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;

    // A client forging a new address on every guess still counts as its socket address.
    for i in 0..3 {
        let mut forger = from(&node, &format!("203.0.113.{}", 10 + i)).await;
        assert_eq!(forger.login(&jane, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
    }
    assert_eq!(from(&node, "198.51.100.9").await.login(&jane, PASSWORD).await, auth_error(TOO_MANY));
    assert_eq!(node.client().await.login(&jane, PASSWORD).await, auth_error(TOO_MANY));
}

// ---------------------------------------------------------------------------------
// Login flood
// ---------------------------------------------------------------------------------

/// Real argon2id cost (OWASP parameters) and a small queue: two hashes run (2 cores),
/// four wait, everything beyond is refused at once. The flood's players come through
/// a trusted proxy, each from an address of its own, like players behind an ingress.
const REAL_ARGON2: [(&str, &str); 4] = [
    ("ARGON2_MEMORY_KIB", "19456"),
    ("ARGON2_ITERATIONS", "2"),
    ("HASH_QUEUE", "4"),
    ("TRUSTED_PROXIES", "127.0.0.0/8"),
];
const FLOOD: usize = 500;

/// `FLOOD` connected clients, each about to log in as `user` the moment it is released.
struct LoginFlood {
    go: Arc<tokio::sync::Barrier>,
    logins: Vec<tokio::task::JoinHandle<Value>>,
}

impl LoginFlood {
    async fn ready(node: &NodeProc, user: &str) -> LoginFlood {
        let go = Arc::new(tokio::sync::Barrier::new(FLOOD + 1));
        let logins = (0..FLOOD)
            .map(|i| {
                let (url, go, user) = (node.ws_url(), go.clone(), user.to_owned());
                let address = format!("10.9.{}.{}", i / 250, i % 250 + 1);
                tokio::spawn(async move {
                    let mut client = Client::connect_with_headers(&url, &[("X-Forwarded-For", &address)]).await;
                    go.wait().await;
                    client.login(&user, PASSWORD).await
                })
            })
            .collect();
        LoginFlood { go, logins }
    }

    async fn release(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.go.wait()).await.expect("all clients connected");
    }

    /// Every login's answer: (logged in, refused as busy). Panics on any other reply.
    async fn answers(self, user: &str) -> (usize, usize) {
        let (mut ok, mut busy) = (0, 0);
        for login in self.logins {
            let reply = login.await.expect("every login is answered");
            if reply["type"] == "auth_success" {
                assert_eq!(reply["payload"]["username"], user);
                ok += 1;
            } else {
                assert_eq!(reply, auth_error(BUSY));
                busy += 1;
            }
        }
        (ok, busy)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_logins_are_answered_in_bounded_memory_while_token_auth_stays_fast() {
    let _alone = HEAVY.lock().await;
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&REAL_ARGON2).await;
    let jane = unique_name("jane");
    let token = node.client().await.signed_up(&jane).await;
    let mut probe = node.client().await;
    let rss = RssPeak::watch(node.pid());

    let flood = LoginFlood::ready(&node, &jane).await;
    let started = Instant::now();
    flood.release().await;
    // token_auth, on another connection, never waits behind the hashes.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let asked = Instant::now();
        assert_eq!(probe.token_auth(&token).await, auth_success(&jane, &token));
        latencies.push(asked.elapsed());
    }
    let (ok, busy) = flood.answers(&jane).await;
    let (took, peak) = (started.elapsed(), rss.peak_mib());
    eprintln!("login flood: {ok} logged in, {busy} busy in {took:?}, peak RSS {peak:.0} MiB, token_auth {latencies:?}");

    assert!(ok >= 1 && busy >= 1, "{ok} logged in, {busy} busy");
    let slowest = *latencies.iter().max().unwrap();
    assert!(slowest < Duration::from_millis(500), "token_auth during the flood took {latencies:?}");
    // Past the queue the answer is immediate: the flood is over in about the time
    // the admitted hashes take, not 500 of them.
    assert!(took < Duration::from_secs(10), "the flood took {took:?} to answer");
    // 500 hashes at once would need 500 × 19 MiB; the bounded pool keeps it to a few.
    // (The tighter bound is login_floods_one_after_another_keep_memory_bounded.)
    assert!(peak < 512.0, "node peaked at {peak:.0} MiB");
    // And the node is fine afterwards.
    assert_eq!(node.client().await.login(&jane, PASSWORD).await["type"], "auth_success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_floods_one_after_another_keep_memory_bounded() {
    let _alone = HEAVY.lock().await;
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&REAL_ARGON2).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    let rss = RssPeak::watch(node.pid());
    for wave in 1..=4 {
        let flood = LoginFlood::ready(&node, &jane).await;
        flood.release().await;
        let (ok, busy) = flood.answers(&jane).await;
        eprintln!("wave {wave}: {ok} logged in, {busy} busy, peak RSS so far {:.0} MiB", rss.peak_mib());
    }
    // Two hash workers × 19 MiB plus the node itself; 300 MiB leaves plenty of room.
    let peak = rss.peak_mib();
    assert!(peak < 300.0, "node peaked at {peak:.0} MiB over four floods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_refused_as_busy_cost_no_database_queries() {
    let _alone = HEAVY.lock().await;
    let pg = PrivatePostgres::start();
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    let node = cluster.node_with(&REAL_ARGON2).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    let admin = statement_counter(&pg).await;

    let flood = LoginFlood::ready(&node, &jane).await;
    let before = statements_run(&admin, &cluster.db_name).await;
    flood.release().await;
    let (ok, busy) = flood.answers(&jane).await;
    let queries = statements_run(&admin, &cluster.db_name).await - before;
    eprintln!("login flood: {ok} logged in, {busy} busy, {queries} PostgreSQL statements");
    // A login that gets in costs a user lookup, a token insert and the token cap; one refused at the
    // door ("Server busy ... at once") should cost nothing, or a flood of them lands on
    // the database every node shares.
    assert!(queries <= 3 * ok as i64 + 10, "{busy} logins refused as busy, yet {queries} statements for {ok} logins");
}

// ---------------------------------------------------------------------------------
// Slow readers
// ---------------------------------------------------------------------------------

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A registered connection whose incoming side is drained by a task: it counts chat
/// messages carrying `flood_text` and forwards every other frame.
struct Reader {
    flood_seen: Arc<AtomicU64>,
    others: tokio::sync::mpsc::UnboundedReceiver<Value>,
    sink: futures_util::stream::SplitSink<Ws, Message>,
}

impl Reader {
    async fn start(node: &NodeProc, flood_text: Arc<String>) -> Reader {
        let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url()).await.unwrap();
        let register =
            json!({"type": "register", "payload": {"username": unique_name("reader"), "password": PASSWORD}});
        ws.send(Message::text(register.to_string())).await.unwrap();
        let Some(Ok(Message::Text(reply))) = ws.next().await else { panic!("no register reply") };
        assert!(reply.contains("register_success"), "{reply}");
        let (sink, mut stream) = ws.split();
        let flood_seen = Arc::new(AtomicU64::new(0));
        let (tx, others) = tokio::sync::mpsc::unbounded_channel();
        let seen = flood_seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value["payload"]["message"].as_str() == Some(flood_text.as_str()) {
                        seen.fetch_add(1, Ordering::Relaxed);
                    } else if tx.send(value).is_err() {
                        return;
                    }
                }
            }
        });
        Reader { flood_seen, others, sink }
    }

    fn seen(&self) -> u64 {
        self.flood_seen.load(Ordering::Relaxed)
    }

    async fn send(&mut self, value: &Value) {
        self.sink.send(Message::text(value.to_string())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_while_others_keep_chatting() {
    let cluster = Cluster::new().await;
    // Limits off: one sender floods at full speed, the test is about the readers.
    let unlimited = [("MAX_MESSAGES_PER_SEC", "0"), ("CHAT_MESSAGES_PER_SEC", "0"), ("CHAT_MAX_CHARS", "16384")];
    let node = cluster.node_with(&unlimited).await;
    let mut sleeper = node.player("sleeper").await;
    let flood_text = Arc::new("x".repeat(8 * 1024 - 100));
    let mut sender = Reader::start(&node, flood_text.clone()).await;
    let mut bystander = Reader::start(&node, flood_text.clone()).await;
    let rss = RssPeak::watch(node.pid());
    let too_slow = r#"openchampps_connections_closed_total{reason="client too slow"}"#;

    // Paced by the readers that do read, so only the sleeper falls behind.
    let frame = global_chat(&flood_text);
    let (mut sent, batch, max) = (0u64, 32u64, 8000u64);
    let started = Instant::now();
    loop {
        for _ in 0..batch {
            sender.send(&frame).await;
        }
        sent += batch;
        let keeping_up = eventually(Duration::from_secs(10), || {
            let ok = sender.seen() + 2 * batch >= sent && bystander.seen() + 2 * batch >= sent;
            async move { ok }
        })
        .await;
        assert!(
            keeping_up,
            "readers fell behind: sent {sent}, sender saw {}, bystander saw {}",
            sender.seen(),
            bystander.seen()
        );
        if sent % (4 * batch) == 0 && metric(&node.metrics_text().await, too_slow).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(sent < max, "the sleeper was never cut off after {sent} messages of 8 KiB");
    }
    eprintln!("sleeper cut off after {sent} messages in {:?}", started.elapsed());

    // The bystander got everything and can still talk.
    let everything = eventually(Duration::from_secs(10), || {
        let ok = bystander.seen() == sent && sender.seen() == sent;
        async move { ok }
    })
    .await;
    assert!(everything, "sent {sent}, sender saw {}, bystander saw {}", sender.seen(), bystander.seen());
    bystander.send(&global_chat("still here")).await;
    for reader in [&mut bystander, &mut sender] {
        let got = tokio::time::timeout(REPLY_TIMEOUT, reader.others.recv()).await.expect("chat after the flood");
        assert_eq!(got.unwrap()["payload"]["message"], "still here");
    }

    // The sleeper, reading at last, finds its connection closed: 1008, or just gone.
    match sleeper.expect_close().await {
        Some(CloseCode::Policy) | None => {}
        other => panic!("sleeper closed with {other:?}"),
    }
    let peak = rss.peak_mib();
    eprintln!("slow reader: peak RSS {peak:.0} MiB");
    assert!(peak < 200.0, "node peaked at {peak:.0} MiB");
}

// ---------------------------------------------------------------------------------
// A Redis too old
// ---------------------------------------------------------------------------------

/// A stand-in Redis that says it is 6.2.14: it answers `INFO` with that version and
/// every other command with `+OK`. Runs until the test ends.
async fn old_redis() -> u16 {
    fake_redis(|command| {
        Some(if command.to_ascii_uppercase().contains("\r\nINFO\r\n") {
            let info = "# Server\r\nredis_version:6.2.14\r\n";
            format!("${}\r\n{info}\r\n", info.len())
        } else {
            "+OK\r\n".to_owned()
        })
    })
    .await
}

/// A fake Redis on a free port: `reply` answers each command it is sent (as RESP
/// text), or never (`None`: a stalled server, a half-open connection).
async fn fake_redis(reply: fn(&str) -> Option<String>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    // Pipelined commands: one answer per `*` array header.
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    for command in text.split('*').filter(|c| !c.is_empty()) {
                        let Some(reply) = reply(command) else { continue };
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// `EXPIRE … NX` and the scripts need Redis 7: a node on an older Redis stops with
/// one line as soon as it reaches it, rather than failing later, call by call.
#[tokio::test]
async fn a_node_on_a_redis_older_than_7_stops_with_one_line() {
    let cluster = Cluster::with_stores(&pg_admin_url(), &format!("redis://127.0.0.1:{}/0", old_redis().await)).await;
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_openchampps"))
        .env_clear()
        .envs(cluster.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = eventually(Duration::from_secs(30), || {
        let exited = node.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    if !exited {
        let _ = node.kill();
    }
    let out = node.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim(), "openchampps: Redis 6.2.14 is too old: 7.0 or newer is needed");
}
