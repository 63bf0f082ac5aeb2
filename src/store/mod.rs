//! The stores, behind traits sized to their roles. PostgreSQL holds the durable
//! truth (users, tokens: [`UserStore`]; bans and mutes: [`ModerationStore`]); Redis the shared, expiring state, one trait
//! per role: [`TokenCache`], [`Sessions`], [`Presence`], [`Directory`], [`Bus`],
//! [`ChatBuckets`], [`Limits`], [`MatchQueue`], [`Streams`] (the resume streams).
//! Each role has a Redis implementation ([`redis`]) and an in-memory one
//! ([`memory`]) for in-process tests. Nothing outside this module names a concrete
//! store: the node gets a [`Stores`] and sees only the traits.

pub mod admin;
mod admin_memory;
mod admin_pg;
pub mod memory;
pub mod postgres;

pub use admin_memory::MemoryAdmin;
pub mod redis;
pub mod takeover;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::auth::TokenHash;
use crate::config::Config;
use crate::error::StoreError;

pub type StoreResult<T> = Result<T, StoreError>;

/// Now, in the Unix seconds that token expiries are kept in.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch: when a queue ticket was taken (`Ticket::joined_ms`).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
    /// What holds against the account (read with it, in the same query).
    pub standing: Standing,
}

/// A token that is neither expired nor revoked, with its owner; or, while its account
/// is banned, a token the ban revoked (`standing.ban` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub user_id: i64,
    pub username: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub standing: Standing,
}

/// A ban or mute in force (MODERATION.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sanction {
    pub reason: String,
    /// Unix seconds; `None`: permanent (bans only).
    pub until: Option<i64>,
    /// The operator, or `cli:<os user>`.
    pub by: String,
    /// Unix seconds.
    pub at: i64,
}

impl Sanction {
    /// Still in force at `now` (unix seconds): expiry ends it without anyone acting.
    pub fn in_force(&self, now: i64) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// What holds against an account when it authenticates: its ban and mute in force,
/// and a kick that waits for its next session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    // Boxed: a clear standing (nearly every account's) stays small in every token record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<Box<Sanction>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute: Option<Box<Sanction>>,
    /// The reason of a kick of an account that had no live session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kick: Option<String>,
}

impl Standing {
    pub fn is_clear(&self) -> bool {
        self.ban.is_none() && self.mute.is_none() && self.kick.is_none()
    }

    /// The ban in force at `now`.
    pub fn ban(&self, now: i64) -> Option<&Sanction> {
        self.ban.as_deref().filter(|b| b.in_force(now))
    }

    /// The mute in force at `now`.
    pub fn mute(&self, now: i64) -> Option<&Sanction> {
        self.mute.as_deref().filter(|m| m.in_force(now))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanctionKind {
    Ban,
    Mute,
}

impl SanctionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Ban => "ban",
            SanctionKind::Mute => "mute",
        }
    }
}

/// An account as the admin views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub last_login: Option<i64>,
}

/// What moderation keeps in PostgreSQL: bans, mutes, kicks waiting for their player,
/// and the account lookups of the admin views.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    /// The account named `username` (case-insensitive).
    async fn account(&self, username: &str) -> StoreResult<Option<AccountRecord>>;
    /// Accounts whose username or email starts with `prefix` (case-insensitive), by
    /// username, at most `limit`.
    async fn search_accounts(&self, prefix: &str, limit: u32) -> StoreResult<Vec<AccountRecord>>;
    /// The account's standing now (sanctions in force, a waiting kick).
    async fn standing(&self, user_id: i64) -> StoreResult<Standing>;
    /// Puts `sanction` in force, lifting the one of the same kind before it.
    async fn impose(&self, user_id: i64, kind: SanctionKind, sanction: &Sanction) -> StoreResult<()>;
    /// Lifts the sanction of `kind` in force; returns it (`None`: nothing to lift).
    async fn lift(&self, user_id: i64, kind: SanctionKind, by: &str, reason: &str) -> StoreResult<Option<Sanction>>;
    /// Keeps a kick for the account's next login or `token_auth` (it had no session).
    async fn pend_kick(&self, user_id: i64, reason: &str, by: &str) -> StoreResult<()>;
    /// Takes the waiting kick, if any: exactly one caller gets it.
    async fn take_kick(&self, user_id: i64) -> StoreResult<Option<String>>;
    /// Every unexpired token of the account, revoked or not (to forget from the cache
    /// when its standing changes).
    async fn account_tokens(&self, user_id: i64) -> StoreResult<Vec<TokenHash>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Username,
    Email,
}

