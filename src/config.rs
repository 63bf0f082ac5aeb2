//! Node configuration: every setting is an environment variable with a matching flag.
//! Defaults are documented next to each field and mirrored in the README table.
//!
//! [`Config`] is the settings as given (clap parses each field, a choice into its
//! enum); [`Config::validate`] checks what clap cannot and derives, once, what the
//! node runs with ([`Settings`]: the argon2 parameters, the allocator's settings), so
//! nothing after start-up parses a setting again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// A setting with a fixed set of values: an enum whose values' names are written
/// once, here, and which clap parses, lists in `--help` and refuses by
/// (`[possible values: …]`). `name()` is the value as written (and a metric label).
macro_rules! choice {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.name()))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use choice;

choice! {
    /// Where game servers come from (`ALLOCATOR`); also the `allocator` metric label.
    pub enum Allocator {
        /// The `GAME_SERVERS` pool.
        Static = "static",
        /// `ALLOCATOR_COMMAND`, run once per match.
        Command = "command",
        /// Agones, as `AGONES_VIA` says.
        Agones = "agones",
    }
}

choice! {
    /// How `ALLOCATOR=agones` allocates (`AGONES_VIA`).
    pub enum AgonesVia {
        /// `POST /gameserverallocation` to the allocator service (AGONES_ALLOCATOR_URL).
        AllocatorService = "allocator-service",
        /// A GameServerAllocation created through the Kubernetes API.
        Kubernetes = "kubernetes",
    }
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL URL. Takes precedence over the DB_* parts.
    #[arg(long, env = "DB_CONN", global = true, hide_env_values = true)]
    pub db_conn: Option<String>,
    /// PostgreSQL URL for migrations, a direct connection when the nodes go through a
    /// pooler in transaction mode (default: the main URL).
    #[arg(long, env = "DB_MIGRATION_URL", global = true, hide_env_values = true)]
    pub db_migration_url: Option<String>,
    /// Alternative name for DB_CONN.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    #[arg(long, env = "DB_HOST", default_value = "127.0.0.1", global = true)]
    pub db_host: String,
    #[arg(long, env = "DB_PORT", default_value_t = 5432, global = true)]
    pub db_port: u16,
    #[arg(long, env = "DB_USER", default_value = "postgres", global = true)]
    pub db_user: String,
    #[arg(long, env = "DB_PASSWORD", default_value = "", global = true, hide_env_values = true)]
    pub db_password: String,
    #[arg(long, env = "DB_NAME", default_value = "openchampps", global = true)]
    pub db_name: String,
    /// Maximum PostgreSQL connections per node.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, global = true)]
    pub db_pool_size: usize,

    /// Redis: `redis://host:port/db` (one server),
    /// `redis+sentinel://h1:26379,h2:26379/<master-name>[/db]` (Sentinel) or
    /// `redis+cluster://h1:7000,h2:7001` (Redis Cluster); see docs/SCALING.md. TLS:
    /// `rediss://`, `rediss+sentinel://`, `rediss+cluster://`.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0", global = true, hide_env_values = true)]
    pub redis_url: String,
    /// PEM file of the CA(s) that sign the Redis servers' certificates, for TLS
    /// REDIS_URLs; default: the system's trusted roots.
    #[arg(long, env = "REDIS_CA_FILE", global = true)]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "ocps:", global = true)]
    pub redis_key_prefix: String,
    /// Redis connections in the pool (one server only: Sentinel and Cluster use one
    /// shared connection).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 32, global = true)]
    pub redis_pool_size: usize,

    /// Public address: WebSocket at /ws plus /health, /ready, /register.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080", global = true)]
    pub listen_addr: SocketAddr,
    /// Side address for Prometheus /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9091", global = true)]
    pub metrics_addr: SocketAddr,
    /// Separate address for the admin API and console (`/admin/`); default: served on
    /// METRICS_ADDR. Never served on LISTEN_ADDR.
    #[arg(long, env = "ADMIN_ADDR", global = true)]
    pub admin_addr: Option<SocketAddr>,
    /// An operator session ends after this many seconds without a request.
    #[arg(long, env = "ADMIN_SESSION_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub admin_session_secs: u64,
    /// Name of the first admin, created at node start when no operator exists (with
    /// ADMIN_BOOTSTRAP_PASSWORD_FILE).
    #[arg(long, env = "ADMIN_BOOTSTRAP_NAME", global = true)]
    pub admin_bootstrap_name: Option<String>,
    /// File holding the first admin's password (e.g. a mounted Secret).
    #[arg(long, env = "ADMIN_BOOTSTRAP_PASSWORD_FILE", global = true)]
    pub admin_bootstrap_password_file: Option<std::path::PathBuf>,
    /// Name of this node in logs, presence and metrics; default: the host name. A random
    /// suffix is added at every start.
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,

    /// Lifetime of a token issued at login, in seconds.
    #[arg(long, env = "TOKEN_TTL_SECS", default_value_t = 604_800, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub token_ttl_secs: u64,
    /// Longest a positive token-cache entry lives in Redis: bounds how long a deleted
    /// user's token keeps working on a cache hit.
    #[arg(long, env = "TOKEN_CACHE_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub token_cache_ttl_secs: u64,
    /// Lifetime of a negative cache entry for an unknown token.
    #[arg(long, env = "TOKEN_NEGATIVE_TTL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub token_negative_ttl_secs: u64,
    /// Check for an already registered email at registration ("Email already registered").
    #[arg(long, env = "OC_EMAIL_VALIDATION", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub email_validation: bool,

    /// Largest accepted WebSocket frame/message in bytes; larger closes with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(64..=16 * 1024 * 1024), global = true)]
    pub max_frame_bytes: u64,
    /// Seconds between server pings on an idle connection.
    #[arg(long, env = "PING_INTERVAL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub ping_interval_secs: u64,
    /// Seconds of silence after which a connection is closed.
    #[arg(long, env = "PING_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub ping_timeout_secs: u64,
    /// Seconds a new connection has to authenticate before it is closed.
    #[arg(long, env = "AUTH_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub auth_timeout_secs: u64,
    /// Maximum simultaneous WebSocket connections on this node; beyond it upgrades get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_connections: u64,
    /// Simultaneous WebSocket connections one client address (IPv6: its /64) may hold
    /// on this node; beyond it upgrades get 429. Players behind one NAT share it. 0: no limit.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256, global = true)]
    pub max_connections_per_address: u64,
    /// Outgoing messages queued per connection before a slow reader is disconnected (1008).
    #[arg(long, env = "OUTGOING_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub outgoing_queue: u64,

    /// Failed logins per (typed name, client network) before each further guess from
    /// that network waits: 1 s after the first of them, doubling up to
    /// LOGIN_BACKOFF_MAX_SECS. A network is an IPv4 /24 or an IPv6 /48; whether the
    /// name is an account's or not makes no difference.
    #[arg(long, env = "LOGIN_FREE_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=30), global = true)]
    pub login_free_failures: u32,
    /// Longest wait between guesses at one name from one network.
    #[arg(long, env = "LOGIN_BACKOFF_MAX_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub login_backoff_max_secs: u64,
    /// Failed logins per account from all addresses together, cluster-wide, inside the
    /// window before `Too many attempts` (set well above what the per-address backoff
    /// lets ten addresses guess, so one player from a fresh address still gets in).
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ACCOUNT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub login_max_failures_per_account: u64,
    /// The window of the per-account cap, and how long a quiet (name, network) pair
    /// is remembered after its last failure.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub login_failure_window_secs: u64,
    /// How long a network an account logged in from is remembered (days): a correct
    /// password from it is never refused by the per-account cap.
    #[arg(long, env = "LOGIN_KNOWN_NETWORK_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub login_known_network_days: u64,

    /// Registrations per client address inside REGISTRATION_WINDOW_SECS; past it the
    /// address gets `Too many registrations, try again later`. 0 turns the limit off.
    #[arg(long, env = "REGISTRATIONS_PER_ADDRESS", default_value_t = 10, global = true)]
    pub registrations_per_address: u64,
    #[arg(long, env = "REGISTRATION_WINDOW_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub registration_window_secs: u64,

    /// Messages per second one connection may send (a burst of twice as many is
    /// allowed); past it the connection is closed with 1008. 0 turns the limit off.
    #[arg(long, env = "MAX_MESSAGES_PER_SEC", default_value_t = 20, global = true)]
    pub max_messages_per_sec: u32,
    /// Chat messages (global and private) per second one account may send on a node;
    /// past it `Too many messages, slow down`. 0 turns the limit off.
    #[arg(long, env = "CHAT_MESSAGES_PER_SEC", default_value_t = 5, global = true)]
    pub chat_messages_per_sec: u32,
    /// Chat messages an account may send at once before the rate applies.
    #[arg(long, env = "CHAT_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub chat_burst: u32,
    /// Longest chat message, in characters; longer ones get BAD_MESSAGE.
    #[arg(long, env = "CHAT_MAX_CHARS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub chat_max_chars: u64,
    /// Seconds of history a resuming connection can catch up on (RESUME.md).
    #[arg(long, env = "RESUME_WINDOW_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub resume_window_secs: u64,
    /// Most frames the global resume stream keeps.
    #[arg(long, env = "RESUME_GLOBAL_HISTORY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub resume_global_history: u64,
    /// Most frames each account's personal resume stream keeps.
    #[arg(long, env = "RESUME_PERSONAL_HISTORY", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub resume_personal_history: u64,
    /// Seconds an opted-in player's queue ticket outlives its connection.
    #[arg(long, env = "QUEUE_GRACE_SECS", default_value_t = 30, global = true)]
    pub queue_grace_secs: u64,

    /// Seconds an HTTP request body (POST /register) may take to arrive.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub http_body_timeout_secs: u64,
    /// Seconds between checks that every live session's token is still valid
    /// (revoked, expired or deleted tokens end their sessions on every node).
    #[arg(long, env = "SESSION_CHECK_SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub session_check_secs: u64,
    /// Live tokens one account may hold; a login beyond it revokes the oldest.
    #[arg(long, env = "MAX_TOKENS_PER_ACCOUNT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_tokens_per_account: u32,

    /// Matchmaking queues, comma-separated `name:players per match`.
    #[arg(long, env = "MATCH_QUEUES", default_value = "default:2", global = true)]
    pub match_queues: MatchQueues,
    /// Where game servers come from: `static` (the GAME_SERVERS pool), `command`
    /// (ALLOCATOR_COMMAND) or `agones` (Agones, AGONES_*: its allocator service or a
    /// GameServerAllocation through the Kubernetes API, as AGONES_VIA says).
    #[arg(long, env = "ALLOCATOR", default_value = "static", global = true)]
    pub allocator: Allocator,
    /// For `ALLOCATOR=command`: a program run (through `sh -c`) once per match, with
    /// the match as JSON on stdin, printing `{"server_id","host","port"}` on stdout.
    #[arg(long, env = "ALLOCATOR_COMMAND", default_value = "", global = true)]
    pub allocator_command: String,
    /// For `ALLOCATOR=agones`, how to allocate: `allocator-service` (a `POST
    /// /gameserverallocation` to AGONES_ALLOCATOR_URL) or `kubernetes` (a
    /// GameServerAllocation created through AGONES_KUBERNETES_API with the service
    /// account token of AGONES_KUBERNETES_TOKEN_FILE).
    #[arg(long, env = "AGONES_VIA", default_value = "allocator-service", global = true)]
    pub agones_via: AgonesVia,
    /// For `AGONES_VIA=kubernetes`: the Kubernetes API server (`http://` only for
    /// tests and local proxies).
    #[arg(long, env = "AGONES_KUBERNETES_API", default_value = "https://kubernetes.default.svc", global = true)]
    pub agones_kubernetes_api: String,
    /// For `AGONES_VIA=kubernetes`: the bearer token file, re-read on each
    /// allocation (projected tokens rotate).
    #[arg(long, env = "AGONES_KUBERNETES_TOKEN_FILE", default_value = SA_TOKEN, global = true)]
    pub agones_kubernetes_token_file: String,
    /// For `AGONES_VIA=allocator-service`: the Agones allocator service, e.g.
    /// `https://agones-allocator.agones-system:443` (mTLS: AGONES_CLIENT_CERT,
    /// AGONES_CLIENT_KEY, AGONES_CA_FILE) or `http://` (a local proxy or sidecar).
    #[arg(long, env = "AGONES_ALLOCATOR_URL", default_value = "", global = true)]
    pub agones_allocator_url: String,
    /// The Kubernetes namespace of the game servers Agones allocates.
    #[arg(long, env = "AGONES_NAMESPACE", default_value = "default", global = true)]
    pub agones_namespace: String,
    /// The Fleet to allocate from (the selector label `agones.dev/fleet`); empty:
    /// any GameServer of the namespace that AGONES_SELECTOR_LABELS matches.
    #[arg(long, env = "AGONES_FLEET", default_value = "", global = true)]
    pub agones_fleet: String,
    /// More labels the allocated GameServer must have, comma-separated `key=value`.
    #[arg(long, env = "AGONES_SELECTOR_LABELS", default_value = "", global = true)]
    pub agones_selector_labels: Labels,
    /// PEM client certificate (chain) this node shows the allocator service.
    #[arg(long, env = "AGONES_CLIENT_CERT", default_value = "", global = true)]
    pub agones_client_cert: String,
    /// PEM private key of AGONES_CLIENT_CERT.
    #[arg(long, env = "AGONES_CLIENT_KEY", default_value = "", global = true)]
    pub agones_client_key: String,
    /// PEM CA certificate(s) the allocator service's certificate must chain to; with
    /// `AGONES_VIA=kubernetes`, the API server's (default: the service account's
    /// ca.crt).
    #[arg(long, env = "AGONES_CA_FILE", default_value = "", global = true)]
    pub agones_ca_file: String,
    /// The GameServer port players connect to, by name; when the allocated server
    /// has no port of that name, its first port.
    #[arg(long, env = "AGONES_PORT_NAME", default_value = "default", global = true)]
    pub agones_port_name: String,
    /// Seconds one allocation request may take before it counts as a failed try.
    #[arg(long, env = "AGONES_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub agones_timeout_secs: u64,
    /// The static pool: comma-separated `host:port` game servers, each leased to one
    /// match at a time.
    #[arg(long, env = "GAME_SERVERS", default_value = "", global = true)]
    pub game_servers: GameServers,
    /// Tries to get a game server for a match before `match_error`.
    #[arg(long, env = "ALLOCATION_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub allocation_attempts: u32,
    /// Longest a game server stays leased to one match its game server confirmed
    /// (unconfirmed: MATCH_TICKET_TTL_SECS).
    #[arg(long, env = "GAME_SERVER_LEASE_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub game_server_lease_secs: u64,
    /// Join-ticket signing keys, comma-separated `kid:secret`; the first signs. Empty:
    /// a random key per node (game servers cannot verify such tickets).
    #[arg(long, env = "MATCH_TICKET_KEYS", default_value = "", global = true, hide_env_values = true)]
    pub match_ticket_keys: TicketKeys,
    /// The key of game servers' credentials (never given to a game server): each match
    /// gets its own, `base64url(HMAC-SHA256(key, "match:<id>"))`, handed to its game
    /// server with the allocation, for `POST /matches/<id>/confirm` (keeps a static
    /// server leased for GAME_SERVER_LEASE_SECS) and `/end`; a static server asks
    /// `GET /servers/<host:port>/match` with its own (`"server:<host:port>"`). Empty:
    /// those endpoints are off and a static lease ends with the joinable window. At
    /// least 16 characters.
    #[arg(long, env = "GAME_SERVER_TOKEN", default_value = "", global = true, hide_env_values = true)]
    pub game_server_token: String,
    /// How long a join ticket (and the match it names) stays valid.
    #[arg(long, env = "MATCH_TICKET_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub match_ticket_ttl_secs: u64,
    /// Unconfirmed matches one account may start per hour (from its first): a match
    /// its game server confirms is given back. `join_queue` past it is refused with
    /// RATE_LIMITED. 0: no cap.
    #[arg(long, env = "MAX_MATCHES_PER_HOUR", default_value_t = 10, global = true)]
    pub max_matches_per_hour: u64,

    /// Argon2id memory cost in KiB (the default is OWASP's recommendation).
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19_456, global = true)]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2, global = true)]
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, env = "ARGON2_PARALLELISM", default_value_t = 1, global = true)]
    pub argon2_parallelism: u32,
    /// Hashes running at once; 0 means one per core.
    #[arg(long, env = "HASH_WORKERS", default_value_t = 0, global = true)]
    pub hash_workers: usize,
    /// The hash threads' nice value (Linux): 0 runs them at the node's own priority,
    /// 19 lowest.
    #[arg(long, env = "HASH_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19), global = true)]
    pub hash_nice: i32,
    /// Logins allowed to wait for a hash worker before `Server busy`.
    #[arg(long, env = "HASH_QUEUE", default_value_t = 64, global = true)]
    pub hash_queue: usize,
    /// Logins and registrations one client address (IPv6: its /64) has in progress
    /// at once on this node; its further ones wait their turn.
    #[arg(long, env = "HASH_PLACES_PER_ADDRESS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024), global = true)]
    pub hash_places_per_address: u64,
    /// The same for one client network (IPv4 /24, IPv6 /48): many addresses of one
    /// network hold no more; waiting hashes are served network by network.
    #[arg(long, env = "HASH_PLACES_PER_NETWORK", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096), global = true)]
    pub hash_places_per_network: u64,

    /// Networks (CIDRs, comma-separated) of load balancers whose CLIENT_IP_HEADER
    /// names the real client address; default none: the socket address counts.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", global = true)]
    pub trusted_proxies: TrustedProxies,
    /// The one header the trusted proxies set: `x-forwarded-for` (appended hops) or
    /// `x-real-ip` (one address, overwritten). The other is ignored.
    #[arg(long, env = "CLIENT_IP_HEADER", default_value = "x-forwarded-for", global = true)]
    pub client_ip_header: ClientIpHeader,

    /// Seconds after SIGTERM before remaining connections are closed with 1001.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECS", default_value_t = 10, global = true)]
    pub shutdown_drain_secs: u64,
}

