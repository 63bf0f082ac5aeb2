//! Redis: the token-validity cache, sessions, presence, the directory, rate limits,
//! chat buckets, the chat bus and the matchmaking queue.
//!
//! By concern: `conn` the topology (one server, Sentinel, Cluster), connecting, the
//! circuit breaker and the version check; `lane` the fast lane for the commands of
//! every `token_auth` and `set_username`; `roles` the token cache, sessions,
//! presence, the directory, limits and chat buckets; `bus` the chat bus; `queue`
//! matchmaking. Every key's name is made here, below the schema; every Lua script is a
//! file in `lua/`, and every key a script touches is passed in `KEYS` (checked by
//! `lua_keys`), the matchmaking keys named from data too (see `{mm}` below).
//!
//! Key schema (every key starts with the configured prefix, `ocps:` by default). Keys
//! one operation touches together share a `{hash tag}`, ready for Redis Cluster:
//! - `{t:<sha256 hex>}:tok`  token cache: `"<user id> <expires unix> <username>"`, then
//!   for an account with a ban or mute a line of its standing as JSON; or `-` for a
//!   token PostgreSQL does not know (short TTL); never longer than the token lives
//! - `{t:<sha256 hex>}:sess` the session's display name, for the token's lifetime
//! - `{presence}:beats`      sorted set: node id → last heartbeat (ms, Redis clock)
//!   (`lua/beat.lua`)
//! - `{presence}:counts`     hash: node id → authenticated connections
//! - `{presence}:gone`       sorted set: node id → when its heartbeat was found stale
//! - `{presence}:nodes`      hash: node id → what operators see of it (`store::NodeInfo`
//!   JSON), written after each heartbeat; stale entries dropped by the next reader
//! - `{n:<name>}:acct`       the account a name typed as a private message's target
//!   names: its stored spelling, or `-` for none (an hour; a minute for none)
//! - `{n:<account name>}:nodes` set: the nodes holding that account's sessions (the
//!   name exactly as stored: PostgreSQL's `lower()` alone decides which spellings
//!   are one account)
//! - `{d:<display name>}:nodes` set: the nodes holding sessions with that display name
//! - `{rl:<key>}`            rate-limit counter, per window (registrations per address)
//! - `{login:<subject>}:net:<network>` hash: one (subject, network) pair's failed
//!   guesses, when the next may come, guesses in flight (`lua/login.lua`); a
//!   subject is `a<account id>` or `n<sha256 of a typed name no account has>`
//! - `{login:<subject>}:addr:<address>` hash: the same for one client address that
//!   logged into the subject before (it is not held back by its network's pair)
//! - `{login:<subject>}:failures` the subject's failures from every network, per window
//! - `{login:<subject>}:known` hash: `n:<network>` / `a:<address>` → when it last
//!   logged into the subject
//! - `{<prefix>chat}:rate:<user id>` an account's chat bucket: when (ms, Redis clock)
//!   it is full again; gone once full (`lua/chat_rate.lua`). Tagged with the global
//!   chat channel's whole name, so it lives in that channel's slot (below)
//! - `{<prefix>chat}:stream` the global resume stream (RESUME.md): entries `p` (the
//!   id of the entry before) and `f` (the `global_chat` frame), at most
//!   `RESUME_GLOBAL_HISTORY`, none older than `RESUME_WINDOW_SECS`; in the global chat
//!   channel's slot, so the one script (`lua/stream_append.lua`) takes the chat
//!   bucket, appends and publishes
//! - `{p:<account name>}:stream` the account's personal resume stream (`private_chat`,
//!   `match_found`, `match_error`, `dequeued`: the `f` of a `dequeued`, which is for
//!   one connection, starts with `>["<node>",<conn>]`, `outbox::targeted_entry`), at
//!   most `RESUME_PERSONAL_HISTORY`; both streams expire twice the window after their
//!   last entry
//! - `{mm}:tickets`          hash: account → its ticket (JSON)
//! - `{mm}:q:<queue>`        sorted set: account → place in the queue
//! - `{mm}:seq`              counter: places handed out
//! - `{mm}:pending:<account>` the match being formed (then joinable) for the account
//! - `{mm}:forming`          hash: match id → `{node, at, tickets}` while it forms
//! - `{mm}:found:<account>`  the account's `match_found` while its match is joinable
//! - `{mm}:match:<id>`       a started match: `{server, accounts}` (and `confirmed`
//!   once its game server confirmed it)
//! - `{mm}:lease:<server>`   the match holding a game server
//! - `{mm}:formed:<account>` counter: the matches the account started in the window
//! - channel `chat`          the chat bus to every node (JSON [`BusEvent`](super::BusEvent)s)
//! - channel `chat:<node id>` private messages routed to one node
//!
//! Matchmaking keys all carry one hash tag, `{mm}` (one slot: every script,
//! `lua/mm_*.lua`, is atomic). Some of the keys a script touches are named from data
//! (the queue of an account's ticket, the accounts and queues of a match, a match's
//! game server, the match holding a lease): `queue.rs` names them from a hint (data
//! read before, or a previous attempt's answer) and passes the hint too; the script
//! reads that data again and, if it would need other keys, changes nothing and
//! answers the fresh hint, to be run again with it.
//!
//! Topologies (`REDIS_URL`, see [`RedisTarget`]): one server, a master found through
//! Sentinel, or a Redis Cluster. All three share one connection type ([`Conn`]),
//! so every command is written once. On Cluster no command or pipeline spans
//! two slots (the hash tags above), and the bus uses sharded pub/sub (`SPUBLISH`,
//! `SSUBSCRIBE`), never `PUBLISH`, which a cluster copies to every shard.
//!
//! `global_chat` is one script (`lua/stream_append.lua`) that takes from the sender's
//! chat bucket and, if it had a message left, appends to the global stream and
//! publishes: on Cluster a script may touch one slot only, a shard channel included,
//! hence every chat bucket and the global stream in the global channel's slot.
//! That shard carries every global message already; a private message's check is one
//! more small script there. (A `REDIS_KEY_PREFIX` whose own braces move the bucket to
//! another slot makes it the script, then the publish: two round trips.)