/// Whether a store answers, and its pool gauges.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
    /// Exports the connection pool's size, idle and waiting counts.
    fn export_pool_gauges(&self) {}
}

/// Durable accounts and tokens.
#[async_trait]
pub trait UserStore: Health {
    /// Brings the schema up to date (safe when several nodes start at once).
    async fn migrate(&self) -> StoreResult<()>;
    /// Finds an account by name, case-insensitively.
    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// The same, in the same one query, with the name folded as the lookup folds it:
    /// a login keys guesses at a name nobody has by it, so every spelling that would
    /// find one account is one name, exactly as for an account.
    async fn find_login(&self, username: &str) -> StoreResult<(String, Option<UserRecord>)>;
    async fn email_taken(&self, email: &str) -> StoreResult<bool>;
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: Option<&str>,
    ) -> StoreResult<Result<i64, Conflict>>;
    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> StoreResult<()>;
    /// Stores a new token for a successful login and stamps the user's `last_login`.
    /// Past `max_live` live tokens the user's oldest are revoked; returns those.
    async fn insert_token(
        &self,
        user_id: i64,
        token: &TokenHash,
        ip: Option<&str>,
        expires_at: i64,
        max_live: u32,
    ) -> StoreResult<Vec<TokenHash>>;
    /// A token that is still valid, or `None`.
    async fn find_token(&self, token: &TokenHash) -> StoreResult<Option<TokenRecord>>;
    /// Those of `tokens` that are still valid (not revoked, not expired, user not
    /// deleted), with their records.
    async fn live_tokens(&self, tokens: &[TokenHash]) -> StoreResult<Vec<(TokenHash, TokenRecord)>>;
    /// Deletes expired tokens, and tokens revoked more than a day ago, in batches;
    /// one node at a time (others skip while one prunes). Returns how many went.
    async fn prune_tokens(&self) -> StoreResult<u64>;
    /// Sets `last_used_at = now()` on a batch of tokens.
    async fn touch_tokens(&self, tokens: &[TokenHash]) -> StoreResult<u64>;
    /// Revokes every live token of a user; returns the hashes revoked.
    async fn revoke_user_tokens(&self, username: &str) -> StoreResult<Vec<TokenHash>>;
    /// Revokes one token; returns whether it existed.
    async fn revoke_token(&self, token: &TokenHash) -> StoreResult<bool>;
}

/// What the token cache knows about a token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a hit is the common answer: boxing it costs every token_auth
pub enum CacheLookup {
    Hit {
        token: TokenRecord,
        display_name: Option<Arc<str>>,
    },
    /// Recently looked up in PostgreSQL and not found.
    Negative,
    /// Not cached; the session's display name may still be known.
    Miss {
        display_name: Option<Arc<str>>,
    },
}

/// Token validity, cached in front of PostgreSQL. A lookup also returns the token's
/// session display name ([`Sessions`]), so `token_auth` costs one round trip.
#[async_trait]
pub trait TokenCache: Send + Sync + 'static {
    async fn lookup(&self, token: &TokenHash) -> StoreResult<CacheLookup>;
    /// Caches a valid token for `ttl_secs` and, when given, sets its session's display name.
    async fn cache(
        &self,
        token: &TokenHash,
        record: &TokenRecord,
        ttl_secs: u64,
        display_name: Option<&str>,
    ) -> StoreResult<()>;
    /// Remembers a token PostgreSQL does not know, without overwriting a valid entry.
    async fn cache_negative(&self, token: &TokenHash, ttl_secs: u64) -> StoreResult<()>;
    /// Drops tokens and their sessions (revocation).
    async fn forget(&self, tokens: &[TokenHash]) -> StoreResult<()>;
}

/// Per-token session state that survives a reconnect to any node.
#[async_trait]
pub trait Sessions: Send + Sync + 'static {
    async fn set_display_name(&self, token: &TokenHash, name: &str, ttl_secs: u64) -> StoreResult<()>;
}

/// Which nodes are alive and how many players each holds.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Publishes this node's number of authenticated connections as its heartbeat:
    /// what the cluster looks like from there.
    async fn beat(&self, node_id: &str, authenticated: usize) -> StoreResult<Beat>;
    /// Withdraws the node at shutdown (it is not counted as dead).
    async fn remove(&self, node_id: &str) -> StoreResult<()>;
    /// Records what operators see of a node (after each heartbeat).
    async fn announce(&self, node: &NodeInfo) -> StoreResult<()>;
    /// The nodes whose facts were recorded in the last [`NODE_INFO_FRESH_SECS`].
    async fn nodes(&self) -> StoreResult<Vec<NodeInfo>>;
}

