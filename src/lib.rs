pub mod auth;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod handlers;
pub mod http;
pub mod last_used;
pub mod loadgen;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod revocation;
pub mod revoke;
pub mod server;
pub mod session;
pub mod store;

/// The log filter: `RUST_LOG` (default `info`), except that the libraries that would
/// log frames or query parameters (passwords, tokens, hashes, emails) never log
/// below `info`, whatever `RUST_LOG` asks for.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let quiet =
        ["tungstenite", "tokio_tungstenite", "hyper_tungstenite", "tokio_postgres", "postgres_protocol", "redis"];
    let directives = quiet.iter().fold(requested, |acc, target| format!("{acc},{target}=info"));
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info".into())
}
