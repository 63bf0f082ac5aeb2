//! Every metric the node exports, in one place, named `openchampps_*` in base units.
//! The recorder is installed once per process; `/metrics` on the side port renders it.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Allocator;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets resolving 1 ms … 1 s (and a little past it) for latencies.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5];

/// Buckets resolving 0.1 s … 10 min for waits: a queue's, a game server's allocation.
const WAIT_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Installs the process-wide recorder (idempotent) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // A `Full` matcher takes precedence over a `Suffix` one.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("openchampps_queue_wait_seconds".into()), WAIT_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("openchampps_allocation_duration_seconds".into()),
                        WAIT_BUCKETS,
                    )
                })
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be set (tests embedding nodes); keep going.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_fixed_labels();
            handle
        })
        .clone()
}

/// Series whose label sets are known up front exist from the first scrape, so
/// `rate()` and `increase()` work on a fresh node. Message types and close reasons
/// are registered by their owners (the message table, the connection).
fn register_fixed_labels() {
    for store in Store::ALL {
        counter!("openchampps_store_errors_total", "store" => store.label()).increment(0);
    }
    for kind in ChatKind::ALL {
        counter!("openchampps_chat_messages_relayed_total", "kind" => kind.label()).increment(0);
    }
    LazyLock::force(&CACHE_LOOKUPS);
    LazyLock::force(&HOT);
    let _ = histogram!("openchampps_hash_duration_seconds");
    gauge!("openchampps_hash_queue_depth").increment(0.0);
    gauge!("openchampps_connections_open").increment(0.0);
    for why in Refused::ALL {
        counter!("openchampps_connections_refused_total", "reason" => why.label()).increment(0);
    }
    gauge!("openchampps_connections_authenticated").increment(0.0);
    redis_degraded(false);
    for store in Store::ALL {
        pool_connections(*store, 0, 0, 0);
    }
    heartbeat_age(Duration::ZERO);
    for outcome in ResumeOutcome::ALL {
        counter!("openchampps_resumes_total", "outcome" => outcome.label()).increment(0);
    }
    counter!("openchampps_resume_frames_replayed_total").increment(0);
    counter!("openchampps_resume_gap_fills_total").increment(0);
    for outcome in GraceOutcome::ALL {
        counter!("openchampps_queue_grace_tickets_total", "outcome" => outcome.label()).increment(0);
    }
}

/// Histogram samples wait in the recorder until they are folded into their buckets;
/// a scrape does that, and so does this, so memory stays bounded on a node nobody
/// scrapes (or while Prometheus is down).
pub async fn run_upkeep(handle: PrometheusHandle, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
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
    describe_histogram!(
        "openchampps_hash_duration_seconds",
        Unit::Seconds,
        "CPU time of one password hash or verify (argon2id; bcrypt for accounts taken over from the Go server)"
    );
    describe_counter!(
        "openchampps_chat_messages_relayed_total",
        "Chat messages delivered to local connections, by kind"
    );
    describe_counter!("openchampps_store_errors_total", "Errors talking to a store, by store");
    describe_counter!("openchampps_resumes_total", "Streams resumed (RESUME.md), by outcome");
    describe_counter!("openchampps_resume_frames_replayed_total", "Frames replayed to resuming connections");
    describe_counter!("openchampps_resume_gap_fills_total", "Live frames that came after a gap, read from the stream");
    describe_counter!(
        "openchampps_queue_grace_tickets_total",
        "Queue tickets of opted-in players through a disconnect, by outcome"
    );
    describe_gauge!("openchampps_pool_connections", "Store pool connections, by pool and state");
    describe_gauge!(
        "openchampps_presence_heartbeat_age_seconds",
        "Seconds since this node last wrote its presence heartbeat"
    );
    describe_gauge!("openchampps_redis_degraded", "1 while Redis is unreachable and the node works alone");
    describe_counter!("openchampps_connections_closed_total", "Connections closed by the server, by reason");
    describe_counter!("openchampps_connections_refused_total", "WebSocket upgrades refused, by reason");
    describe_gauge!("openchampps_build_info", "Build and node identity");
    describe_gauge!("openchampps_queue_length", "Matchmaking tickets waiting, by queue");
    describe_counter!("openchampps_matches_formed_total", "Matches formed by this node, by queue");
    describe_histogram!("openchampps_queue_wait_seconds", Unit::Seconds, "Time from join_queue to a match, by queue");
    describe_counter!("openchampps_queue_tickets_total", "Matchmaking tickets ended, by outcome");
    describe_counter!(
        "openchampps_queue_put_back_total",
        "Players put back at their places in a queue (no server this try, or their match's node died)"
    );
    describe_counter!(
        "openchampps_moderation_actions_total",
        "Actions on players through the admin API or command line, by action and outcome"
    );
    describe_counter!("openchampps_operator_logins_total", "Operator logins to the admin API, by outcome");
    describe_counter!("openchampps_allocations_total", "Game server allocations, by allocator and result");
    describe_histogram!(
        "openchampps_allocation_duration_seconds",
        Unit::Seconds,
        "Time to get a game server for a match, by allocator"
    );
}