/// How long a node's recorded facts count as current: a few missed heartbeats.
pub const NODE_INFO_FRESH_SECS: i64 = 10;

/// What operators see of a node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub version: String,
    /// Unix seconds.
    pub started: i64,
    pub players: u64,
    /// `starting`, `ready` or `draining`.
    pub status: String,
    /// `up` or `down`, as the node sees it.
    pub redis: String,
    pub postgres: String,
    /// Unix seconds of the node's last heartbeat.
    pub heartbeat: i64,
}

/// The answer to a heartbeat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Beat {
    /// Every other node with a fresh heartbeat, and its count.
    pub others: Vec<(String, u64)>,
    /// The nodes whose heartbeat went stale (dead, as any node judged it) in the last
    /// [`GONE_KEPT_MS`]; not the ones that withdrew at shutdown.
    pub gone: Vec<String>,
    /// This node had no heartbeat on record: its first beat, or the store lost its
    /// data (a restart without persistence), or others judged it dead. Whatever it
    /// wrote about itself (its routes in the directory) must be written again.
    pub unknown: bool,
}

/// How long a dead node is remembered as such, for cleaning up after it.
pub const GONE_KEPT_MS: u64 = 3_600_000;

/// Who on a node receives a [`BusEvent::Frame`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameTarget {
    /// Every session of the account with this name (as stored).
    Account(String),
    /// One connection, by its id on that node.
    Connection(u64),
    /// One connection, by its id on that node, and no other session of the account: the
    /// frame is a targeted entry of the account's personal stream (`dequeued` to a
    /// connection whose ticket moved), which the account's other opted-in sessions here
    /// only move past.
    ConnectionOnly(u64),
}

/// Where players are: which nodes hold the sessions of an account or of a display
/// name, so a private message goes only to those nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// An account, by its name exactly as stored. Not lower-cased here: which
    /// spellings name one account is PostgreSQL's `lower()` to say (its unique index),
    /// and another lower-casing could make two accounts one route.
    Account(String),
    DisplayName(String),
}

/// What the directory remembers of a name typed as a private message's target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NameLookup {
    /// Not remembered: ask PostgreSQL.
    #[default]
    Unknown,
    NoAccount,
    /// The account's name as stored.
    Account(String),
}

/// The cluster's directory of names.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// In one round trip: which account `name` (a private message's target, as typed)
    /// is known to name, and the nodes holding the account stored with exactly that
    /// spelling (the common case: the sender typed the name as stored).
    async fn account_route(&self, name: &str) -> StoreResult<(NameLookup, Vec<String>)>;
    /// Remembers which account `name` names, if any (a registration says: itself).
    async fn remember_account(&self, name: &str, account: Option<&str>) -> StoreResult<()>;
    /// The nodes holding sessions with this route.
    async fn nodes(&self, route: &Route) -> StoreResult<Vec<String>>;
    async fn join(&self, route: &Route, node_id: &str) -> StoreResult<()>;
    async fn leave(&self, route: &Route, node_id: &str) -> StoreResult<()>;
}

/// What an operator's action asks of each live session of the account
/// (MODERATION.md, "What a player sees").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Moderated {
    /// End the session with the ban's `auth_error`; it stays open, unauthenticated.
    Banned { reason: String, until: Option<i64> },
    /// Refuse chat until then (`None`: the mute is lifted).
    Muted { until: Option<i64> },
    /// Send `kicked`, then close with 1008 `kicked`.
    Kicked { reason: String },
    /// Take the account's name as display name, if it has another.
    NameReset,
    /// End the session with `Invalid or expired token`: every token of the account
    /// was revoked.
    TokensRevoked,
}

/// An event on the cluster bus. Chat: `from` is the sender's display name,
/// `account` its account name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    Global {
        from: String,
        account: String,
        message: String,
        /// Where the frame is in the global stream (absent: not appended, Redis down).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Appended>,
    },
    /// A ready-made frame for the sessions of an account, or for one connection, on
    /// the node it is published to (matchmaking).
    Frame {
        to: FrameTarget,
        text: String,
        /// Where the frame is in the personal stream of `account`, when appended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<(String, Appended)>,
    },
    /// To the sessions of one route: an account (no display name captures its
    /// messages), or a display name that is no account's name.
    Private {
        from: String,
        account: String,
        to: Route,
        message: String,
        /// Where the frame is in the target account's personal stream (absent: the
        /// target is a display name, or Redis was down).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Appended>,
    },
    /// An operator's action, for every session of the account (its name as stored).
    Moderate { account: String, action: Moderated },
    /// Asks every node holding sessions of `account` to describe them to node
    /// `reply_to` ([`BusEvent::Described`]).
    Describe { account: String, reply_to: String, request: u64 },
    /// A node's sessions of the account a [`BusEvent::Describe`] asked about.
    Described { request: u64, node: String, sessions: Vec<SessionInfo> },
}

