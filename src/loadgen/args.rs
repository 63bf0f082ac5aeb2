//! Command-line options of `openchampps bench`.
//!
//! The node's own settings are `global` flags of the top-level command, so every
//! name here is chosen not to collide with them (`--connections`, never
//! `--max-connections`; no environment variables shared with the node).

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// What each connection does in its closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Each op: `token_auth` on an already open connection (token-cache hit path).
    #[value(name = "token_auth")]
    TokenAuth,
    /// Each op: `login` with username and password (argon2id verify, new token).
    #[value(name = "login")]
    Login,
    /// Each op: `set_username` on an authenticated connection.
    #[value(name = "set_username")]
    SetUsername,
    /// `--senders` connections send `global_chat` (waiting for their own echo); the
    /// latency is the delivery latency from send to receipt at every receiver.
    #[value(name = "global_chat")]
    GlobalChat,
    /// Each op: `count` (cluster-wide player count through Redis).
    #[value(name = "count")]
    Count,
    /// Opens `--connections` authenticated connections and holds them for `--duration`
    /// (no warm-up). Its ops are the connections opened and its latency is each one's
    /// connect + handshake + `token_auth`; with `--watch-pid` it reports the node's
    /// memory per connection.
    #[value(name = "idle")]
    Idle,
    /// Reconnect storms with positions (RESUME.md): each op drops the connection,
    /// opens one to the next node and resumes with `token_auth` and the positions it
    /// processed, reading the replay up to `resumed`. Run beside a `global_chat` load
    /// for replays with content.
    #[value(name = "resume")]
    Resume,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::TokenAuth => "token_auth",
            Mode::Login => "login",
            Mode::SetUsername => "set_username",
            Mode::GlobalChat => "global_chat",
            Mode::Count => "count",
            Mode::Idle => "idle",
            Mode::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// WebSocket URL of a node; repeat for several nodes (connections are spread
    /// round-robin over them).
    #[arg(long = "url", value_name = "WS_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// What each connection does.
    #[arg(long, value_enum, default_value = "token_auth")]
    pub mode: Mode,
    /// Concurrent connections, each running its own closed loop (send, await reply, repeat).
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Measured time, after the warm-up ("10", "10s", "500ms", "2m").
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time run but not measured before the measurement starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Print the summary as one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Accounts to create (or reuse) and spread over the connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub accounts: u64,
    /// Account names are `<prefix><index>`; the default is unique per run. A fixed
    /// prefix reuses the accounts of an earlier run (they are logged into, not recreated).
    #[arg(long)]
    pub account_prefix: Option<String>,
    /// Password of the load generator's accounts.
    #[arg(long, default_value = "loadgen-password")]
    pub account_password: String,
    /// `global_chat`: how many of the connections send (all of them receive).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub senders: u64,
    /// `global_chat`: pad each chat message's text to this many bytes (the frame
    /// around it adds its JSON envelope). 0: no padding. The node refuses messages
    /// longer than its `CHAT_MAX_CHARS`, and frames longer than `MAX_FRAME_BYTES`.
    #[arg(long, default_value_t = 0)]
    pub message_bytes: usize,
    /// An op (or a connection set-up step) still unanswered after this long counts as
    /// the error `timeout` and its connection is reopened.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Local (source) address for outgoing connections; repeat to spread connections
    /// over several, so one address's ephemeral ports do not run out. Default: the
    /// system's choice, except towards a loopback node with more than 10,000
    /// connections, where 127.0.0.2 … 127.0.0.9 are used.
    #[arg(long = "bind", value_name = "IP")]
    pub bind: Vec<IpAddr>,
    /// Connections being opened (handshake plus authentication) at once during set-up.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_concurrency: u64,
    /// A process on this machine to account for (repeatable): the CPU each one uses
    /// during the measured window is reported. The first is taken to be the node:
    /// in `idle` mode its resident memory (VmRSS) is sampled before the connections
    /// open and at the end of the hold, and reported per connection.
    #[arg(long = "watch-pid", value_name = "PID")]
    pub watch_pids: Vec<u32>,
}

/// Parses "10", "10s", "1.5s", "250ms", "2m".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {text:?} (try 10s, 500ms, 2m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("not a duration: {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