impl Config {
    /// The configuration the environment and these flags give, as the node reads it
    /// (for embedding a node: tests, benches).
    pub fn from_flags(flags: &[&str]) -> Result<Config, String> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            config: Config,
        }
        use clap::{CommandFactory, FromArgMatches};
        // A flag given twice takes its last value, so callers can override defaults.
        let args = std::iter::once("openchampps").chain(flags.iter().copied());
        let matches =
            Flags::command().args_override_self(true).try_get_matches_from(args).map_err(|e| e.to_string())?;
        Flags::from_arg_matches(&matches).map(|f| f.config).map_err(|e| e.to_string())
    }

    /// The PostgreSQL URL, from DB_CONN / DATABASE_URL or built from the DB_* parts.
    pub fn database_url(&self) -> String {
        if let Some(url) = self.db_conn.as_ref().or(self.database_url.as_ref()) {
            return url.clone();
        }
        let mut url = String::from("postgres://");
        url.push_str(&self.db_user);
        if !self.db_password.is_empty() {
            url.push(':');
            url.push_str(&percent_encode(&self.db_password));
        }
        url.push_str(&format!("@{}:{}/{}", self.db_host, self.db_port, self.db_name));
        url
    }

    /// This process's id in presence, the directory and queue tickets: `NODE_ID` (or
    /// the host name) and a random suffix, so a node restarted under the same name (a
    /// container restarted in its pod) is a new node, and what the previous process
    /// left behind (tickets, routes) is cleaned up as a dead node's.
    pub fn node_id(&self) -> String {
        let name = self.node_id.clone().unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        format!("{name}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    }

    /// Checks what clap's per-field parsers cannot (relations between fields, values
    /// only a store client can judge) and derives, once, what the node runs with.
    /// Returns a one-line error.
    pub fn validate(self) -> Result<Settings, String> {
        // With its TLS settings: a missing or unreadable sslrootcert stops the node here.
        crate::tls::pg_target(&self.database_url())
            .map_err(|e| format!("invalid PostgreSQL URL (DB_CONN/DATABASE_URL): {e}"))?;
        // The metrics port is often reachable from the whole cluster network: a short
        // token would be guessed.
        if !self.game_server_token.is_empty() && self.game_server_token.chars().count() < 16 {
            return Err("GAME_SERVER_TOKEN must be at least 16 characters (or empty: ending matches off)".into());
        }
        let allocator = self.allocator_settings()?;
        if let Some(url) = &self.db_migration_url {
            crate::tls::pg_target(url).map_err(|e| format!("invalid DB_MIGRATION_URL: {e}"))?;
        }
        let redis = RedisTarget::parse(&self.redis_url).map_err(|e| format!("invalid REDIS_URL: {e}"))?;
        if let Some(path) = &self.redis_ca_file {
            crate::tls::read_ca_file(path, "REDIS_CA_FILE")?;
            if !redis.tls() {
                return Err("REDIS_CA_FILE is set but REDIS_URL does not use TLS (rediss://, rediss+sentinel://, \
                     rediss+cluster://)"
                    .into());
            }
        }
        if self.ping_timeout_secs <= self.ping_interval_secs {
            return Err("PING_TIMEOUT_SECS must be greater than PING_INTERVAL_SECS".into());
        }
        if self.admin_bootstrap_name.is_some() != self.admin_bootstrap_password_file.is_some() {
            return Err("ADMIN_BOOTSTRAP_NAME and ADMIN_BOOTSTRAP_PASSWORD_FILE go together".into());
        }
        if let Some(path) = &self.admin_bootstrap_password_file {
            read_password_file(path)?;
        }
        if self.admin_addr.is_some_and(|a| a == self.listen_addr && a.port() != 0) {
            return Err("ADMIN_ADDR must not be LISTEN_ADDR: the admin API is never on the public port".into());
        }
        let argon2 = self.argon2_params()?;
        if self.db_pool_size == 0 || self.redis_pool_size == 0 {
            return Err("DB_POOL_SIZE and REDIS_POOL_SIZE must be at least 1".into());
        }
        Ok(Settings { config: self, argon2, allocator })
    }

    /// The Argon2id parameters (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM).
    pub fn argon2_params(&self) -> Result<argon2::Params, String> {
        argon2::Params::new(self.argon2_memory_kib, self.argon2_iterations, self.argon2_parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))
    }

    /// ALLOCATOR and the settings of the allocator it names, checked: the TLS
    /// configuration built, the token file read once.
    fn allocator_settings(&self) -> Result<AllocatorSettings, String> {
        Ok(match self.allocator {
            Allocator::Static => AllocatorSettings::Static {
                servers: self.game_servers.0.clone(),
                // Until its game server confirms the match: its joinable window.
                lease_secs: self.match_ticket_ttl_secs,
            },
            Allocator::Command if self.allocator_command.trim().is_empty() => {
                return Err("ALLOCATOR=command needs ALLOCATOR_COMMAND".into())
            }
            Allocator::Command => AllocatorSettings::Command { command: self.allocator_command.clone() },
            Allocator::Agones => {
                let endpoint = self.agones_endpoint()?;
                let tls = self.agones_tls(&endpoint)?;
                let token_file = match self.agones_via {
                    AgonesVia::AllocatorService => None,
                    AgonesVia::Kubernetes => {
                        let path = PathBuf::from(self.agones_kubernetes_token_file.trim());
                        read_token(&path)?;
                        Some(path)
                    }
                };
                let mut selector = self.agones_selector_labels.0.clone();
                if !self.agones_fleet.trim().is_empty() {
                    selector.insert("agones.dev/fleet".into(), self.agones_fleet.trim().to_owned());
                }
                AllocatorSettings::Agones(Box::new(AgonesSettings {
                    endpoint,
                    tls,
                    token_file,
                    namespace: self.agones_namespace.clone(),
                    selector,
                    port_name: self.agones_port_name.clone(),
                    timeout: Duration::from_secs(self.agones_timeout_secs),
                }))
            }
        })
    }

    /// Where each allocation is POSTed: the allocator service's
    /// `/gameserverallocation` (AGONES_ALLOCATOR_URL), or with AGONES_VIA=kubernetes
    /// the namespace's `gameserverallocations` collection on AGONES_KUBERNETES_API.
    fn agones_endpoint(&self) -> Result<hyper::Uri, String> {
        let (setting, url, path) = match self.agones_via {
            AgonesVia::Kubernetes => {
                let namespace = self.agones_namespace.trim();
                if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(format!(
                        "invalid AGONES_NAMESPACE {namespace:?}: expected a Kubernetes namespace name"
                    ));
                }
                let path = format!("/apis/allocation.agones.dev/v1/namespaces/{namespace}/gameserverallocations");
                ("AGONES_KUBERNETES_API", self.agones_kubernetes_api.trim(), path)
            }
            AgonesVia::AllocatorService => {
                ("AGONES_ALLOCATOR_URL", self.agones_allocator_url.trim(), "/gameserverallocation".to_owned())
            }
        };
        if url.is_empty() {
            return Err(format!("ALLOCATOR=agones needs {setting}"));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid {setting}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("invalid {setting}: expected http(s)://host[:port]"));
        }
        let base = url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/');
        format!("{base}{path}").parse().map_err(|e| format!("invalid {setting}: {e}"))
    }

    /// The TLS client configuration for an `https` `endpoint` (ring provider); `None`
    /// for `http`. The allocator service: mTLS from AGONES_CLIENT_CERT,
    /// AGONES_CLIENT_KEY and AGONES_CA_FILE. The Kubernetes API: no client
    /// certificate (the bearer token authenticates), trusting AGONES_CA_FILE or else
    /// the service account's ca.crt.
    fn agones_tls(&self, endpoint: &hyper::Uri) -> Result<Option<rustls::ClientConfig>, String> {
        let (cert, key, ca) =
            (self.agones_client_cert.trim(), self.agones_client_key.trim(), self.agones_ca_file.trim());
        let path = |setting, path| (setting, std::path::Path::new(path));
        let https = endpoint.scheme_str() == Some("https");
        if self.agones_via == AgonesVia::Kubernetes {
            if !(cert.is_empty() && key.is_empty()) {
                return Err(
                    "AGONES_CLIENT_CERT/AGONES_CLIENT_KEY are set but AGONES_VIA=kubernetes does not use them \
                     (the service account token authenticates)"
                        .into(),
                );
            }
            if !https {
                if !ca.is_empty() {
                    return Err("AGONES_CA_FILE is set but AGONES_KUBERNETES_API is not https".into());
                }
                return Ok(None);
            }
            let ca = if ca.is_empty() { path("the service account CA", SA_CA) } else { path("AGONES_CA_FILE", ca) };
            return crate::tls::ca_client(ca).map(Some);
        }
        if !https {
            if !(cert.is_empty() && key.is_empty() && ca.is_empty()) {
                return Err(
                    "AGONES_CLIENT_CERT/AGONES_CLIENT_KEY/AGONES_CA_FILE are set but AGONES_ALLOCATOR_URL is not https"
                        .into(),
                );
            }
            return Ok(None);
        }
        if cert.is_empty() || key.is_empty() {
            return Err("an https AGONES_ALLOCATOR_URL needs AGONES_CLIENT_CERT and AGONES_CLIENT_KEY (mTLS)".into());
        }
        if ca.is_empty() {
            return Err("an https AGONES_ALLOCATOR_URL needs AGONES_CA_FILE (the allocator service's CA)".into());
        }
        crate::tls::mtls_client(
            path("AGONES_CA_FILE", ca),
            path("AGONES_CLIENT_CERT", cert),
            path("AGONES_CLIENT_KEY", key),
        )
        .map(Some)
    }
}