/// One live session as the node holding it describes it (the admin views).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    pub display_name: String,
    pub address: String,
    /// Unix seconds.
    pub since: i64,
    /// `login`, `token_auth` or `register`.
    pub via: String,
}

/// The cluster-wide message bus: an event published to all reaches every node once;
/// one published to a node reaches that node only.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, event: &BusEvent) -> StoreResult<()>;
    async fn publish_to(&self, node_id: &str, event: &BusEvent) -> StoreResult<()>;
    /// `node_id`'s subscription (events to all, and to it); the stream ends when the
    /// bus connection is lost (subscribe again).
    async fn subscribe(&self, node_id: &str) -> StoreResult<BoxStream<'static, BusEvent>>;
}

/// An entry's id in a resume stream (RESUME.md): Redis's `<ms>-<seq>`, increasing
/// within a stream. `0-0` is before every entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }

    /// The id after this one, at a clock reading of `now_ms` (how Redis makes `*` ids).
    pub fn next(self, now_ms: u64) -> StreamId {
        if now_ms > self.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            StreamId { ms: self.ms, seq: self.seq + 1 }
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StreamId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StreamId::parse(&text).ok_or_else(|| serde::de::Error::custom("not a stream id"))
    }
}

/// Which resume stream: the global one, or an account's personal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOf<'a> {
    Global,
    /// The account's name as stored.
    Personal(&'a str),
}

/// Where an appended frame landed: its id and the id of the entry before it in the
/// same stream (`0-0`: none), so a receiver sees whether it missed one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appended {
    pub pos: StreamId,
    pub prev: StreamId,
}

/// How much history the streams keep (RESUME.md): entries older than `window_ms`
/// and beyond the cap go, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub window_ms: u64,
    pub global_cap: u64,
    pub personal_cap: u64,
}

impl StreamLimits {
    pub fn cap(&self, stream: StreamOf) -> u64 {
        match stream {
            StreamOf::Global => self.global_cap,
            StreamOf::Personal(_) => self.personal_cap,
        }
    }

    /// An idle stream is forgotten this long after its last entry (twice the window:
    /// everything in it is then past the window).
    pub fn idle_secs(&self) -> u64 {
        (self.window_ms * 2).div_ceil(1000).max(1)
    }
}

/// A stream's entries after a position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// In stream order: id and the frame as written (without `pos`).
    pub entries: Vec<(StreamId, String)>,
    /// `false`: entries after the position were dropped (trimmed, past the window).
    pub complete: bool,
}

/// The resume streams (RESUME.md): every pushed frame an opted-in connection can be
/// sent again, per stream, for a window.
#[async_trait]
pub trait Streams: Send + Sync + 'static {
    /// Appends `frame`, trimming the stream to its limits.
    async fn append(&self, stream: StreamOf<'_>, frame: &str, limits: &StreamLimits) -> StoreResult<Appended>;
    /// Global chat in one step (one round trip): takes one message from account
    /// `user_id`'s chat bucket (when `rate` is given), and only if there was one,
    /// appends `frame` to the global stream and publishes `event` to every node with
    /// the appended position (`BusEvent::Global`'s `at`). `None`: the bucket was empty.
    async fn take_append_publish(
        &self,
        user_id: i64,
        rate: Option<ChatRate>,
        frame: &str,
        event: &BusEvent,
        limits: &StreamLimits,
    ) -> StoreResult<Option<Appended>>;
    /// The entries after `after`, up to `upto` included (all when `None`), at most
    /// `limit`; `complete` says whether the stream still holds everything after `after`.
    async fn read_after(
        &self,
        stream: StreamOf<'_>,
        after: StreamId,
        upto: Option<StreamId>,
        limit: u64,
    ) -> StoreResult<History>;
    /// The id of the stream's last entry (`0-0`: none).
    async fn last(&self, stream: StreamOf<'_>) -> StoreResult<StreamId>;
}

/// An account's chat rate: `per_sec` messages a second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatRate {
    pub per_sec: u32,
    pub burst: u32,
}

/// Each account's chat bucket, one for the whole cluster, so an account connected to
/// many nodes chats at its rate once, not once per node (`global_chat` takes from it
/// in the same step that appends and publishes: [`Streams::take_append_publish`]).
#[async_trait]
pub trait ChatBuckets: Send + Sync + 'static {
    /// Takes one message from account `user_id`'s bucket: `false` when it is empty.
    async fn take_message(&self, user_id: i64, rate: ChatRate) -> StoreResult<bool>;
}

