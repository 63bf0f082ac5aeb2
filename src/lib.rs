pub mod accounts;
pub mod address;
pub mod admin;
pub mod auth;
pub mod bucket;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod gate;
pub mod handlers;
pub mod http;
pub mod last_used;
pub mod loadgen;
pub mod matchmaking;
pub mod metrics;
pub mod migrate;
pub mod moderation;
pub mod names;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod resume;
pub mod revocation;
pub mod revoke;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

/// The log filter: `RUST_LOG` (default `info`), except that the libraries that would
/// log frames or query parameters (passwords, tokens, hashes, emails) never log
/// below `info`, whatever `RUST_LOG` asks for.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    filter_from(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
}

fn filter_from(requested: &str) -> tracing_subscriber::EnvFilter {
    let quiet =
        ["tungstenite", "tokio_tungstenite", "hyper_tungstenite", "tokio_postgres", "postgres_protocol", "redis"];
    let directives = quiet.iter().fold(requested.to_owned(), |acc, target| format!("{acc},{target}=info"));
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info".into())
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    fn enabled_with(rust_log: &str, target: &str, level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(super::filter_from(rust_log));
        tracing::subscriber::with_default(subscriber, || probe(target, level))
    }

    /// `tracing::enabled!` needs a literal target: ask the dispatcher directly.
    fn probe(target: &str, level: Level) -> bool {
        let metadata = tracing::Metadata::new(
            "probe",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        tracing::dispatcher::get_default(|d| d.enabled(&metadata))
    }

    struct Probe;
    static CALLSITE: Probe = Probe;
    impl tracing::callsite::Callsite for Probe {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!()
        }
    }

    #[test]
    fn libraries_that_log_secrets_stay_at_info_whatever_rust_log_says() {
        for rust_log in ["trace", "debug", "trace,tokio_postgres=trace,tungstenite=trace", "tungstenite=trace"] {
            for target in ["tungstenite::protocol", "tokio_postgres::query", "redis::cmd"] {
                assert!(!enabled_with(rust_log, target, Level::DEBUG), "{target} at debug with RUST_LOG={rust_log}");
            }
        }
        assert!(enabled_with("trace", "openchampps::connection", Level::TRACE));
        assert!(enabled_with("info", "tokio_postgres::connection", Level::INFO));
    }
}