/// The settings a node runs with: the configuration as given, and what
/// [`Config::validate`] derived from it once at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM.
    pub argon2: argon2::Params,
    /// ALLOCATOR and its allocator's settings.
    pub allocator: AllocatorSettings,
}

/// Where game servers come from (`ALLOCATOR`), with the settings of that allocator.
#[derive(Debug, Clone)]
pub enum AllocatorSettings {
    /// The `GAME_SERVERS` pool, each server leased to one match for `lease_secs` (the
    /// joinable window, MATCH_TICKET_TTL_SECS) until its game server confirms it.
    Static {
        servers: Vec<(String, u16)>,
        lease_secs: u64,
    },
    /// `ALLOCATOR_COMMAND` (not empty).
    Command {
        command: String,
    },
    Agones(Box<AgonesSettings>),
}

impl AllocatorSettings {
    pub fn kind(&self) -> Allocator {
        match self {
            AllocatorSettings::Static { .. } => Allocator::Static,
            AllocatorSettings::Command { .. } => Allocator::Command,
            AllocatorSettings::Agones(_) => Allocator::Agones,
        }
    }
}

/// `ALLOCATOR=agones`: the AGONES_* settings, checked.
#[derive(Debug, Clone)]
pub struct AgonesSettings {
    /// Where each allocation is POSTed (AGONES_ALLOCATOR_URL's `/gameserverallocation`,
    /// or the namespace's `gameserverallocations` on AGONES_KUBERNETES_API).
    pub endpoint: hyper::Uri,
    /// For an `https` endpoint: mTLS to the allocator service, or the Kubernetes API's CA.
    pub tls: Option<rustls::ClientConfig>,
    /// With AGONES_VIA=kubernetes: the bearer token file (re-read on each try: projected
    /// tokens rotate); `None`: the allocator service.
    pub token_file: Option<PathBuf>,
    pub namespace: String,
    /// AGONES_SELECTOR_LABELS, and AGONES_FLEET as `agones.dev/fleet`.
    pub selector: BTreeMap<String, String>,
    pub port_name: String,
    /// AGONES_TIMEOUT_SECS.
    pub timeout: Duration,
}