pub fn build_info(node_id: &str) {
    gauge!("openchampps_build_info", "version" => env!("CARGO_PKG_VERSION"), "node_id" => node_id.to_owned()).set(1.0);
}

/// Handles of the series every connection or chat delivery moves, looked up once
/// (a `gauge!` or `counter!` finds its series by name on every call).
struct Hot {
    open: Gauge,
    authenticated: Gauge,
    relayed: Vec<Counter>,
}

static HOT: LazyLock<Hot> = LazyLock::new(|| Hot {
    open: gauge!("openchampps_connections_open"),
    authenticated: gauge!("openchampps_connections_authenticated"),
    relayed: ChatKind::ALL
        .iter()
        .map(|kind| counter!("openchampps_chat_messages_relayed_total", "kind" => kind.label()))
        .collect(),
});

pub fn connection_opened() {
    HOT.open.increment(1.0);
}

pub fn connection_closed() {
    HOT.open.decrement(1.0);
}

/// A connection the server closed, by the reason it sent.
pub fn connection_killed(reason: &'static str) {
    counter!("openchampps_connections_closed_total", "reason" => reason).increment(1);
}

/// Exports the close reasons at 0 before any connection closes.
pub fn register_close_reasons(reasons: impl IntoIterator<Item = &'static str>) {
    for reason in reasons {
        counter!("openchampps_connections_closed_total", "reason" => reason).increment(0);
    }
}

/// A metric label's values: an enum, `ALL` its variants in order (so a variant
/// indexes a list built from `ALL`), and the text each one is exported as.
macro_rules! labels {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant,)*];

            fn label(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }
    };
}

labels! {
    /// Why a WebSocket upgrade was refused (the `reason` label).
    pub enum Refused {
        /// The node holds MAX_CONNECTIONS.
        NodeFull = "node full",
        /// The client's address holds MAX_CONNECTIONS_PER_ADDRESS.
        AddressFull = "too many from one address",
    }
}

pub fn connection_refused(why: Refused) {
    counter!("openchampps_connections_refused_total", "reason" => why.label()).increment(1);
}

pub fn authenticated_connections(n: usize) {
    HOT.authenticated.set(n as f64);
}

labels! {
    /// How an authentication attempt ended (the `result` label).
    pub enum AuthResult {
        Success = "success",
        InvalidFormat = "invalid_format",
        InvalidCredentials = "invalid_credentials",
        RateLimited = "rate_limited",
        Busy = "busy",
        ServerError = "server_error",
        Banned = "banned",
    }
}

/// The metrics of one message type, registered (at 0) once when the message table
/// is built: recording is then an atomic add, never a lookup by name.
pub struct MessageMetrics {
    received: Counter,
    /// For authentication messages: attempts by result, and their latency.
    auth: Option<(Vec<Counter>, Histogram)>,
}

impl MessageMetrics {
    pub fn new(kind: &'static str, auth_attempt: bool) -> MessageMetrics {
        let received = counter!("openchampps_messages_received_total", "type" => kind);
        received.increment(0);
        let auth = auth_attempt.then(|| {
            let results = AuthResult::ALL
                .iter()
                .map(|r| counter!("openchampps_auth_attempts_total", "method" => kind, "result" => r.label()))
                .inspect(|c| c.increment(0))
                .collect();
            (results, histogram!("openchampps_auth_duration_seconds", "method" => kind))
        });
        MessageMetrics { received, auth }
    }

