//! Hostile players against password login, round two: each test performs one attack
//! against real nodes, PostgreSQL and Redis, and shows it fails. Players come from
//! the addresses a trusted proxy (loopback) names in `X-Forwarded-For`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use openchampps::handlers::Request;
use openchampps::protocol::Credentials;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const TOO_MANY: &str = "Too many attempts, try again later";
const BAD_CREDENTIALS: &str = "Invalid username or password";
const BEHIND_PROXY: (&str, &str) = ("TRUSTED_PROXIES", "127.0.0.0/8");

async fn from(node: &NodeProc, address: &str) -> Client {
    Client::connect_with_headers(&node.ws_url(), &[("X-Forwarded-For", address)]).await
}

// 1. One address cannot deny password login ------------------------------------------

/// Keeps `connections` sockets from `address` sending a login for a random unknown
/// name every 100 ms (reading whatever comes back), reconnecting when cut, until
/// `stop` is set.
fn flood(url: String, address: String, connections: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..connections)
        .map(|_| {
            let (url, address, stop) = (url.clone(), address.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut request = url.as_str().into_client_request().unwrap();
                    request.headers_mut().insert("x-forwarded-for", HeaderValue::from_str(&address).unwrap());
                    let Ok((ws, _)) = tokio_tungstenite::connect_async(request).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let (mut tx, mut rx) = ws.split();
                    let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                    while !stop.load(Ordering::Relaxed) && !drain.is_finished() {
                        let login = Request::Login(Credentials {
                            username: unique_name("nobody"),
                            password: "wrongPassword".into(),
                            resume: None,
                        });
                        if tx.send(Message::text(login.to_json())).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    drain.abort();
                }
            })
        })
        .collect()
}

/// 30 logins of `name` with the right password from `address`, one after another:
/// how many got in within a second each, and the slowest.
async fn innocent_logins(node: &NodeProc, address: &str, name: &str) -> (usize, Duration) {
    let (mut fast, mut slowest) = (0, Duration::ZERO);
    for _ in 0..30 {
        let mut client = from(node, address).await;
        let started = Instant::now();
        let reply = client.login(name, PASSWORD).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        if reply["type"] == "auth_success" && took < Duration::from_secs(1) {
            fast += 1;
        } else {
            eprintln!("innocent login: {reply} after {took:?}");
        }
    }
    (fast, slowest)
}

/// About 150 connections flooding logins for unknown names — from one address, from
/// ten networks, and from 40 /64s of one IPv6 /48 — keep a single hash worker busy; a
/// player from another network still logs in, each time within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_one_address_ten_networks_or_one_slash_48_does_not_deny_password_login() {
    let _alone = HEAVY.lock().await;
    let cluster = Cluster::new().await;
    let node = cluster
        .node_with(&[
            BEHIND_PROXY,
            ("HASH_WORKERS", "1"),
            ("HASH_QUEUE", "64"),
            ("ARGON2_MEMORY_KIB", "4096"),
            ("ARGON2_ITERATIONS", "1"),
        ])
        .await;
    let jane = unique_name("jane");
    from(&node, "198.51.100.1").await.signed_up(&jane).await;

    let scenarios: [(&str, Vec<String>, usize); 3] = [
        ("one address", vec!["203.0.0.66".into()], 150),
        ("ten networks", (0..10).map(|a| format!("203.0.{a}.66")).collect(), 15),
        ("40 /64s of one /48", (0..40).map(|a| format!("2001:db8:66:{a:x}::1")).collect(), 4),
    ];
    for (attack, addresses, per_address) in scenarios {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for address in addresses {
            tasks.extend(flood(node.ws_url(), address, per_address, stop.clone()));
        }
        // Until the pool is saturated: the flood's hashes keep the worker busy.
        let busy = eventually(Duration::from_secs(20), || async {
            node.metrics_text().await.lines().any(|l| {
                l.strip_prefix("openchampps_hash_queue_depth ").is_some_and(|v| v.parse::<f64>().unwrap() >= 1.0)
            })
        })
        .await;
        assert!(busy, "{attack}: the flood never filled the hash pool");
        let (fast, slowest) = innocent_logins(&node, "198.51.100.1", &jane).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        eprintln!("flood from {attack}: {fast} of 30 logins within 1 s, slowest {slowest:?}");
        assert!(fast >= 29, "flood from {attack}: only {fast} of 30 correct logins got in within 1 s");
    }
}

// 2. Unknown names are throttled like known ones -------------------------------------

/// The replies to wrong passwords are the same sequence for an account and for a
/// name nobody has: they do not tell which names exist.
#[tokio::test]
async fn unknown_names_are_throttled_like_accounts_with_the_same_replies() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("LOGIN_FREE_FAILURES", "5")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    let mut replies = Vec::new();
    for name in [jane.clone(), unique_name("nobody")] {
        let mut client = node.client().await;
        let mut these = Vec::new();
        for _ in 0..7 {
            these.push(client.login(&name, "wrongPassword").await);
        }
        // Typed in other case, it is the same name: an account's, or nobody's.
        these.push(client.login(&name.to_uppercase(), "wrongPassword").await);
        replies.push(these);
    }
    let expected: Vec<_> = [BAD_CREDENTIALS; 5].into_iter().chain([TOO_MANY; 3]).map(auth_error).collect();
    assert_eq!(replies[0], expected, "an account");
    assert_eq!(replies[1], expected, "a name nobody has");
}