mod bus;
mod conn;
mod lane;
#[cfg(test)]
mod lua_keys;
mod queue;
mod roles;
mod streams;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::RwLock;
use std::time::Instant;

use redis::Script;

use super::{LoginKey, Route};
use crate::auth::TokenHash;
use crate::config::RedisTarget;
use crate::error::StoreError;
use crate::metrics as m;
pub use conn::Conn;
use conn::{Lane, Topology};
pub use roles::PRESENCE_STALE_MS;

pub struct RedisStore {
    topology: Topology,
    /// One connection every task shares: concurrent commands are pipelined on it,
    /// one round trip each (on Cluster, one per shard). Replaced when it breaks.
    shared: RwLock<Option<Conn>>,
    /// The connection `token_auth`, `set_username` and the directory use (`lane.rs`):
    /// one server or a Sentinel master over plain TCP; `None` on Cluster and over TLS.
    lane: Option<Lane>,
    prefix: String,
    cluster: bool,
    beat: Script,
    login: Script,
    chat_rate: Script,
    stream_append: Script,
    mm_hints: queue::QueueHints,
    down: AtomicBool,
    /// While down: milliseconds since `epoch` at which the next probe may go out.
    next_probe_ms: AtomicU64,
    epoch: Instant,
}

impl RedisStore {
    /// `url` is any `REDIS_URL` form ([`RedisTarget`]); nothing connects until first use.
    pub fn connect(url: &str, prefix: &str, max_size: usize) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with_ca(url, None, prefix, max_size)
    }

    /// Like [`connect`](Self::connect); a TLS `url` trusts the CAs in `ca_file` (PEM)
    /// instead of the system's.
    pub fn connect_with_ca(
        url: &str,
        ca_file: Option<&std::path::Path>,
        prefix: &str,
        max_size: usize,
    ) -> Result<RedisStore, StoreError> {
        let target = RedisTarget::parse(url).map_err(|e| StoreError::Other(format!("REDIS_URL: {e}")))?;
        let plain_master = match &target {
            RedisTarget::Sentinel { master_settings, .. } => !master_settings.starts_with("rediss://"),
            _ => true,
        };
        let topology = Topology::new(target, ca_file, max_size)?;
        let lane = match &topology {
            Topology::Single { client, .. } => {
                matches!(client.get_connection_info().addr(), redis::ConnectionAddr::Tcp(..))
            }
            Topology::Sentinel(_) => plain_master,
            Topology::Cluster { .. } => false,
        };
        m::redis_degraded(false);
        Ok(RedisStore {
            cluster: matches!(topology, Topology::Cluster { .. }),
            topology,
            shared: RwLock::new(None),
            lane: lane.then(Lane::default),
            prefix: prefix.to_owned(),
            beat: Script::new(include_str!("lua/beat.lua")),
            login: Script::new(include_str!("lua/login.lua")),
            chat_rate: Script::new(include_str!("lua/chat_rate.lua")),
            stream_append: Script::new(include_str!("lua/stream_append.lua")),
            mm_hints: queue::QueueHints::default(),
            down: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }
}

/// Every key's and channel's name (the schema above).
impl RedisStore {
    fn chat_channel(&self) -> String {
        format!("{}chat", self.prefix)
    }

    fn node_channel(&self, node_id: &str) -> String {
        format!("{}chat:{node_id}", self.prefix)
    }

    /// An account's chat bucket, in the global chat channel's slot.
    fn chat_rate_key(&self, user_id: i64) -> String {
        format!("{p}{{{p}chat}}:rate:{user_id}", p = self.prefix)
    }

    /// A resume stream: the global one in the global chat channel's slot (beside the
    /// chat buckets), a personal one under its account's tag.
    fn stream_key(&self, stream: super::StreamOf) -> String {
        match stream {
            super::StreamOf::Global => format!("{p}{{{p}chat}}:stream", p = self.prefix),
            super::StreamOf::Personal(account) => format!("{}{{p:{account}}}:stream", self.prefix),
        }
    }

    /// An account name's keys: its "is an account" cache entry and its route.
    fn account_keys(&self, name: &str) -> (String, String) {
        (format!("{}{{n:{name}}}:acct", self.prefix), format!("{}{{n:{name}}}:nodes", self.prefix))
    }

    fn route_key(&self, route: &Route) -> String {
        match route {
            Route::Account(name) => self.account_keys(name).1,
            Route::DisplayName(name) => format!("{}{{d:{name}}}:nodes", self.prefix),
        }
    }

    /// A token's two keys, in one buffer (`token_auth` reads both on every call): on
    /// the stack for prefixes up to 20 bytes.
    fn token_keys(&self, token: &TokenHash) -> TokenKeys {
        let tag_len = self.prefix.len() + "{t:}".len() + 64;
        let tok = tag_len + ":tok".len();
        let mut both = TokenKeyBytes::from_elem(0, tok + tag_len + ":sess".len());
        let (first, second) = both.split_at_mut(tok);
        let hex = token.hex();
        // Each key: prefix, `{t:` (3 bytes), 64 hex digits, `}`, suffix. Written at
        // fixed offsets: a generic copy loop cost ~400 instructions more (callgrind).
        for (key, suffix) in [(first, &b":tok"[..]), (second, b":sess")] {
            let (prefix, rest) = key.split_at_mut(self.prefix.len());
            prefix.copy_from_slice(self.prefix.as_bytes());
            rest[..3].copy_from_slice(b"{t:");
            rest[3..67].copy_from_slice(&hex);
            rest[67] = b'}';
            rest[68..].copy_from_slice(suffix);
        }
        TokenKeys { both, split: tok }
    }

    fn presence_keys(&self) -> (String, String, String) {
        let key = |name: &str| format!("{}{{presence}}:{name}", self.prefix);
        (key("beats"), key("counts"), key("gone"))
    }

    /// What operators see of each live node (`store::NodeInfo`), by node id.
    fn nodes_key(&self) -> String {
        format!("{}{{presence}}:nodes", self.prefix)
    }

    fn limit_key(&self, key: &str) -> String {
        format!("{}{{rl:{key}}}", self.prefix)
    }

    /// One guess's login keys, all under its subject's tag: the network's pair, the
    /// address's pair, the subject's failures, the subject's known clients.
    fn login_keys(&self, login: &LoginKey) -> [String; 4] {
        let key = |part: &str| format!("{}{{login:{}}}:{part}", self.prefix, login.subject);
        [key(&format!("net:{}", login.network)), key(&format!("addr:{}", login.address)), key("failures"), key("known")]
    }

    /// A matchmaking key: `rest` under the `{mm}` tag.
    fn mm_key(&self, rest: &str) -> String {
        format!("{}{{mm}}:{rest}", self.prefix)
    }
}

/// Command `name` with room for `args` arguments of `bytes` bytes in all (a number
/// counts 20): written without growing a buffer, on the paths every message takes.
fn sized_cmd(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(args + 1, name.len() + bytes);
    cmd.arg(name);
    cmd
}

/// Room for both of a token's keys with a prefix of up to 20 bytes (the default,
/// `ocps:`, takes 155 bytes in all).
type TokenKeyBytes = smallvec::SmallVec<[u8; 192]>;

/// A token's cache entry key (`…:tok`) and session key (`…:sess`), in one buffer.
struct TokenKeys {
    both: TokenKeyBytes,
    split: usize,
}

impl TokenKeys {
    fn tok(&self) -> &[u8] {
        &self.both[..self.split]
    }

    fn sess(&self) -> &[u8] {
        &self.both[self.split..]
    }
}
