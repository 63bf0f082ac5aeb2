//! Game servers for formed matches: one small interface, [`Allocate`], with one
//! implementation per `ALLOCATOR` value, each in its own file.

mod agones;
mod command;
mod static_pool;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Config;
use crate::store::MatchQueue;

/// The match a game server is wanted for.
pub struct Request<'a> {
    pub match_id: &'a str,
    pub queue: &'a str,
    /// Usernames, in queue order.
    pub players: Vec<&'a str>,
    /// The match's credential for `POST /matches/<id>/confirm` and `/end`, handed to
    /// its game server; empty without GAME_SERVER_TOKEN.
    pub token: &'a str,
}

/// Where the players of a match go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// What `match_found.containerID` and the join ticket name.
    pub server_id: String,
}

/// Why one try gave no server (the `result` label of `openchampps_allocations_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every server is taken: try again later.
    Exhausted(String),
    /// The allocator failed (unreachable, bad answer, timeout).
    Failed(String),
}

impl Failure {
    pub fn result(&self) -> &'static str {
        match self {
            Failure::Exhausted(_) => "exhausted",
            Failure::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Exhausted(why) | Failure::Failed(why) => f.write_str(why),
        }
    }
}

#[async_trait]
pub trait Allocate: Send + Sync + 'static {
    /// The `allocator` label: the `ALLOCATOR` value.
    fn name(&self) -> &'static str;
    /// One try at a game server for the match.
    async fn allocate(&self, request: &Request<'_>) -> Result<Server, Failure>;
}

/// Every `ALLOCATOR` value, for the metrics registered at 0.
pub const ALLOCATORS: [&str; 3] = ["static", "command", "agones"];

/// The allocator `ALLOCATOR` names.
pub fn from_config(config: &Config, queue: Arc<dyn MatchQueue>) -> Arc<dyn Allocate> {
    match config.allocator.as_str() {
        "command" => Arc::new(command::Command::new(&config.allocator_command)),
        // Config::validate checked the same settings before the node started.
        "agones" => Arc::new(agones::Agones::new(config).expect("AGONES_* settings validated at start-up")),
        _ => {
            if config.game_servers.0.is_empty() {
                tracing::warn!("ALLOCATOR=static without GAME_SERVERS: every match will end in match_error");
            }
            if !config.game_servers.0.is_empty() && config.game_server_token.is_empty() {
                tracing::warn!(
                    "ALLOCATOR=static without GAME_SERVER_TOKEN: game servers cannot learn, confirm or end their \
                     match; each server is leased for MATCH_TICKET_TTL_SECS only"
                );
            }
            // Until its game server confirms the match: its joinable window.
            Arc::new(static_pool::StaticPool::new(&config.game_servers.0, config.match_ticket_ttl_secs, queue))
        }
    }
}