/// How password guesses are throttled. Per (subject, client network), where a
/// subject is an account or a typed name no account has (the same rules for both,
/// so the replies tell nothing about which names exist): `free` failures, then each
/// further guess must wait `base_ms` after the last failure, doubling up to
/// `max_ms`; a pair is forgotten `forget_ms` after its last failure (plus any wait it
/// imposed). A client address that logged into the subject within `known_ms` has a
/// pair of its own instead of its network's. Per subject, from all networks
/// together: at most `per_subject` failures per `window_ms`, except from networks
/// that logged into it within `known_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    pub free: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub forget_ms: u64,
    pub per_subject: u64,
    pub window_ms: u64,
    pub known_ms: u64,
}

/// A guess in flight for longer than this is taken to have died with its node.
pub const GUESS_IN_FLIGHT_MS: u64 = 30_000;

impl LoginPolicy {
    /// The wait the `n`th failure imposes on the next guess.
    pub fn wait_after(&self, n: u64) -> u64 {
        if n < u64::from(self.free) {
            return 0;
        }
        let doublings = (n - u64::from(self.free)).min(40) as u32;
        self.base_ms.saturating_mul(1 << doublings).min(self.max_ms)
    }
}

/// Whom a password guess is at, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKey {
    /// `a<account id>`, or `n<digest of a typed name no account has>`.
    pub subject: String,
    /// The client's network (IPv4 /24, IPv6 /48).
    pub network: String,
    /// The client's address (IPv4, IPv6 /64).
    pub address: String,
}

/// Which pair a guess counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    Network,
    /// The client's own address, which logged into the subject before.
    Address,
}

/// Whether a password guess may be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes, counted against that pair: it is reserved until
    /// [`Limits::login_resolved`] says how it went.
    Check(Pair),
    /// Not yet: other guesses of the pair are still being checked, and whether this
    /// one is free depends on how they go. Ask again shortly.
    Wait,
    /// No: the pair must wait, or the subject has reached its cap.
    Refuse,
}

/// How a reserved guess went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Wrong,
    Right,
}

/// A player's place in a matchmaking queue: one per account, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ticket {
    /// The account's name as stored (the ticket's key).
    pub account: String,
    /// The account name as stored (what `match_found` lists).
    pub username: String,
    pub queue: String,
    /// The node and connection holding it.
    pub node: String,
    pub conn: u64,
    /// Place in the queue (first in, first out); kept when the ticket moves.
    #[serde(default)]
    pub seq: u64,
    /// Unix milliseconds.
    pub joined_ms: u64,
    /// Allocation tries already failed for matches this ticket was in.
    #[serde(default)]
    pub tries: u32,
    /// Its connection ended while its match was forming: not put back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left: bool,
    /// Seconds the ticket outlives its connection (`QUEUE_GRACE_SECS`, for a player
    /// who opted into resume; 0: it ends with it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grace_secs: u64,
    /// Its player is away (its connection ended, or its node died): kept until this
    /// unix millisecond for the player to come back, then dropped before any match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_until_ms: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What [`MatchQueue::park`] did with a disconnected player's ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Kept for its grace.
    Kept,
    /// Its match is forming: it cannot wait (left, as today).
    Forming,
    /// No ticket of that connection.
    None,
}

/// What `take` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// The match's tickets, in queue order (empty: not enough players).
    pub tickets: Vec<Ticket>,
    /// Tickets dropped because the node holding them is gone.
    pub dropped: u64,
    /// Players put back in their queues because the node forming their match is gone.
    pub put_back: u64,
    /// Tickets dropped because their player stayed away past their grace.
    pub expired: u64,
}

/// What `join` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    New,
    /// The account already had this place; its earlier holder (node, connection).
    Kept {
        node: String,
        conn: u64,
    },
    /// A match was already formed for the account.
    MatchPending,
    /// The account already formed its `max_matches` in [`MATCH_COUNT_WINDOW_SECS`].
    Limited,
}

/// The window of the per-account match cap (`MAX_MATCHES_PER_HOUR`), from the
/// account's first counted match.
pub const MATCH_COUNT_WINDOW_SECS: u64 = 3600;

/// What a new session of an account may still be sent of its match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joinable {
    None,
    /// A match is being formed for the account: its `match_found` may follow.
    Forming,
    /// The `match_found` of the account's joinable match.
    Found(String),
}

/// What `leave` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    Removed(Ticket),
    NoTicket,
    MatchPending,
}

