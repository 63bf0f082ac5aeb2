//! What a node exports before any traffic, that recording metrics costs no memory
//! when nobody scrapes, and that the queue-wait histogram sees waits under a second.
//! Node processes (metrics are per process), but for the queue wait: an in-process
//! node on a queue of its own.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use openchampps::connection::Close;
use openchampps::handlers::Kind;
use openchampps::store::MatchQueue;
use serde_json::json;

fn has_series(scrape: &str, series: &str) -> bool {
    scrape.lines().any(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
}

/// Dashboards and `rate()`/`increase()` alerts need every labelled series from the
/// first scrape of a fresh node, at 0.
#[tokio::test]
async fn a_fresh_node_exports_every_known_series_at_zero() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let scrape = node.metrics_text().await;
    let mut expected: Vec<String> = Vec::new();
    for close in Close::ALL {
        expected.push(format!(r#"openchampps_connections_closed_total{{reason="{}"}}"#, close.reason()));
    }
    for store in ["postgres", "redis"] {
        expected.push(format!(r#"openchampps_store_errors_total{{store="{store}"}}"#));
    }
    for kind in Kind::ALL.iter().map(|k| k.name()).chain(["unknown", "invalid"]) {
        expected.push(format!(r#"openchampps_messages_received_total{{type="{kind}"}}"#));
    }
    for method in ["login", "token_auth", "register"] {
        for result in ["success", "invalid_format", "invalid_credentials", "rate_limited", "busy", "server_error"] {
            expected.push(format!(r#"openchampps_auth_attempts_total{{method="{method}",result="{result}"}}"#));
        }
        expected.push(format!(r#"openchampps_auth_duration_seconds_count{{method="{method}"}}"#));
    }
    for outcome in ["hit", "miss", "negative_hit"] {
        expected.push(format!(r#"openchampps_token_cache_lookups_total{{outcome="{outcome}"}}"#));
    }
    for kind in ["global", "private"] {
        expected.push(format!(r#"openchampps_chat_messages_relayed_total{{kind="{kind}"}}"#));
    }
    for outcome in ["matched", "left", "disconnected", "node_died"] {
        expected.push(format!(r#"openchampps_queue_tickets_total{{outcome="{outcome}"}}"#));
    }
    for allocator in ["static", "command", "agones"] {
        for result in ["ok", "exhausted", "failed"] {
            expected.push(format!(r#"openchampps_allocations_total{{allocator="{allocator}",result="{result}"}}"#));
        }
        expected.push(format!(r#"openchampps_allocation_duration_seconds_count{{allocator="{allocator}"}}"#));
    }
    let missing: Vec<&String> = expected.iter().filter(|s| !has_series(&scrape, s)).collect();
    assert!(missing.is_empty(), "missing from a fresh node's first scrape: {missing:#?}\n{scrape}");
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A ticket's `joined_ms` is when it was taken, to the millisecond (not whole seconds
/// times 1,000), so the queue-wait histogram sees waits under a second.
#[tokio::test]
async fn queue_waits_are_measured_in_milliseconds() {
    let queue = unique_name("wait");
    let node = inproc_node(&["--match-queues", &format!("{queue}:2")]).await;
    let first_name = unique_name("first");
    let mut first = node.client().await;
    first.signed_up(&first_name).await;
    let mut second = node.player("second").await;
    let join = json!({"type": "join_queue", "payload": {"queue": queue}});

    let before = unix_ms();
    assert_eq!(first.request(join.clone()).await["type"], "queued");
    let after = unix_ms();
    let (ticket, _) = node.shared.position(&first_name).await.unwrap().expect("a ticket");
    assert!((before..=after).contains(&ticket.joined_ms), "{before} <= {} <= {after}", ticket.joined_ms);

    // The first player waits at least this long: a wait of its own, under a second.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(second.request(join).await["type"], "queued");
    let sum = format!(r#"openchampps_queue_wait_seconds_sum{{queue="{queue}"}} "#);
    let count = format!(r#"openchampps_queue_wait_seconds_count{{queue="{queue}"}} 2"#);
    let formed =
        eventually(Duration::from_secs(10), || async { node.metrics_text().await.lines().any(|l| l == count) }).await;
    let scrape = node.metrics_text().await;
    assert!(formed, "no match formed: {scrape}");
    let waited: f64 = scrape.lines().find_map(|l| l.strip_prefix(&sum)).unwrap().parse().unwrap();
    assert!(waited >= 0.05, "the two waits add up to {waited} s");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sustained `token_auth` on a node nobody scrapes: the latency histogram must fold
/// its samples into buckets by itself, so RSS stays flat. (Without that, every
/// sample waits for a scrape: about 17 bytes per operation, measured.)
#[test]
fn memory_stays_flat_under_load_without_scrapes() {
    let _alone = HEAVY.blocking_lock();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(Cluster::new());
    let node = rt.block_on(cluster.node_with(&[("MAX_MESSAGES_PER_SEC", "0")]));
    let round = || -> u64 {
        let out = Command::new(env!("CARGO_BIN_EXE_openchampps"))
            .args(["bench", "--url", &node.ws_url(), "--mode", "token_auth", "-c", "32", "-d", "3s"])
            .args(["--warmup", "0s", "--json"])
            .env_clear()
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the load generator");
        assert!(out.status.success(), "load generator failed: {}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json summary");
        assert_eq!(summary["errors_total"], 0, "{summary}");
        summary["ops_including_warmup"].as_u64().unwrap()
    };
    // The first rounds warm the allocator, the connections and the caches.
    round();
    round();
    // Enough operations for a leak to stand out of the allocator's noise: on a busy
    // machine a round runs fewer of them, so more rounds. A leak grows RSS with every
    // round; the allocator keeps and returns memory in steps of a MiB or two either way
    // at any moment (seen in CI: flat, one step of 2.2 MiB, flat again). So judge the
    // typical round, the median of the rounds' growth per op: a leak moves every round,
    // a step moves one.
    let mut rounds = vec![(0, rss_kib(node.pid()))];
    let mut ops = 0;
    for _ in 0..12 {
        ops += round();
        rounds.push((ops, rss_kib(node.pid())));
        if ops >= 200_000 {
            break;
        }
    }
    let per_op = median_growth(&rounds) * 1024.0;
    let growth = (per_op * ops as f64).max(0.0) as u64;
    eprintln!("token_auth without a scrape, RSS (ops, KiB) per round: {rounds:?}; median {per_op:.2} bytes/op");
    // Half the leak's rate, above a floor for the allocator's own noise (a busy machine
    // runs fewer operations, so noise weighs more per operation).
    let allowed = (8 * ops).max(256 * 1024);
    assert!(growth <= allowed, "RSS grew {growth} bytes over {ops} ops ({per_op:.2} bytes/op)");
}

/// The median over consecutive points of the growth of `y` per unit of `x`.
fn median_growth(points: &[(u64, u64)]) -> f64 {
    let mut rates: Vec<f64> = points
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].1 as f64 - w[0].1 as f64) / (w[1].0 - w[0].0) as f64)
        .collect();
    rates.sort_by(f64::total_cmp);
    match rates.len() {
        0 => 0.0,
        n if n % 2 == 1 => rates[n / 2],
        n => (rates[n / 2 - 1] + rates[n / 2]) / 2.0,
    }
}