/// The service account token Kubernetes mounts in a pod (AGONES_KUBERNETES_TOKEN_FILE).
pub const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The CA of the API server, mounted next to the token.
pub const SA_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The bearer token in `path` (trimmed, not empty). The error names the file, never
/// the token.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let token =
        std::fs::read_to_string(path).map_err(|e| format!("AGONES_KUBERNETES_TOKEN_FILE {}: {e}", path.display()))?;
    let token = token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_control()) {
        return Err(format!("AGONES_KUBERNETES_TOKEN_FILE {}: no token in the file", path.display()));
    }
    Ok(token.to_owned())
}

/// Comma-separated `key=value` labels (an empty value: none).
#[derive(Debug, Clone, Default)]
pub struct Labels(pub BTreeMap<String, String>);

impl std::str::FromStr for Labels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| match part.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
                _ => Err(format!("'{part}' is not key=value")),
            })
            .collect::<Result<_, _>>()
            .map(Labels)
    }
}

/// A comma-separated list of networks; bare addresses mean just that host, and an
/// empty value (as templating tools like to produce) means none.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<ipnet::IpNet>()
                    .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("'{part}' is not a network (CIDR) or address"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// as a dual-stack socket reports IPv4 peers) counts as its IPv4 address.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The header a trusted proxy names the client in; a client can send either, so only
/// the one the proxy really sets (appends to, or overwrites) may count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    #[default]
    XForwardedFor,
    XRealIp,
}