/// The matchmaking queues, shared by every node; each operation is atomic.
#[async_trait]
pub trait MatchQueue: Send + Sync + 'static {
    /// Queues the account (keeping its place when it already has one in this queue),
    /// unless it already formed `max_matches` (0: no cap) in the window.
    async fn join(&self, ticket: &Ticket, max_matches: u64) -> StoreResult<Joined>;
    /// Removes the account's ticket; only the one held by `holder` (node, connection)
    /// when given.
    async fn leave(&self, account: &str, holder: Option<(&str, u64)>) -> StoreResult<Left>;
    /// The ticket that connection `holder` (node, connection) held is kept for its
    /// grace (`Ticket::grace_secs`) from now: its player went away.
    async fn park(&self, account: &str, holder: (&str, u64)) -> StoreResult<Parked>;
    /// The account's player came back on `holder`: its ticket, unless past its grace,
    /// is held there from now on, at its place. The previous holder, when the ticket
    /// was reclaimed from another connection.
    async fn reclaim(&self, account: &str, holder: (&str, u64)) -> StoreResult<Option<(String, u64)>>;
    /// The account's ticket and its position (1 = next out).
    async fn position(&self, account: &str) -> StoreResult<Option<(Ticket, u64)>>;
    /// Takes the first `size` tickets of `queue`, if there are that many, into match
    /// `match_id` formed by `node`: a forming record that marks their accounts as
    /// having a pending match (for at most `pending_secs`). First drops the tickets
    /// of `gone` nodes (one with a grace is kept that long from the first `take` that
    /// finds its node gone) and of players away past their grace, and puts back, at their places, the players of matches that
    /// `gone` nodes were forming.
    async fn take(
        &self,
        queue: &str,
        size: usize,
        match_id: &str,
        node: &str,
        pending_secs: u64,
        gone: &[String],
    ) -> StoreResult<Taken>;
    /// Puts the players of forming match `match_id` back at their places, counting one
    /// more failed try on each ticket; returns how many went back (not those whose
    /// connection ended meanwhile, nor those whose tickets reach `max_tries`: those
    /// tickets end here).
    async fn put_back(&self, match_id: &str, max_tries: u32) -> StoreResult<u64>;
    /// Forming match `match_id` got game server `server`: `frames` (account, its
    /// `match_found`) are kept for reconnecting players for `joinable_secs` (their
    /// accounts keep a pending match as long), as is the match (and `server`'s
    /// lease) unless its game server confirms it; each account counts one more match
    /// (`Joined::Limited`). `false` when the match is no longer forming (its players
    /// were put back meanwhile): it must not be announced.
    async fn start(
        &self,
        match_id: &str,
        server: &str,
        frames: &[(String, String)],
        joinable_secs: u64,
    ) -> StoreResult<bool>;
    /// The `match_found` of the account's match while it is joinable, or whether one
    /// is being formed.
    async fn joinable(&self, account: &str) -> StoreResult<Joinable> {
        Ok(self.joinable_many(&[account]).await?.pop().unwrap_or(Joinable::None))
    }
    /// [`joinable`](MatchQueue::joinable) for each account, in their order, in one read
    /// (one for each new session would cost every reconnect a round trip).
    async fn joinable_many(&self, accounts: &[&str]) -> StoreResult<Vec<Joinable>>;
    /// The game server confirmed started match `match_id`: it and its server's lease
    /// (if it holds it) are kept `secs` from now. `false` when no such match is known.
    async fn confirm(&self, match_id: &str, secs: u64) -> StoreResult<bool>;
    /// The started match holding static server `server`'s lease: its id and accounts.
    async fn current(&self, server: &str) -> StoreResult<Option<(String, Vec<String>)>>;
    /// Match `match_id` is over: its game-server lease is freed, its `match_found` no
    /// longer sent again and its players may queue again. `false` when no such match is known.
    async fn end(&self, match_id: &str) -> StoreResult<bool>;
    /// Tickets waiting in `queue`.
    async fn length(&self, queue: &str) -> StoreResult<u64>;
    /// Leases game server `server` to `match_id` for `secs`, unless another match holds it.
    async fn lease(&self, server: &str, match_id: &str, secs: u64) -> StoreResult<bool>;
    /// Frees `server`'s lease if `match_id` holds it (a match that never started).
    async fn unlease(&self, server: &str, match_id: &str) -> StoreResult<()>;
    /// What operators see of each of `queues`, with how many of the static pool's
    /// `servers` are leased (a view: not one atomic read).
    async fn overview(&self, queues: &[String], servers: &[String]) -> StoreResult<Vec<QueueOverview>>;
}