    pub fn received(&self) {
        self.received.increment(1);
    }

    pub fn auth_attempt(&self, result: AuthResult, elapsed: Duration) {
        if let Some((results, duration)) = &self.auth {
            results[result as usize].increment(1);
            duration.record(elapsed.as_secs_f64());
        }
    }
}

labels! {
    /// Token cache lookups, by outcome (the `outcome` label).
    pub enum CacheOutcome {
        Hit = "hit",
        Miss = "miss",
        NegativeHit = "negative_hit",
    }
}

static CACHE_LOOKUPS: LazyLock<Vec<Counter>> = LazyLock::new(|| {
    CacheOutcome::ALL
        .iter()
        .map(|o| counter!("openchampps_token_cache_lookups_total", "outcome" => o.label()))
        .collect()
});

pub fn token_cache(outcome: CacheOutcome) {
    CACHE_LOOKUPS[outcome as usize].increment(1);
}

pub fn hash_queue_depth(delta: f64) {
    gauge!("openchampps_hash_queue_depth").increment(delta);
}

pub fn hash_duration(elapsed: Duration) {
    histogram!("openchampps_hash_duration_seconds").record(elapsed.as_secs_f64());
}

labels! {
    /// A store (the `store` and `pool` labels).
    pub enum Store {
        Postgres = "postgres",
        Redis = "redis",
    }
}

labels! {
    /// Which chat a relayed message is (the `kind` label).
    pub enum ChatKind {
        Global = "global",
        Private = "private",
    }
}

pub fn chat_relayed(kind: ChatKind, deliveries: u64) {
    HOT.relayed[kind as usize].increment(deliveries);
}

pub fn store_error(store: Store) {
    counter!("openchampps_store_errors_total", "store" => store.label()).increment(1);
}

pub fn pool_connections(store: Store, size: usize, available: usize, waiting: usize) {
    let pool = store.label();
    gauge!("openchampps_pool_connections", "pool" => pool, "state" => "size").set(size as f64);
    gauge!("openchampps_pool_connections", "pool" => pool, "state" => "available").set(available as f64);
    gauge!("openchampps_pool_connections", "pool" => pool, "state" => "waiting").set(waiting as f64);
}

pub fn heartbeat_age(age: Duration) {
    gauge!("openchampps_presence_heartbeat_age_seconds").set(age.as_secs_f64());
}

labels! {
    /// How a matchmaking ticket ended (the `outcome` label).
    pub enum TicketOutcome {
        /// Its player was taken into a match (counted once, on the match's first try).
        Matched = "matched",
        /// `leave_queue`.
        Left = "left",
        /// The connection holding it went away.
        Disconnected = "disconnected",
        /// The node forming its match died and the ticket could not go back.
        NodeDied = "node_died",
    }
}

labels! {
    /// How one try at a game server went (the `result` label).
    pub enum AllocationResult {
        Ok = "ok",
        /// Every server is taken.
        Exhausted = "exhausted",
        /// The allocator failed.
        Failed = "failed",
    }
}

/// Exports the matchmaking series of these queues, and of every allocator, at 0.
pub fn register_matchmaking(queues: &[(String, usize)]) {
    for (queue, _) in queues {
        gauge!("openchampps_queue_length", "queue" => queue.clone()).increment(0.0);
        counter!("openchampps_matches_formed_total", "queue" => queue.clone()).increment(0);
        let _ = histogram!("openchampps_queue_wait_seconds", "queue" => queue.clone());
    }
    counter!("openchampps_queue_put_back_total").increment(0);
    for outcome in TicketOutcome::ALL {
        counter!("openchampps_queue_tickets_total", "outcome" => outcome.label()).increment(0);
    }
    for &allocator in Allocator::ALL {
        for result in AllocationResult::ALL {
            counter!("openchampps_allocations_total", "allocator" => allocator.name(), "result" => result.label())
                .increment(0);
        }
        let _ = histogram!("openchampps_allocation_duration_seconds", "allocator" => allocator.name());
    }
}

