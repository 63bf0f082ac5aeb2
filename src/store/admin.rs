//! The admin roles: operators and their sessions ([`Operators`]), and the
//! append-only audit log ([`Audit`]). PostgreSQL holds both (`admin_pg`); the
//! in-memory twins (`admin_memory`) keep the same contract for in-process tests.

use async_trait::async_trait;

use super::StoreResult;

/// An operator's role, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
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

/// An operator account (apart from players).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    /// As created; looked up case-insensitively.
    pub name: String,
    pub role: Role,
    /// argon2id, PHC string.
    pub password_hash: String,
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A live operator session: who, and the CSRF token its state-changing requests carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSession {
    pub operator: String,
    pub role: Role,
    pub csrf: String,
}

/// What to change on an operator; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorChange {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
}

/// Operator accounts and their sessions. A session is kept by the SHA-256 of its
/// token (the cookie's value), ends after `idle_secs` without a request, and is
/// never honoured for a disabled operator; disabling one or changing its password
/// ends its sessions at once.
#[async_trait]
pub trait Operators: Send + Sync + 'static {
    /// How many operators exist (disabled ones too).
    async fn count_operators(&self) -> StoreResult<u64>;
    async fn find_operator(&self, name: &str) -> StoreResult<Option<OperatorRecord>>;
    /// Every operator, by name.
    async fn list_operators(&self) -> StoreResult<Vec<OperatorRecord>>;
    /// Creates an operator; `None` when the name (in any case) is taken.
    async fn create_operator(&self, name: &str, role: Role, password_hash: &str)
        -> StoreResult<Option<OperatorRecord>>;
    /// Creates an operator only when none exists at all (the bootstrap of the first
    /// admin, safe when several nodes start at once); `None` when one existed.
    async fn create_first_operator(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
    ) -> StoreResult<Option<OperatorRecord>>;
    /// Changes an operator; `None` when there is no such operator.
    async fn update_operator(&self, name: &str, change: &OperatorChange) -> StoreResult<Option<OperatorRecord>>;
    /// Opens a session of `name` (which must exist and be enabled: `false` if not).
    async fn create_session(&self, token_hash: &[u8; 32], name: &str, csrf: &str) -> StoreResult<bool>;
    /// The live session, its inactivity clock restarted; `None` when unknown, idle for
    /// `idle_secs` or more, or its operator is disabled.
    async fn session(&self, token_hash: &[u8; 32], idle_secs: u64) -> StoreResult<Option<OperatorSession>>;
    async fn end_session(&self, token_hash: &[u8; 32]) -> StoreResult<()>;
}

/// How a recorded request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused for the operator's role (or a missing CSRF token).
    Refused,
    /// Bad input, nothing to act on, a store down, a wrong password.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "refused" => Some(Outcome::Refused),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub operator: String,
    pub action: String,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub outcome: Outcome,
    pub address: Option<String>,
    /// JSON text (e.g. the error of a refused or failed request).
    pub detail: Option<String>,
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub operator: String,
    pub action: String,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub outcome: Outcome,
    pub address: Option<String>,
}

/// Which entries to read: those about `player` (the target, case-insensitive) and by
/// `operator` (case-insensitive), with ids below `before`, newest first, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub player: Option<String>,
    pub operator: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// The append-only audit log: entries are added and read, never changed or removed.
#[async_trait]
pub trait Audit: Send + Sync + 'static {
    /// Appends an entry; returns its id (ids grow with time).
    async fn record(&self, entry: &NewAuditEntry) -> StoreResult<i64>;
    async fn entries(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
}
