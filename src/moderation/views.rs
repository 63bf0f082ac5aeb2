//! What the admin API shows (`docs/ADMIN_API.md`): each struct serializes to its shape.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlayerSummary {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    /// Live sessions, cluster-wide.
    pub online: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub created: String,
    pub last_login: Option<String>,
}

/// One live session, as the node holding it describes it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub node: String,
    pub display_name: String,
    pub address: String,
    pub connected_since: String,
    /// `login`, `token_auth` or `register`.
    pub auth: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MatchmakingView {
    pub queue: Option<String>,
    pub position: Option<u64>,
    pub waiting_secs: Option<u64>,
    pub pending_match: Option<String>,
}

/// An active ban or mute.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SanctionView {
    pub reason: String,
    pub until: Option<String>,
    pub by: String,
    pub at: String,
}

/// The player 360 without its audit entries (the admin layer adds them).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlayerView {
    pub account: Account,
    pub sessions: Vec<SessionView>,
    pub matchmaking: Option<MatchmakingView>,
    pub ban: Option<SanctionView>,
    pub mute: Option<SanctionView>,
    pub failed_logins: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub version: String,
    pub started: String,
    pub players: u64,
    pub status: String,
    pub redis: String,
    pub postgres: String,
    pub last_heartbeat: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueView {
    pub queue: String,
    pub waiting: u64,
    pub oldest_wait_secs: Option<u64>,
    pub pending_allocation: u64,
    pub servers_leased: Option<u64>,
    pub servers_free: Option<u64>,
}
