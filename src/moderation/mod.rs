//! Actions on players (ban, mute, kick, name reset, token revocation) and the views
//! of what the cluster holds for one player, node or queue. Knows nothing of
//! operators, HTTP or the audit log (`crate::admin` does); the role policy of
//! MODERATION.md is decided here, because lifting "its own actions" needs to know who
//! acted. See `docs/ADMIN_API.md`.

use std::net::IpAddr;

use serde::Serialize;

/// An operator's role, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "moderator" => Some(Role::Moderator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who acts: an operator of the console or API, or `cli:<os user>` (as admin).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    pub address: Option<IpAddr>,
}

/// What an operator does to a player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `None`: permanent.
    Ban {
        secs: Option<u64>,
    },
    Unban,
    Mute {
        secs: u64,
    },
    Unmute,
    Kick,
    ResetName,
    RevokeTokens,
}

impl Action {
    /// The action's name in the API and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ban { .. } => "ban",
            Action::Unban => "unban",
            Action::Mute { .. } => "mute",
            Action::Unmute => "unmute",
            Action::Kick => "kick",
            Action::ResetName => "reset-name",
            Action::RevokeTokens => "revoke-tokens",
        }
    }
}

/// What an action did: `{"player","action","until","sessions"}` in the API.
#[derive(Debug, Clone, Serialize)]
pub struct Acted {
    pub player: String,
    pub action: &'static str,
    /// RFC 3339 UTC; the end of a ban or mute, `None` for a permanent ban or others.
    pub until: Option<String>,
    /// Live sessions the action reached.
    pub sessions: u64,
}

/// Why an action or view failed; each maps to one HTTP status (`status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModerationError {
    #[error("{0}")]
    BadInput(String),
    #[error("No such player")]
    NoSuchPlayer,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Unavailable(String),
}

impl ModerationError {
    pub fn status(&self) -> u16 {
        match self {
            ModerationError::BadInput(_) => 400,
            ModerationError::Forbidden(_) => 403,
            ModerationError::NoSuchPlayer => 404,
            ModerationError::Conflict(_) => 409,
            ModerationError::Unavailable(_) => 503,
        }
    }
}

pub const NOT_ALLOWED: &str = "Your role does not allow this";
pub const MODERATOR_BAN_LIMIT: &str = "Moderators may ban for at most 30 days";
pub const MODERATOR_LIFTS_OWN: &str = "Moderators may lift only their own actions";
pub const REASON_REQUIRED: &str = "A reason is required (at most 500 characters)";
pub const NO_ACTIVE_BAN: &str = "No active ban";
pub const NO_ACTIVE_MUTE: &str = "No active mute";
/// The longest ban a moderator may set.
pub const MODERATOR_MAX_BAN_SECS: u64 = 30 * 86_400;
/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

mod views;
pub use views::*;

use crate::store::Stores;

/// Acts on players and reads what the cluster holds, from any process that has the
/// stores: a node (for its admin API) or the command line.
pub struct Moderation {
    stores: Stores,
    /// Where replies to this process's cluster-wide questions are sent.
    node_id: String,
}

impl Moderation {
    pub fn new(stores: Stores, node_id: String) -> Moderation {
        Moderation { stores, node_id }
    }

    /// Does `action` to `username`'s account, if `actor`'s role allows it.
    pub async fn act(
        &self,
        username: &str,
        action: Action,
        reason: &str,
        actor: &Actor,
    ) -> Result<Acted, ModerationError> {
        let _ = (username, action, reason, actor, &self.stores, &self.node_id);
        Err(ModerationError::Unavailable("not built yet".into()))
    }

    /// The player 360 (without audit entries).
    pub async fn player(&self, username: &str) -> Result<PlayerView, ModerationError> {
        let _ = username;
        Err(ModerationError::Unavailable("not built yet".into()))
    }

    /// Accounts whose username or email starts with `prefix`, at most `limit`.
    pub async fn players(&self, prefix: &str, limit: u32) -> Result<Vec<PlayerSummary>, ModerationError> {
        let _ = (prefix, limit);
        Err(ModerationError::Unavailable("not built yet".into()))
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ModerationError> {
        Err(ModerationError::Unavailable("not built yet".into()))
    }

    pub async fn queues(&self) -> Result<Vec<QueueView>, ModerationError> {
        Err(ModerationError::Unavailable("not built yet".into()))
    }
}

/// Unix seconds as RFC 3339 UTC with whole seconds (`2026-12-06T07:40:00Z`).
pub fn rfc3339(unix_secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