pub fn queue_length(queue: &str, length: u64) {
    gauge!("openchampps_queue_length", "queue" => queue.to_owned()).set(length as f64);
}

pub fn ticket_ended(outcome: TicketOutcome, n: u64) {
    counter!("openchampps_queue_tickets_total", "outcome" => outcome.label()).increment(n);
}

/// Players put back at their places: their match found no server this time, or the
/// node forming it died.
pub fn put_back(n: u64) {
    counter!("openchampps_queue_put_back_total").increment(n);
}

pub fn match_formed(queue: &str, waits: impl IntoIterator<Item = Duration>) {
    counter!("openchampps_matches_formed_total", "queue" => queue.to_owned()).increment(1);
    let histogram = histogram!("openchampps_queue_wait_seconds", "queue" => queue.to_owned());
    for wait in waits {
        histogram.record(wait.as_secs_f64());
    }
}

pub fn allocation(allocator: Allocator, result: AllocationResult, elapsed: Duration) {
    let allocator = allocator.name();
    counter!("openchampps_allocations_total", "allocator" => allocator, "result" => result.label()).increment(1);
    histogram!("openchampps_allocation_duration_seconds", "allocator" => allocator).record(elapsed.as_secs_f64());
}

pub fn redis_degraded(down: bool) {
    gauge!("openchampps_redis_degraded").set(if down { 1.0 } else { 0.0 });
}

labels! {
    /// How an operator's request ended (the `outcome` label of moderation actions).
    pub enum ActionOutcome {
        Ok = "ok",
        /// Refused for the operator's role.
        Refused = "refused",
        /// Bad input, no such player, nothing to lift, a store down.
        Failed = "failed",
    }
}

labels! {
    /// How a resume went (the `outcome` label), per stream resumed.
    pub enum ResumeOutcome {
        /// Every frame after the position was replayed.
        Complete = "complete",
        /// History no longer reached back to the position.
        Incomplete = "incomplete",
        /// The stream could not be read (Redis down): nothing replayed.
        NoHistory = "no_history",
    }
}

labels! {
    /// How an operator login ended (the `outcome` label).
    pub enum OperatorLogin {
        Ok = "ok",
        Failed = "failed",
        /// Too many attempts from the client's network (429).
        Throttled = "throttled",
    }
}

/// The actions on players the admin API and command line take (the `action` label).
pub const MODERATION_ACTIONS: &[&str] = &["ban", "unban", "mute", "unmute", "kick", "reset-name", "revoke-tokens"];

/// Exports the moderation and operator-login series at 0.
pub fn register_admin() {
    for action in MODERATION_ACTIONS {
        for outcome in ActionOutcome::ALL {
            counter!("openchampps_moderation_actions_total", "action" => *action, "outcome" => outcome.label())
                .increment(0);
        }
    }
    for outcome in OperatorLogin::ALL {
        counter!("openchampps_operator_logins_total", "outcome" => outcome.label()).increment(0);
    }
}

pub fn moderation_action(action: &'static str, outcome: ActionOutcome) {
    counter!("openchampps_moderation_actions_total", "action" => action, "outcome" => outcome.label()).increment(1);
}

pub fn operator_login(outcome: OperatorLogin) {
    counter!("openchampps_operator_logins_total", "outcome" => outcome.label()).increment(1);
}

labels! {
    /// What became of a queue ticket kept through a disconnect (the `outcome` label).
    pub enum GraceOutcome {
        /// Its player left with the ticket in its grace.
        Kept = "kept",
        /// Its player came back and took it again.
        Reclaimed = "reclaimed",
        /// The grace ended first: dropped.
        Dropped = "dropped",
    }
}

pub fn resumed(outcome: ResumeOutcome, replayed: u64) {
    counter!("openchampps_resumes_total", "outcome" => outcome.label()).increment(1);
    counter!("openchampps_resume_frames_replayed_total").increment(replayed);
}

/// A live frame came after a gap (frames from several publishers crossing): the gap
/// was read from the stream.
pub fn resume_gap_fill() {
    counter!("openchampps_resume_gap_fills_total").increment(1);
}

pub fn queue_grace(outcome: GraceOutcome, n: u64) {
    counter!("openchampps_queue_grace_tickets_total", "outcome" => outcome.label()).increment(n);
}