/// One queue as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOverview {
    pub queue: String,
    /// Tickets waiting.
    pub waiting: u64,
    /// When the ticket first in line joined (unix ms).
    pub oldest_joined_ms: Option<u64>,
    /// Matches of this queue being formed (waiting for a game server).
    pub forming: u64,
    /// Game servers of the static pool leased (the same for every queue: one pool).
    pub leased: u64,
}

/// Counters for rate limits that hold across nodes.
#[async_trait]
pub trait Limits: Send + Sync + 'static {
    /// Decides, atomically, whether one password guess may be checked
    /// ([`LoginPolicy`]); a guess in flight counts as a failure for the decisions
    /// made meanwhile only until it resolves.
    async fn login_admit(&self, key: &LoginKey, policy: &LoginPolicy) -> StoreResult<Admit>;
    /// Settles a guess [`login_admit`](Self::login_admit) reserved on `pair`: a wrong
    /// one counts against the pair and the subject; a right one forgives the pair
    /// and remembers the client's network and address as the subject's.
    async fn login_resolved(&self, key: &LoginKey, pair: Pair, how: Resolved, policy: &LoginPolicy) -> StoreResult<()>;
    /// Counts one event against `key` (the window starts with the first) and returns
    /// the count including it: atomic, so concurrent callers each see their own number.
    async fn hit(&self, key: &str, window_secs: u64) -> StoreResult<u64>;
    /// Wrong passwords counted against `subject` in its current window.
    async fn failed_logins(&self, subject: &str) -> StoreResult<u64>;
}

/// Every store a node uses, by role.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub moderation: Arc<dyn ModerationStore>,
    pub tokens: Arc<dyn TokenCache>,
    pub sessions: Arc<dyn Sessions>,
    pub presence: Arc<dyn Presence>,
    pub directory: Arc<dyn Directory>,
    pub bus: Arc<dyn Bus>,
    pub chat: Arc<dyn ChatBuckets>,
    pub limits: Arc<dyn Limits>,
    pub queue: Arc<dyn MatchQueue>,
    pub streams: Arc<dyn Streams>,
    /// Health of the shared-state store behind the Redis roles.
    pub shared: Arc<dyn Health>,
    /// Operators of the admin API and their sessions (PostgreSQL).
    pub operators: Arc<dyn admin::Operators>,
    /// The append-only audit log (PostgreSQL).
    pub audit: Arc<dyn admin::Audit>,
}

impl Stores {
    /// PostgreSQL and Redis as configured (connections are made lazily). While Redis is
    /// unreachable, limits are counted by each node alone.
    pub fn connect(config: &Config) -> Result<Stores, StoreError> {
        let url = config.database_url();
        let migration_url = config.db_migration_url.as_deref().unwrap_or(&url);
        let users = Arc::new(postgres::PgStore::connect(&url, migration_url, config.db_pool_size)?);
        let shared = Arc::new(redis::RedisStore::connect_with_ca(
            &config.redis_url,
            config.redis_ca_file.as_deref(),
            &config.redis_key_prefix,
            config.redis_pool_size,
        )?);
        let mut stores = Stores::from_parts(users.clone(), shared.clone(), users.clone(), users);
        stores.limits = Arc::new(WithLocalFallback { shared, local: memory::MemoryShared::default() });
        Ok(stores)
    }

    /// Everything in this process's memory: one node, no durability (tests).
    pub fn in_memory() -> (Stores, Arc<memory::MemoryShared>) {
        let shared = Arc::new(memory::MemoryShared::default());
        (Stores::in_memory_with(Arc::new(memory::MemoryUsers::default()), shared.clone()), shared)
    }

    /// The stores of one of several nodes in this process that form a cluster: each
    /// node gets the same `users` and `shared` (tests).
    pub fn in_memory_with(users: Arc<memory::MemoryUsers>, shared: Arc<memory::MemoryShared>) -> Stores {
        let admin = Arc::new(MemoryAdmin::default());
        Stores::from_parts(users, shared, admin.clone(), admin)
    }

    fn from_parts<U, S>(
        users: Arc<U>,
        shared: Arc<S>,
        operators: Arc<dyn admin::Operators>,
        audit: Arc<dyn admin::Audit>,
    ) -> Stores
    where
        U: UserStore + ModerationStore,
        S: TokenCache + Sessions + Presence + Directory + Bus + ChatBuckets + Limits + MatchQueue + Streams + Health,
    {
        Stores {
            moderation: users.clone(),
            users,
            tokens: shared.clone(),
            sessions: shared.clone(),
            presence: shared.clone(),
            directory: shared.clone(),
            bus: shared.clone(),
            chat: shared.clone(),
            limits: shared.clone(),
            queue: shared.clone(),
            streams: shared.clone(),
            shared,
            operators,
            audit,
        }
    }
}