impl ClientIpHeader {
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::XRealIp => "x-real-ip",
        }
    }
}

impl std::str::FromStr for ClientIpHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [ClientIpHeader::XForwardedFor, ClientIpHeader::XRealIp]
            .into_iter()
            .find(|header| s.trim().eq_ignore_ascii_case(header.name()))
            .ok_or_else(|| format!("'{s}' is not x-forwarded-for or x-real-ip"))
    }
}

/// Operator passwords: at least this long (and at most 1024 bytes).
pub const MIN_OPERATOR_PASSWORD_CHARS: usize = 8;
const MAX_OPERATOR_PASSWORD_BYTES: usize = 1024;

/// Whether `password` may be an operator's.
pub fn operator_password_fits(password: &str) -> bool {
    password.chars().count() >= MIN_OPERATOR_PASSWORD_CHARS && password.len() <= MAX_OPERATOR_PASSWORD_BYTES
}

/// The password in `path` (ADMIN_BOOTSTRAP_PASSWORD_FILE): its first line, without
/// the line end.
pub fn read_password_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read ADMIN_BOOTSTRAP_PASSWORD_FILE {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_owned();
    if !operator_password_fits(&password) {
        return Err(format!(
            "ADMIN_BOOTSTRAP_PASSWORD_FILE: An operator password is at least {MIN_OPERATOR_PASSWORD_CHARS} characters"
        ));
    }
    Ok(password)
}

