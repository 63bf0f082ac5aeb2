//! Every metric the node exports, in one place, named `openchampps_*` in base units.
//! The recorder is installed once per process; `/metrics` on the side port renders it.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets resolving 1 ms … 1 s (and a little past it) for latencies.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5];

/// Installs the process-wide recorder (idempotent) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be set (tests embedding nodes); keep going.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!("openchampps_connections_open", "WebSocket connections open on this node");
    describe_gauge!("openchampps_connections_authenticated", "Authenticated WebSocket connections on this node");
    describe_counter!("openchampps_messages_received_total", "Client messages received, by type");
    describe_counter!("openchampps_auth_attempts_total", "Authentication attempts, by method and result");
    describe_histogram!(
        "openchampps_auth_duration_seconds",
        Unit::Seconds,
        "Time to answer an authentication attempt, by method"
    );
    describe_counter!("openchampps_token_cache_lookups_total", "Token cache lookups in Redis, by outcome");
    describe_gauge!("openchampps_hash_queue_depth", "Password hashes waiting for a hash worker");
    describe_histogram!("openchampps_hash_duration_seconds", Unit::Seconds, "CPU time of one argon2id hash or verify");
    describe_counter!(
        "openchampps_chat_messages_relayed_total",
        "Chat messages delivered to local connections, by kind"
    );
    describe_counter!("openchampps_store_errors_total", "Errors talking to a store, by store");
    describe_gauge!("openchampps_pool_connections", "Store pool connections, by pool and state");
    describe_gauge!(
        "openchampps_presence_heartbeat_age_seconds",
        "Seconds since this node last wrote its presence heartbeat"
    );
    describe_gauge!("openchampps_redis_degraded", "1 while Redis is unreachable and the node works alone");
    describe_counter!("openchampps_connections_closed_total", "Connections closed by the server, by reason");
    describe_gauge!("openchampps_build_info", "Build and node identity");
}

pub fn build_info(node_id: &str) {
    gauge!("openchampps_build_info", "version" => env!("CARGO_PKG_VERSION"), "node_id" => node_id.to_owned()).set(1.0);
}

pub fn connection_opened() {
    gauge!("openchampps_connections_open").increment(1.0);
}

pub fn connection_closed() {
    gauge!("openchampps_connections_open").decrement(1.0);
}

pub fn connection_killed(reason: &'static str) {
    counter!("openchampps_connections_closed_total", "reason" => reason).increment(1);
}

pub fn authenticated_connections(n: usize) {
    gauge!("openchampps_connections_authenticated").set(n as f64);
}

// Handles of the metrics recorded on every message, registered once: looking a
// labelled metric up by name costs an allocation and a hash per call.

const MESSAGE_TYPES: [&str; 10] = [
    "login",
    "token_auth",
    "register",
    "set_username",
    "logout",
    "count",
    "global_chat",
    "private_chat",
    "unknown",
    "invalid",
];
const AUTH_METHODS: [&str; 3] = ["login", "token_auth", "register"];
const AUTH_RESULTS: [&str; 6] =
    ["success", "invalid_format", "invalid_credentials", "rate_limited", "busy", "server_error"];
const CACHE_OUTCOMES: [&str; 3] = ["hit", "miss", "negative_hit"];

static MESSAGES: LazyLock<Vec<Counter>> = LazyLock::new(|| {
    MESSAGE_TYPES.iter().map(|t| counter!("openchampps_messages_received_total", "type" => *t)).collect()
});
static AUTH_ATTEMPTS: LazyLock<Vec<Vec<Counter>>> = LazyLock::new(|| {
    AUTH_METHODS
        .iter()
        .map(|m| {
            AUTH_RESULTS
                .iter()
                .map(|r| counter!("openchampps_auth_attempts_total", "method" => *m, "result" => *r))
                .collect()
        })
        .collect()
});
static AUTH_DURATIONS: LazyLock<Vec<Histogram>> = LazyLock::new(|| {
    AUTH_METHODS.iter().map(|m| histogram!("openchampps_auth_duration_seconds", "method" => *m)).collect()
});
static CACHE_LOOKUPS: LazyLock<Vec<Counter>> = LazyLock::new(|| {
    CACHE_OUTCOMES.iter().map(|o| counter!("openchampps_token_cache_lookups_total", "outcome" => *o)).collect()
});

fn index(labels: &[&str], label: &str) -> usize {
    labels.iter().position(|l| *l == label).unwrap_or_else(|| panic!("unregistered metric label {label}"))
}

pub fn message_received(kind: &'static str) {
    MESSAGES[index(&MESSAGE_TYPES, kind)].increment(1);
}

pub fn auth_attempt(method: &'static str, result: &'static str, elapsed: Duration) {
    let m = index(&AUTH_METHODS, method);
    AUTH_ATTEMPTS[m][index(&AUTH_RESULTS, result)].increment(1);
    AUTH_DURATIONS[m].record(elapsed.as_secs_f64());
}

pub fn token_cache(outcome: &'static str) {
    CACHE_LOOKUPS[index(&CACHE_OUTCOMES, outcome)].increment(1);
}

pub fn hash_queue_depth(delta: f64) {
    gauge!("openchampps_hash_queue_depth").increment(delta);
}

pub fn hash_duration(elapsed: Duration) {
    histogram!("openchampps_hash_duration_seconds").record(elapsed.as_secs_f64());
}

pub fn chat_relayed(kind: &'static str, deliveries: u64) {
    counter!("openchampps_chat_messages_relayed_total", "kind" => kind).increment(deliveries);
}

pub fn store_error(store: &'static str) {
    counter!("openchampps_store_errors_total", "store" => store).increment(1);
}

pub fn pool_connections(pool: &'static str, size: usize, available: usize, waiting: usize) {
    gauge!("openchampps_pool_connections", "pool" => pool, "state" => "size").set(size as f64);
    gauge!("openchampps_pool_connections", "pool" => pool, "state" => "available").set(available as f64);
    gauge!("openchampps_pool_connections", "pool" => pool, "state" => "waiting").set(waiting as f64);
}

pub fn heartbeat_age(age: Duration) {
    gauge!("openchampps_presence_heartbeat_age_seconds").set(age.as_secs_f64());
}

pub fn redis_degraded(down: bool) {
    gauge!("openchampps_redis_degraded").set(if down { 1.0 } else { 0.0 });
}