/// Shared limits, counted in this node's memory while the shared store fails. The
/// node's own guesses and hits are counted locally all along (the shared store's
/// answers decide), so a fallback continues from them instead of from zero: an
/// outage gives no guesser a fresh set of free guesses on this node.
struct WithLocalFallback<S> {
    shared: Arc<S>,
    local: memory::MemoryShared,
}

#[async_trait]
impl<S: Limits> Limits for WithLocalFallback<S> {
    async fn login_admit(&self, key: &LoginKey, policy: &LoginPolicy) -> StoreResult<Admit> {
        match self.shared.login_admit(key, policy).await {
            Err(_) => self.local.login_admit(key, policy).await,
            Ok(admit) => {
                if let Admit::Check(pair) = admit {
                    self.local.note_admitted(key, pair, policy);
                }
                Ok(admit)
            }
        }
    }

    async fn login_resolved(&self, key: &LoginKey, pair: Pair, how: Resolved, policy: &LoginPolicy) -> StoreResult<()> {
        let local = self.local.login_resolved(key, pair, how, policy).await;
        match self.shared.login_resolved(key, pair, how, policy).await {
            Err(_) => local,
            ok => ok,
        }
    }

    async fn hit(&self, key: &str, window_secs: u64) -> StoreResult<u64> {
        let local = self.local.hit(key, window_secs).await;
        match self.shared.hit(key, window_secs).await {
            Err(_) => local,
            ok => ok,
        }
    }

    async fn failed_logins(&self, subject: &str) -> StoreResult<u64> {
        self.shared.failed_logins(subject).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A shared store that stops answering on demand.
    #[derive(Default)]
    struct Flaky {
        store: memory::MemoryShared,
        down: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> StoreResult<()> {
            if self.down.load(Ordering::Relaxed) {
                Err(StoreError::RedisUnreachable)
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Limits for Flaky {
        async fn login_admit(&self, key: &LoginKey, policy: &LoginPolicy) -> StoreResult<Admit> {
            self.check()?;
            self.store.login_admit(key, policy).await
        }

        async fn login_resolved(
            &self,
            key: &LoginKey,
            pair: Pair,
            how: Resolved,
            policy: &LoginPolicy,
        ) -> StoreResult<()> {
            self.check()?;
            self.store.login_resolved(key, pair, how, policy).await
        }

        async fn hit(&self, key: &str, window_secs: u64) -> StoreResult<u64> {
            self.check()?;
            self.store.hit(key, window_secs).await
        }

        async fn failed_logins(&self, subject: &str) -> StoreResult<u64> {
            self.check()?;
            self.store.failed_logins(subject).await
        }
    }

    /// The guesses and hits a node made while the shared store answered still count
    /// when it stops: an outage hands no guesser a fresh set of free guesses.
    #[tokio::test]
    async fn a_fallback_continues_from_the_nodes_own_guesses() {
        let minute = 60_000;
        let policy = LoginPolicy {
            free: 3,
            base_ms: minute,
            max_ms: 10 * minute,
            forget_ms: 10 * minute,
            per_subject: 100,
            window_ms: 10 * minute,
            known_ms: 10 * minute,
        };
        let key = LoginKey { subject: "a1".into(), network: "10.0.0.0/24".into(), address: "10.0.0.1".into() };
        let shared = Arc::new(Flaky::default());
        let limits = WithLocalFallback { shared: shared.clone(), local: memory::MemoryShared::default() };
        for _ in 0..3 {
            let Admit::Check(pair) = limits.login_admit(&key, &policy).await.unwrap() else {
                panic!("a free guess was not admitted");
            };
            limits.login_resolved(&key, pair, Resolved::Wrong, &policy).await.unwrap();
        }
        assert_eq!(limits.hit("register:10.0.0.1", 60).await.unwrap(), 1);
        assert_eq!(limits.login_admit(&key, &policy).await.unwrap(), Admit::Refuse);

        shared.down.store(true, Ordering::Relaxed);
        assert_eq!(limits.login_admit(&key, &policy).await.unwrap(), Admit::Refuse, "the outage gave fresh guesses");
        assert_eq!(limits.hit("register:10.0.0.1", 60).await.unwrap(), 2);
        // Another client still gets its own free guesses.
        let other = LoginKey { network: "10.9.9.0/24".into(), address: "10.9.9.9".into(), ..key.clone() };
        assert!(matches!(limits.login_admit(&other, &policy).await.unwrap(), Admit::Check(_)));
    }
}