/// `name:size` queues.
#[derive(Debug, Clone)]
pub struct MatchQueues(pub Vec<(String, usize)>);

impl std::str::FromStr for MatchQueues {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let queues = s
            .split(',')
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(|q| {
                let (name, size) = q.split_once(':').ok_or(format!("'{q}' is not name:size"))?;
                let size: usize = size.parse().map_err(|_| format!("'{q}': the size is not a number"))?;
                if name.is_empty() || !(2..=100).contains(&size) {
                    return Err(format!("'{q}': a queue needs a name and 2 to 100 players"));
                }
                Ok((name.to_owned(), size))
            })
            .collect::<Result<Vec<(String, usize)>, String>>()?;
        if queues.is_empty() {
            return Err("at least one queue is needed".into());
        }
        if let Some((name, _)) = queues.iter().enumerate().find_map(|(i, q)| queues[..i].iter().find(|p| p.0 == q.0)) {
            return Err(format!("queue '{name}' is named twice"));
        }
        Ok(MatchQueues(queues))
    }
}

/// `host:port` game servers.
#[derive(Debug, Clone, Default)]
pub struct GameServers(pub Vec<(String, u16)>);

impl GameServers {
    /// The id a static game server is leased and asked about by (`host:port`).
    pub fn id(host: &str, port: u16) -> String {
        format!("{host}:{port}")
    }
}

impl std::str::FromStr for GameServers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                let (host, port) = g.rsplit_once(':').ok_or(format!("'{g}' is not host:port"))?;
                let port = port.parse().map_err(|_| format!("'{g}': bad port"))?;
                Ok((host.trim_matches(['[', ']']).to_owned(), port))
            })
            .collect::<Result<_, String>>()
            .map(GameServers)
    }
}

/// `kid:secret` signing keys, the first one current.
#[derive(Clone, Default)]
pub struct TicketKeys(pub Vec<(String, Vec<u8>)>);

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(kid, _)| kid)).finish()
    }
}

