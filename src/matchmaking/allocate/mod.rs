//! Game servers for formed matches: one small interface, [`Allocate`], with one
//! implementation per `ALLOCATOR` value, each in its own file.

mod agones;
mod command;
mod static_pool;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Allocator, AllocatorSettings};
use crate::metrics::AllocationResult;
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
    pub fn result(&self) -> AllocationResult {
        match self {
            Failure::Exhausted(_) => AllocationResult::Exhausted,
            Failure::Failed(_) => AllocationResult::Failed,
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
    /// Which `ALLOCATOR` this is (the `allocator` label).
    fn kind(&self) -> Allocator;
    /// One try at a game server for the match.
    async fn allocate(&self, request: &Request<'_>) -> Result<Server, Failure>;
}

/// The allocator the settings name. `credentials`: whether game servers get a
/// credential for their match (GAME_SERVER_TOKEN is set).
pub fn build(settings: &AllocatorSettings, credentials: bool, queue: Arc<dyn MatchQueue>) -> Arc<dyn Allocate> {
    match settings {
        AllocatorSettings::Command { command } => Arc::new(command::Command::new(command)),
        AllocatorSettings::Agones(agones) => Arc::new(agones::Agones::new(agones)),
        AllocatorSettings::Static { servers, lease_secs } => {
            if servers.is_empty() {
                tracing::warn!("ALLOCATOR=static without GAME_SERVERS: every match will end in match_error");
            }
            if !servers.is_empty() && !credentials {
                tracing::warn!(
                    "ALLOCATOR=static without GAME_SERVER_TOKEN: game servers cannot learn, confirm or end their \
                     match; each server is leased for MATCH_TICKET_TTL_SECS only"
                );
            }
            Arc::new(static_pool::StaticPool::new(servers, *lease_secs, queue))
        }
    }
}