// 3. The per-account cap cannot be turned into a lock-out ----------------------------

/// 61 fresh IPv6 /64s of one /48 guess five times each: they share one budget, so
/// the account's cap is nowhere near, and Jane logs in from a fresh address.
#[tokio::test]
async fn fresh_slash_64s_of_one_slash_48_share_one_budget() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[BEHIND_PROXY, ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "300")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    let mut checked = 0;
    for subnet in 0..61 {
        let mut attacker = from(&node, &format!("2001:db8:66:{subnet:x}::1")).await;
        for _ in 0..5 {
            let reply = attacker.login(&jane, "wrongPassword").await;
            if reply == auth_error(BAD_CREDENTIALS) {
                checked += 1;
            } else {
                assert_eq!(reply, auth_error(TOO_MANY));
            }
        }
    }
    eprintln!("305 guesses from 61 /64s of one /48: {checked} checked");
    // Five free, then one per backoff step (1 s, 2 s, 4 s, …) while the test runs.
    assert!(checked <= 12, "{checked} guesses were checked");
    assert_eq!(from(&node, "2001:db8:77::1").await.login(&jane, PASSWORD).await["type"], "auth_success");
    assert_eq!(from(&node, "192.0.2.10").await.login(&jane, PASSWORD).await["type"], "auth_success");
}

/// Attackers on many networks reach the account's cap: a correct password from a
/// stranger's network is refused, but Jane's, from the network she logged in from
/// before, never is.
#[tokio::test]
async fn a_network_that_logged_in_before_is_never_refused_by_the_account_cap() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[BEHIND_PROXY, ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "20")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    assert_eq!(from(&node, "198.51.100.1").await.login(&jane, PASSWORD).await["type"], "auth_success");

    for network in 0..4 {
        let mut attacker = from(&node, &format!("203.0.{network}.9")).await;
        for _ in 0..5 {
            assert_eq!(attacker.login(&jane, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
        }
    }
    // 20 failures: the cap, for anyone new…
    assert_eq!(from(&node, "192.0.2.10").await.login(&jane, PASSWORD).await, auth_error(TOO_MANY));
    // …but not for Jane's own network (another address of the same /24 too).
    assert_eq!(from(&node, "198.51.100.1").await.login(&jane, PASSWORD).await["type"], "auth_success");
    assert_eq!(from(&node, "198.51.100.200").await.login(&jane, PASSWORD).await["type"], "auth_success");
}

/// A neighbour in Jane's /24 keeps guessing her password: the network's pair backs
/// off, but Jane's own address, which logged in before, has a pair of its own.
#[tokio::test]
async fn a_neighbour_in_the_same_network_cannot_hold_back_a_known_address() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[BEHIND_PROXY, ("LOGIN_FREE_FAILURES", "5")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    assert_eq!(from(&node, "203.0.113.8").await.login(&jane, PASSWORD).await["type"], "auth_success");
    let mut neighbour = from(&node, "203.0.113.7").await;
    for _ in 0..5 {
        assert_eq!(neighbour.login(&jane, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
    }
    assert_eq!(neighbour.login(&jane, "wrongPassword").await, auth_error(TOO_MANY));
    // A fresh address of that network waits with the neighbour…
    assert_eq!(from(&node, "203.0.113.9").await.login(&jane, PASSWORD).await, auth_error(TOO_MANY));
    // …Jane's own does not, and her success does not give the neighbour a fresh budget.
    assert_eq!(from(&node, "203.0.113.8").await.login(&jane, PASSWORD).await["type"], "auth_success");
    assert_eq!(neighbour.login(&jane, "wrongPassword").await, auth_error(TOO_MANY));
}

// 11. A player's own concurrent logins ------------------------------------------------

/// A launcher, a game client and a phone behind one home router all log in at once
/// after their node died: twelve concurrent correct logins all get in — from one
/// address with the default places, from one address allowed twelve places (so all
/// twelve are checked at once and the guesses in flight must wait for each other),
/// and from twelve addresses of one /24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_correct_logins_of_one_account_all_succeed() {
    let cluster = Cluster::new().await;
    for places in ["2", "12"] {
        let node =
            cluster.node_with(&[BEHIND_PROXY, ("LOGIN_FREE_FAILURES", "5"), ("HASH_PLACES_PER_ADDRESS", places)]).await;
        for spread in [false, true] {
            let jane = unique_name("jane");
            node.client().await.signed_up(&jane).await;
            let go = Arc::new(tokio::sync::Barrier::new(12));
            let logins: Vec<_> = (0..12)
                .map(|i| {
                    let (url, go, jane) = (node.ws_url(), go.clone(), jane.clone());
                    let address = if spread { format!("198.51.100.{}", i + 1) } else { "198.51.100.1".into() };
                    tokio::spawn(async move {
                        let mut client = Client::connect_with_headers(&url, &[("X-Forwarded-For", &address)]).await;
                        go.wait().await;
                        client.login(&jane, PASSWORD).await
                    })
                })
                .collect();
            for login in logins {
                let reply = login.await.unwrap();
                assert_eq!(reply["type"], "auth_success", "places {places}, spread {spread}: {reply}");
            }
        }
    }
}