impl std::str::FromStr for TicketKeys {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| match k.split_once(':') {
                // The kid is a field of the dotted ticket: no dot in it.
                Some((kid, secret)) if !kid.is_empty() && !kid.contains('.') && secret.len() >= 16 => {
                    Ok((kid.to_owned(), secret.as_bytes().to_vec()))
                }
                _ => Err("each key is kid:secret, a kid without '.', a secret of at least 16 characters".to_owned()),
            })
            .collect::<Result<Vec<(String, Vec<u8>)>, String>>()
            .and_then(|keys| match keys.iter().enumerate().find(|(i, k)| keys[..*i].iter().any(|p| p.0 == k.0)) {
                Some((_, (kid, _))) => Err(format!("key id '{kid}' is used twice")),
                None => Ok(TicketKeys(keys)),
            })
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where Redis is, from `REDIS_URL`: one server, a Sentinel-watched master, or a
/// Redis Cluster. Each part is kept as a plain `redis://` URL for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port/db` or `rediss://…`.
    Single(String),
    /// `redis+sentinel://[user:pass@]h1:p1,h2:p2/<master-name>[/db]`: `sentinels`
    /// are the sentinels' URLs (no credentials), `master_settings` a URL carrying
    /// the credentials and database used on the master (its host is a placeholder).
    Sentinel { sentinels: Vec<String>, master_name: String, master_settings: String },
    /// `redis+cluster://[user:pass@]h1:p1,h2:p2`: the seed nodes' URLs, with the credentials.
    Cluster { nodes: Vec<String> },
}

impl RedisTarget {
    /// Parses and checks a `REDIS_URL` without connecting; the error is one line.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        // `rediss+sentinel://` and `rediss+cluster://`: every connection (sentinels,
        // master, cluster nodes) over TLS.
        let (url, scheme) = match url.strip_prefix("rediss+") {
            Some(rest) => (format!("redis+{rest}"), "rediss"),
            None => (url.to_owned(), "redis"),
        };
        let url = url.as_str();
        let target = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (userinfo, hosts, path) = split_multi_host(rest, 26379)?;
            let mut parts = path.split('/');
            let master_name = parts.next().unwrap_or_default();
            if master_name.is_empty() {
                return Err(
                    "redis+sentinel:// needs the master's name: redis+sentinel://h1:26379,h2:26379/<master-name>[/db]"
                        .into(),
                );
            }
            let db = match parts.next() {
                None | Some("") => 0,
                Some(db) => db.parse::<u32>().map_err(|_| format!("database {db:?} is not a number"))?,
            };
            if parts.any(|p| !p.is_empty()) {
                return Err("redis+sentinel:// takes /<master-name>[/db] and nothing more".into());
            }
            let sentinels = hosts.iter().map(|h| format!("{scheme}://{h}")).collect();
            RedisTarget::Sentinel {
                sentinels,
                master_name: master_name.to_owned(),
                master_settings: format!("{scheme}://{userinfo}127.0.0.1/{db}"),
            }
        } else if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (userinfo, hosts, path) = split_multi_host(rest, 6379)?;
            if !path.is_empty() && path != "0" {
                return Err("redis+cluster:// takes no database (Redis Cluster has only database 0)".into());
            }
            RedisTarget::Cluster { nodes: hosts.iter().map(|h| format!("{scheme}://{userinfo}{h}")).collect() }
        } else if scheme == "redis" && (url.starts_with("redis://") || url.starts_with("rediss://")) {
            RedisTarget::Single(url.to_owned())
        } else {
            return Err(format!(
                "unknown scheme in {:?}: use redis://, rediss://, redis+sentinel://, redis+cluster:// \
                 (rediss+… for TLS)",
                url.split("://").next().unwrap_or(url)
            ));
        };
        for each in target.urls() {
            redis::Client::open(each).map_err(|e| e.to_string().replace('\n', " "))?;
        }
        Ok(target)
    }

    /// Whether the connections are made over TLS.
    pub fn tls(&self) -> bool {
        self.urls().iter().all(|u| u.starts_with("rediss://"))
    }

    fn urls(&self) -> Vec<&str> {
        match self {
            RedisTarget::Single(url) => vec![url],
            RedisTarget::Sentinel { sentinels, master_settings, .. } => {
                sentinels.iter().map(String::as_str).chain([master_settings.as_str()]).collect()
            }
            RedisTarget::Cluster { nodes } => nodes.iter().map(String::as_str).collect(),
        }
    }
}

/// `[userinfo@]h1[:p1],h2[:p2]…[/path]` → (`"userinfo@"` or `""`, `["h1:p1", …]`, path).
fn split_multi_host(rest: &str, default_port: u16) -> Result<(String, Vec<String>, &str), String> {
    if rest.contains('?') {
        return Err("query parameters are not supported in redis+sentinel:// and redis+cluster:// URLs".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let mut out = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err("empty host in the list (h1:port,h2:port,…)".into());
        }
        // `[v6]:port`, `[v6]`, `name:port`, `name`.
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !port.ends_with(']') && (!name.starts_with('[') || name.ends_with(']')) => {
                (name, port.parse::<u16>().map_err(|_| format!("bad port in {host:?}"))?)
            }
            _ => (host, default_port),
        };
        if name.is_empty() || name.contains('@') {
            return Err(format!("bad host {host:?}"));
        }
        out.push(format!("{name}:{port}"));
    }
    Ok((userinfo, out, path.trim_end_matches('/')))
}

#[cfg(test)]
mod redis_url_tests {
    use super::RedisTarget;

    #[test]
    fn each_topology_parses() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/0"),
            Ok(RedisTarget::Single("redis://127.0.0.1:6379/0".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://:pw@a:1,b,c:3/mymaster/2"),
            Ok(RedisTarget::Sentinel {
                sentinels: vec!["redis://a:1".into(), "redis://b:26379".into(), "redis://c:3".into()],
                master_name: "mymaster".into(),
                master_settings: "redis://:pw@127.0.0.1/2".into(),
            })
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:p@h1:7000,h2:7001/"),
            Ok(RedisTarget::Cluster { nodes: vec!["redis://u:p@h1:7000".into(), "redis://u:p@h2:7001".into()] })
        );
    }

