//! The shared stores behind two small traits: PostgreSQL holds the durable truth
//! (users, tokens), Redis the shared caches (token validity, sessions, presence,
//! rate limits) and the chat bus. Nothing here keeps state in the node's memory.

pub mod postgres;
pub mod redis;

use async_trait::async_trait;

use crate::auth::TokenHash;
use crate::error::StoreError;

pub use self::postgres::PgStore;
pub use self::redis::RedisStore;

pub type StoreResult<T> = Result<T, StoreError>;

/// Now, in the Unix seconds that token expiries are kept in.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Seconds left until `expires_at`, at least one: the Redis TTL of whatever lives as
/// long as a token.
pub fn seconds_until(expires_at: i64) -> u64 {
    (expires_at - unix_now()).max(1) as u64
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
}

/// A token that is neither expired nor revoked, with its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub user_id: i64,
    pub username: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Username,
    Email,
}

/// Durable accounts and tokens.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Finds an account by name, case-insensitively.
    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn email_taken(&self, email: &str) -> StoreResult<bool>;
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: Option<&str>,
    ) -> StoreResult<Result<i64, Conflict>>;
    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> StoreResult<()>;
    /// Stores a new token for a successful login and stamps the user's `last_login`.
    async fn insert_token(&self, user_id: i64, token: &TokenHash, ip: Option<&str>, expires_at: i64)
        -> StoreResult<()>;
    /// A token that is still valid, or `None`.
    async fn find_token(&self, token: &TokenHash) -> StoreResult<Option<TokenRecord>>;
    /// Sets `last_used_at = now()` on a batch of tokens.
    async fn touch_tokens(&self, tokens: &[TokenHash]) -> StoreResult<u64>;
    /// Revokes every live token of a user; returns the hashes revoked.
    async fn revoke_user_tokens(&self, username: &str) -> StoreResult<Vec<TokenHash>>;
    /// Revokes one token; returns whether it existed.
    async fn revoke_token(&self, token: &TokenHash) -> StoreResult<bool>;
    async fn ping(&self) -> StoreResult<()>;
}

/// What the token cache knows about a token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    Hit {
        token: TokenRecord,
        display_name: Option<String>,
    },
    /// Recently looked up in PostgreSQL and not found.
    Negative,
    /// Not cached; the session's display name may still be known.
    Miss {
        display_name: Option<String>,
    },
}

/// A chat message on the cluster bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatEvent {
    Global { from: String, message: String },
    Private { from: String, target: String, message: String },
}

/// Shared, expiring state: token cache, sessions, presence, rate limits, chat bus.
#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// The cached token entry and the session's display name, in one round trip.
    async fn lookup_token(&self, token: &TokenHash) -> StoreResult<CacheLookup>;
    /// Caches a valid token for `ttl_secs` and, when given, sets its session's display name.
    async fn cache_token(
        &self,
        token: &TokenHash,
        record: &TokenRecord,
        ttl_secs: u64,
        display_name: Option<&str>,
    ) -> StoreResult<()>;
    async fn cache_negative(&self, token: &TokenHash, ttl_secs: u64) -> StoreResult<()>;
    async fn forget_tokens(&self, tokens: &[TokenHash]) -> StoreResult<()>;
    async fn set_display_name(&self, token: &TokenHash, name: &str, ttl_secs: u64) -> StoreResult<()>;

    /// Current failure counts for each key.
    async fn failures(&self, keys: &[String]) -> StoreResult<Vec<u64>>;
    /// Counts one failure against each key in a window of `window_secs`.
    async fn add_failure(&self, keys: &[String], window_secs: u64) -> StoreResult<()>;
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;

    /// Publishes this node's number of authenticated connections, as its heartbeat.
    async fn heartbeat(&self, node_id: &str, authenticated: usize) -> StoreResult<()>;
    async fn remove_presence(&self, node_id: &str) -> StoreResult<()>;
    /// Authenticated connections on every node with a fresh heartbeat, except
    /// `except_node` (whose own count the caller knows better).
    async fn cluster_count(&self, except_node: &str) -> StoreResult<u64>;

    async fn publish(&self, event: &ChatEvent) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
}