    #[test]
    fn tls_forms_parse() {
        let single = RedisTarget::parse("rediss://h:6380/1").unwrap();
        assert!(single.tls());
        assert!(!RedisTarget::parse("redis://h:6379/1").unwrap().tls());
        assert_eq!(
            RedisTarget::parse("rediss+sentinel://:pw@a:1,b/m/2"),
            Ok(RedisTarget::Sentinel {
                sentinels: vec!["rediss://a:1".into(), "rediss://b:26379".into()],
                master_name: "m".into(),
                master_settings: "rediss://:pw@127.0.0.1/2".into(),
            })
        );
        let cluster = RedisTarget::parse("rediss+cluster://h1:7000,h2:7001").unwrap();
        assert_eq!(cluster, RedisTarget::Cluster { nodes: vec!["rediss://h1:7000".into(), "rediss://h2:7001".into()] });
        assert!(cluster.tls());
        assert!(RedisTarget::parse("rediss+redis://h").is_err());
    }

    #[test]
    fn bad_urls_are_refused_on_one_line() {
        for bad in [
            "http://x",
            "redis+sentinel://a:1,b:2",
            "redis+sentinel://a:1/m/x",
            "redis+sentinel://a:1/m/1/2",
            "redis+sentinel://a:notaport/m",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1/3",
            "redis+cluster://a:1?x=1",
            "redis+cluster://",
        ] {
            let e = RedisTarget::parse(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod matchmaking_settings_tests {
    use super::{Config, MatchQueues, TicketKeys};

    #[test]
    fn ambiguous_queues_and_keys_are_refused() {
        assert!("a:2,b:3".parse::<MatchQueues>().is_ok());
        assert_eq!("a:2, a:3".parse::<MatchQueues>().unwrap_err(), "queue 'a' is named twice");
        let secret = "0123456789abcdef";
        assert!(format!("k1:{secret},k2:{secret}").parse::<TicketKeys>().is_ok());
        assert_eq!(format!("k1:{secret},k1:x{secret}").parse::<TicketKeys>().unwrap_err(), "key id 'k1' is used twice");
        assert!(format!("k.1:{secret}").parse::<TicketKeys>().unwrap_err().contains("without '.'"));
    }

    #[test]
    fn a_short_game_server_token_is_refused() {
        let with_token = |token: &str| Config::from_flags(&["--game-server-token", token]).unwrap().validate();
        assert!(with_token("").is_ok());
        assert!(with_token("0123456789abcdef").is_ok());
        assert_eq!(
            with_token("short").map(|_| ()).unwrap_err(),
            "GAME_SERVER_TOKEN must be at least 16 characters (or empty: ending matches off)"
        );
    }
}

#[cfg(test)]
mod settings_tests {
    use super::{AgonesVia, Allocator, AllocatorSettings, Config};

    #[test]
    fn choices_parse_by_their_one_list_of_names() {
        let defaults = Config::from_flags(&[]).unwrap();
        assert_eq!((defaults.allocator, defaults.agones_via), (Allocator::Static, AgonesVia::AllocatorService));
        let names: Vec<&str> = Allocator::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["static", "command", "agones"]);
        for &allocator in Allocator::ALL {
            assert_eq!(Config::from_flags(&["--allocator", allocator.name()]).unwrap().allocator, allocator);
        }
        for &via in AgonesVia::ALL {
            assert_eq!(Config::from_flags(&["--agones-via", via.name()]).unwrap().agones_via, via);
        }
        for bad in [&["--allocator", "Static"][..], &["--allocator", "pool"], &["--agones-via", "kube"]] {
            let e = Config::from_flags(bad).unwrap_err();
            assert!(e.contains("possible values"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn validation_derives_what_the_node_runs_with() {
        let settings = Config::from_flags(&["--argon2-memory-kib", "2048", "--game-servers", "gs:7001"])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!((settings.argon2.m_cost(), settings.argon2.t_cost()), (2048, 2));
        match settings.allocator {
            AllocatorSettings::Static { servers, lease_secs } => {
                assert_eq!((servers, lease_secs), (vec![("gs".to_owned(), 7001)], 300))
            }
            other => panic!("{other:?}"),
        }
        let command = |flags: &[&str]| Config::from_flags(flags).unwrap().validate().map(|s| s.allocator);
        assert_eq!(command(&["--allocator", "command"]).unwrap_err(), "ALLOCATOR=command needs ALLOCATOR_COMMAND");
        match command(&["--allocator", "command", "--allocator-command", "allocate.sh"]).unwrap() {
            AllocatorSettings::Command { command } => assert_eq!(command, "allocate.sh"),
            other => panic!("{other:?}"),
        }
        let bad_argon2 = Config::from_flags(&["--argon2-iterations", "0"]).unwrap().validate().map(|_| ());
        assert!(bad_argon2.unwrap_err().starts_with("invalid argon2 parameters"));
    }

    #[test]
    fn admin_settings_are_checked_at_start() {
        let check = |flags: &[&str]| Config::from_flags(flags).unwrap().validate().map(|_| ());
        let lone = check(&["--admin-bootstrap-name", "root"]).unwrap_err();
        assert!(lone.contains("go together"), "{lone}");
        let missing = check(&["--admin-bootstrap-name", "root", "--admin-bootstrap-password-file", "/nonexistent/pw"]);
        assert!(missing.unwrap_err().contains("cannot read ADMIN_BOOTSTRAP_PASSWORD_FILE"));
        let same = check(&["--listen-addr", "0.0.0.0:8080", "--admin-addr", "0.0.0.0:8080"]).unwrap_err();
        assert!(same.contains("never on the public port"), "{same}");
        assert!(check(&["--admin-addr", "127.0.0.1:9092"]).is_ok());
        let defaults = Config::from_flags(&[]).unwrap();
        assert_eq!((defaults.admin_addr, defaults.admin_session_secs), (None, 1800));
    }
}
