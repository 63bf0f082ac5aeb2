//! Redis: the token-validity cache, sessions, presence, rate-limit counters, chat bus.
//!
//! Key schema (every key starts with the configured prefix, `ocps:` by default). Keys
//! one operation touches together share a `{hash tag}`, ready for Redis Cluster:
//! - `{t:<sha256 hex>}:tok`  token cache: `"<user id> <expires unix> <username>"`, or `-` for
//!   a token PostgreSQL does not know (short TTL); never longer than the token lives
//! - `{t:<sha256 hex>}:sess` the session's display name, for the token's lifetime
//! - `{presence}:beats`      sorted set: node id → last heartbeat (ms, Redis clock)
//! - `{presence}:counts`     hash: node id → authenticated connections
//! - `{presence}:gone`       sorted set: node id → when its heartbeat was found stale
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
//! - `{login:<subject>}:failures` the subject's failures from every network, per window
//! - `{login:<subject>}:known` hash: network → when it last logged into the subject
//! - `{<prefix>chat}:rate:<user id>` an account's chat bucket: when (ms, Redis clock)
//!   it is full again; gone once full. Tagged with the global chat channel's whole
//!   name, so it lives in that channel's slot (below)
//! - channel `chat`          the chat bus to every node (JSON [`BusEvent`]s)
//! - channel `chat:<node id>` private messages routed to one node
//!
//! Topologies (`REDIS_URL`, see [`RedisTarget`]): one server, a master found through
//! Sentinel, or a Redis Cluster. All three share one connection type ([`Conn`]),
//! so every command below is written once. On Cluster no command or pipeline spans
//! two slots (the hash tags above), and the bus uses sharded pub/sub (`SPUBLISH`,
//! `SSUBSCRIBE`), never `PUBLISH`, which a cluster copies to every shard.
//!
//! `global_chat` is one script that takes from the sender's chat bucket and, if it
//! had a message left, publishes: on Cluster a script may touch one slot only, a
//! shard channel included, hence every chat bucket in the global channel's slot.
//! That shard carries every global message already; a private message's check is one
//! more small script there. (A `REDIS_KEY_PREFIX` whose own braces move the bucket to
//! another slot makes it the script, then the publish: two round trips.)

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncCommands, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushKind, RedisFuture, RedisResult, Script,
    TlsCertificates, TlsMode, Value,
};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::{
    seconds_until, Admit, Beat, Bus, BusEvent, CacheLookup, ChatBuckets, ChatRate, Directory, Health, Joinable, Joined,
    Left, Limits, LoginPolicy, MatchQueue, NameLookup, Presence, Resolved, Route, Sessions, StoreResult, Taken, Ticket,
    TokenCache, TokenRecord, GONE_KEPT_MS, GUESS_IN_FLIGHT_MS, MATCH_COUNT_WINDOW_SECS,
};
use crate::auth::TokenHash;
use crate::config::RedisTarget;
use crate::error::StoreError;
use crate::metrics as m;

/// A node whose heartbeat is older than this stops counting (a few missed heartbeats).
pub const PRESENCE_STALE_MS: u64 = 5_000;
/// Longest the node waits for a Redis connection before treating Redis as unreachable.
const TIMEOUT: Duration = Duration::from_secs(1);
/// While Redis is unreachable, calls fail at once instead of each waiting out a
/// timeout; one call per this interval probes whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A node's heartbeat: records its count and, when its own previous heartbeat is
/// fresh (it has been beating all along, so its judgement is current), moves the
/// nodes whose heartbeat is stale to the gone set. A node back from an outage of its
/// own first beats once more before judging others, who may be coming back too.
/// Returns whether this node was on record, the counts, and the gone set (trimmed
/// to its last `GONE_KEPT_MS` and 1,000 nodes whenever it grows). A steady beat is
/// 7 commands.
/// KEYS: beats, counts, gone. ARGV: node id, count, stale ms, gone kept ms.
const BEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale_ms = tonumber(ARGV[3])
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if previous and now - tonumber(previous) < stale_ms then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - stale_ms)
  for _, node in ipairs(stale) do
    redis.call('ZREM', KEYS[1], node)
    redis.call('HDEL', KEYS[2], node)
    redis.call('ZADD', KEYS[3], now, node)
  end
  if #stale > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1001)
  end
else
  -- Back (or new): not gone, whatever others judged.
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return {previous and 1 or 0, redis.call('HGETALL', KEYS[2]), redis.call('ZRANGE', KEYS[3], 0, -1)}
";

/// A connection to whichever topology is configured: commands, pipelines and
/// scripts run on it unchanged (the cluster client routes each by its key's slot).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How connections are made, per topology.
enum Topology {
    /// One server: a deadpool pool makes and health-checks connections (its gauges
    /// are exported); the bus subscribes through `client`.
    Single { pool: Pool, client: redis::Client },
    /// Each new connection (shared or bus) first asks the sentinels for the current
    /// master, so a broken connection is replaced by one to the new master.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// The cluster client follows MOVED/ASK and failovers by itself. `certs`: the
    /// CA to trust over TLS (`rediss+cluster://` with REDIS_CA_FILE).
    Cluster { nodes: Vec<redis::ConnectionInfo>, certs: Option<TlsCertificates> },
}

impl Topology {
    fn cluster_builder(nodes: &[redis::ConnectionInfo], certs: &Option<TlsCertificates>) -> ClusterClientBuilder {
        let builder = ClusterClient::builder(nodes.to_vec());
        let builder = match certs {
            Some(certs) => builder.certs(certs.clone()),
            None => builder,
        };
        builder
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(TIMEOUT)
            .response_timeout(Duration::from_millis(500))
            .overall_response_timeout(Some(TIMEOUT))
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(200)
    }

    /// The current master's client (Sentinel), asked of the sentinels.
    async fn master(sentinel: &tokio::sync::Mutex<SentinelClient>) -> StoreResult<redis::Client> {
        let mut sentinel = sentinel.lock().await;
        match tokio::time::timeout(TIMEOUT * 2, sentinel.async_get_client()).await {
            Ok(client) => Ok(client?),
            Err(_) => Err(StoreError::RedisUnreachable),
        }
    }
}

pub struct RedisStore {
    topology: Topology,
    /// One connection every task shares: concurrent commands are pipelined on it,
    /// one round trip each (on Cluster, one per shard). Replaced when it breaks.
    shared: RwLock<Option<Conn>>,
    prefix: String,
    cluster: bool,
    beat: Script,
    login: Script,
    chat_rate: Script,
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
        let certs = if target.tls() { crate::tls::redis_certs(ca_file).map_err(StoreError::Other)? } else { None };
        // A `rediss://` URL with the CA's certificates attached (else the system roots).
        let info = |url: &str| -> RedisResult<redis::ConnectionInfo> {
            match &certs {
                Some(certs) => Ok(redis::Client::build_with_tls(url, certs.clone())?.get_connection_info().clone()),
                None => url.into_connection_info(),
            }
        };
        let topology = match target {
            RedisTarget::Single(url) => {
                let info = info(&url)?;
                let pool = Pool::builder(Manager::new(info.clone())?)
                    .max_size(max_size)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(TIMEOUT))
                    .create_timeout(Some(TIMEOUT))
                    .recycle_timeout(Some(TIMEOUT))
                    .build()
                    .map_err(|e| StoreError::Other(format!("Redis pool: {e}")))?;
                Topology::Single { pool, client: redis::Client::open(info)? }
            }
            RedisTarget::Sentinel { sentinels, master_name, master_settings } => {
                let settings = master_settings.as_str().into_connection_info()?.redis_settings().clone();
                let client = if master_settings.starts_with("rediss://") {
                    // TLS to the sentinels and to the master they name, both trusting the CA.
                    let addrs = sentinels
                        .iter()
                        .map(|s| s.as_str().into_connection_info().map(|i| i.addr().clone()))
                        .collect::<RedisResult<Vec<_>>>()?;
                    let mut builder = SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)?
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_db(settings.db());
                    if let Some(user) = settings.username() {
                        builder = builder.set_client_to_redis_username(user);
                    }
                    if let Some(password) = settings.password() {
                        builder = builder.set_client_to_redis_password(password);
                    }
                    if let Some(certs) = &certs {
                        builder = builder
                            .set_client_to_sentinel_certificates(certs.clone())
                            .set_client_to_redis_certificates(certs.clone());
                    }
                    builder.build()?
                } else {
                    let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
                    SentinelClient::build(sentinels, master_name, Some(node), SentinelServerType::Master)?
                };
                Topology::Sentinel(tokio::sync::Mutex::new(client))
            }
            RedisTarget::Cluster { nodes } => {
                let nodes = nodes.iter().map(|n| n.as_str().into_connection_info()).collect::<RedisResult<Vec<_>>>()?;
                Topology::cluster_builder(&nodes, &certs).build()?;
                Topology::Cluster { nodes, certs }
            }
        };
        m::redis_degraded(false);
        Ok(RedisStore {
            cluster: matches!(topology, Topology::Cluster { .. }),
            topology,
            shared: RwLock::new(None),
            prefix: prefix.to_owned(),
            beat: Script::new(BEAT),
            login: Script::new(include_str!("lua/login.lua")),
            chat_rate: Script::new(include_str!("lua/chat_rate.lua")),
            down: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn chat_channel(&self) -> String {
        format!("{}chat", self.prefix)
    }

    /// An account's chat bucket, in the global chat channel's slot.
    fn chat_rate_key(&self, user_id: i64) -> String {
        format!("{p}{{{p}chat}}:rate:{user_id}", p = self.prefix)
    }

    /// `SPUBLISH` on Cluster (only the channel's shard carries it), `PUBLISH` elsewhere.
    fn publish_command(&self) -> &'static str {
        if self.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn node_channel(&self, node_id: &str) -> String {
        format!("{}chat:{node_id}", self.prefix)
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

    fn token_keys(&self, token: &TokenHash) -> (String, String) {
        let mut tok = String::with_capacity(self.prefix.len() + 64 + 9);
        tok.push_str(&self.prefix);
        tok.push_str("{t:");
        token.push_hex(&mut tok);
        tok.push('}');
        let mut sess = tok.clone();
        tok.push_str(":tok");
        sess.push_str(":sess");
        (tok, sess)
    }

    fn presence_keys(&self) -> (String, String, String) {
        let key = |name: &str| format!("{}{{presence}}:{name}", self.prefix);
        (key("beats"), key("counts"), key("gone"))
    }

    fn limit_key(&self, key: &str) -> String {
        format!("{}{{rl:{key}}}", self.prefix)
    }

    /// `login.lua` for one (subject, network) pair: its keys share the subject's tag.
    fn login_invocation(
        &self,
        subject: &str,
        network: &str,
        op: &str,
        policy: &LoginPolicy,
    ) -> redis::ScriptInvocation<'_> {
        let key = |part: &str| format!("{}{{login:{subject}}}:{part}", self.prefix);
        let mut inv = self.login.key(key(&format!("net:{network}")));
        inv.key(key("failures")).key(key("known")).arg(op).arg(network);
        inv.arg(policy.free).arg(policy.base_ms).arg(policy.max_ms).arg(policy.forget_ms);
        inv.arg(policy.per_subject).arg(policy.window_ms).arg(policy.known_ms).arg(GUESS_IN_FLIGHT_MS);
        inv
    }

    async fn connection(&self) -> StoreResult<Conn> {
        if let Some(conn) = self.shared.read().unwrap().as_ref() {
            return Ok(conn.clone());
        }
        let mut fresh = match &self.topology {
            Topology::Single { pool, .. } => Conn::Single(deadpool_redis::Connection::take(pool.get().await?)),
            Topology::Sentinel(sentinel) => {
                let master = Topology::master(sentinel).await?;
                Conn::Single(master.get_multiplexed_async_connection().await?)
            }
            Topology::Cluster { nodes, certs } => {
                let client = Topology::cluster_builder(nodes, certs).build()?;
                match tokio::time::timeout(TIMEOUT * 2, client.get_async_connection()).await {
                    Ok(conn) => Conn::Cluster(conn?),
                    Err(_) => return Err(StoreError::RedisUnreachable),
                }
            }
        };
        check_version(&mut fresh).await?;
        Ok(self.shared.write().unwrap().get_or_insert(fresh).clone())
    }

    /// Runs one operation on the shared connection with a deadline, and keeps track of
    /// whether Redis is reachable (logged and exported on each change).
    async fn run<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if self.down.load(Ordering::Relaxed) {
            let now = self.epoch.elapsed().as_millis() as u64;
            let next = self.next_probe_ms.load(Ordering::Relaxed);
            let won_probe = now >= next
                && self
                    .next_probe_ms
                    .compare_exchange(next, now + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if !won_probe {
                return Err(StoreError::RedisUnreachable);
            }
        }
        // No timer of our own per command: making a connection is bounded (the pool's
        // timeouts, or 2 s for asking the sentinels / joining the cluster), and the
        // redis client gives up on a reply after 500 ms (1 s with a cluster's retries).
        let result = match self.connection().await {
            Ok(conn) => op(conn).await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
        let failed = result.as_ref().err().is_some_and(unreachable);
        if result.is_err() {
            m::store_error("redis");
        }
        // A master demoted by a failover answers READONLY: reconnect (Sentinel asks again).
        let demoted = matches!(&result, Err(StoreError::Redis(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly));
        if failed || demoted {
            self.shared.write().unwrap().take();
        }
        if failed {
            let now = self.epoch.elapsed().as_millis() as u64;
            self.next_probe_ms.store(now + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed);
        }
        if self.down.swap(failed, Ordering::Relaxed) != failed {
            m::redis_degraded(failed);
            if failed {
                tracing::warn!(error = %result.as_ref().err().unwrap(), "Redis unreachable: working alone (local chat, count and rate limits)");
            } else {
                tracing::info!("Redis reachable again");
            }
        }
        result
    }
}

/// The oldest Redis the node works with: `EXPIRE … NX` (rate limits) needs 7.0.
const MIN_REDIS_VERSION: (u32, u32, u32) = (7, 0, 0);

/// Stops the process with one line when `conn` reaches a Redis older than
/// [`MIN_REDIS_VERSION`] (on Cluster: any primary). Run on every new shared connection,
/// so a node that started while Redis was down checks when it first gets through. A
/// server that does not tell (INFO refused or renamed) is given the benefit of the doubt.
async fn check_version(conn: &mut Conn) -> StoreResult<()> {
    let info = match redis::cmd("INFO").arg("server").query_async::<Value>(conn).await.map_err(StoreError::from) {
        Ok(info) => info,
        Err(e) if unreachable(&e) => return Err(e),
        Err(_) => return Ok(()),
    };
    if let Some((major, minor, patch)) = oldest_version(&info).filter(|v| *v < MIN_REDIS_VERSION) {
        let (min_major, min_minor, _) = MIN_REDIS_VERSION;
        eprintln!("openchampps: Redis {major}.{minor}.{patch} is too old: {min_major}.{min_minor} or newer is needed");
        std::process::exit(2);
    }
    Ok(())
}

/// The lowest `redis_version` in an `INFO` reply (on Cluster, a map of every primary's).
fn oldest_version(info: &Value) -> Option<(u32, u32, u32)> {
    match info {
        Value::BulkString(bytes) => version_in(&String::from_utf8_lossy(bytes)),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => version_in(text),
        Value::Map(pairs) => pairs.iter().filter_map(|(_, v)| oldest_version(v)).min(),
        Value::Array(items) => items.iter().filter_map(oldest_version).min(),
        _ => None,
    }
}

fn version_in(info: &str) -> Option<(u32, u32, u32)> {
    let version = info.lines().find_map(|line| line.trim().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0), parts.next().flatten().unwrap_or(0)))
}

/// Whether an error means Redis cannot be reached (as opposed to a refused command).
fn unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Redis(e) => {
            e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
        }
        _ => true,
    }
}

fn parse_token_entry(value: &str) -> Option<TokenRecord> {
    let mut parts = value.splitn(3, ' ');
    let user_id = parts.next()?.parse().ok()?;
    let expires_at = parts.next()?.parse().ok()?;
    let username = parts.next()?.to_owned();
    Some(TokenRecord { user_id, username, expires_at })
}

#[async_trait]
impl TokenCache for RedisStore {
    async fn lookup(&self, token: &TokenHash) -> StoreResult<CacheLookup> {
        let (tok, sess) = self.token_keys(token);
        let (entry, display_name): (Option<String>, Option<String>) =
            self.run(|mut c| async move { c.mget(&[tok, sess]).await }).await?;
        Ok(match entry.as_deref() {
            Some("-") => CacheLookup::Negative,
            Some(value) => match parse_token_entry(value) {
                Some(token) => CacheLookup::Hit { token, display_name },
                None => CacheLookup::Miss { display_name },
            },
            None => CacheLookup::Miss { display_name },
        })
    }

    async fn cache(
        &self,
        token: &TokenHash,
        record: &TokenRecord,
        ttl_secs: u64,
        display_name: Option<&str>,
    ) -> StoreResult<()> {
        let (tok, sess) = self.token_keys(token);
        let mut pipe = redis::pipe();
        let value = format!("{} {} {}", record.user_id, record.expires_at, record.username);
        pipe.set_ex(&tok, value, ttl_secs.max(1)).ignore();
        if let Some(name) = display_name {
            pipe.set_ex(&sess, name, seconds_until(record.expires_at)).ignore();
        }
        self.run(|mut c| async move { pipe.query_async(&mut c).await }).await
    }

    async fn cache_negative(&self, token: &TokenHash, ttl_secs: u64) -> StoreResult<()> {
        let (tok, _) = self.token_keys(token);
        // NX: never overwrite an entry a concurrent login just wrote.
        let mut cmd = redis::cmd("SET");
        cmd.arg(&tok).arg("-").arg("EX").arg(ttl_secs.max(1)).arg("NX");
        self.run(|mut c| async move { cmd.query_async::<Option<String>>(&mut c).await.map(|_| ()) }).await
    }

    async fn forget(&self, tokens: &[TokenHash]) -> StoreResult<()> {
        // One command per token: each token's keys share a slot, different tokens may not.
        for t in tokens {
            let (tok, sess) = self.token_keys(t);
            self.run(|mut c| async move { c.del::<_, ()>(&[tok, sess]).await }).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sessions for RedisStore {
    async fn set_display_name(&self, token: &TokenHash, name: &str, ttl_secs: u64) -> StoreResult<()> {
        let (_, sess) = self.token_keys(token);
        let name = name.to_owned();
        self.run(|mut c| async move { c.set_ex(sess, name, ttl_secs.max(1)).await }).await
    }
}

#[async_trait]
impl Limits for RedisStore {
    async fn login_admit(&self, subject: &str, network: &str, policy: &LoginPolicy) -> StoreResult<Admit> {
        let inv = self.login_invocation(subject, network, "admit", policy);
        let decided: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(match decided {
            1 => Admit::Check,
            2 => Admit::Wait,
            _ => Admit::Refuse,
        })
    }

    async fn login_resolved(
        &self,
        subject: &str,
        network: &str,
        how: Resolved,
        policy: &LoginPolicy,
    ) -> StoreResult<()> {
        let op = match how {
            Resolved::Wrong => "wrong",
            Resolved::Right => "right",
        };
        let inv = self.login_invocation(subject, network, op, policy);
        let _: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(())
    }

    async fn hit(&self, key: &str, window_secs: u64) -> StoreResult<u64> {
        let key = self.limit_key(key);
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1).cmd("EXPIRE").arg(&key).arg(window_secs.max(1)).arg("NX").ignore();
        let (count,): (u64,) = self.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        Ok(count)
    }
}

#[async_trait]
impl Presence for RedisStore {
    async fn beat(&self, node_id: &str, authenticated: usize) -> StoreResult<Beat> {
        let (beats, counts, gone) = self.presence_keys();
        let mut inv = self.beat.key(beats);
        inv.key(counts).key(gone).arg(node_id).arg(authenticated).arg(PRESENCE_STALE_MS).arg(GONE_KEPT_MS);
        let (known, nodes, gone): (u8, Vec<(String, u64)>, Vec<String>) =
            self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        let others = nodes.into_iter().filter(|(node, _)| node != node_id).collect();
        Ok(Beat { others, gone, unknown: known == 0 })
    }

    async fn remove(&self, node_id: &str) -> StoreResult<()> {
        let (beats, counts, _) = self.presence_keys();
        let mut pipe = redis::pipe();
        pipe.zrem(beats, node_id).ignore().hdel(counts, node_id).ignore();
        self.run(|mut c| async move { pipe.query_async(&mut c).await }).await
    }
}

/// How long a name is remembered as an account's.
const ACCOUNT_CACHE_SECS: u64 = 3600;
/// How long a name is remembered as nobody's: short, since a registration overwrites
/// only its own spelling at once.
const NO_ACCOUNT_CACHE_SECS: u64 = 60;
/// The remembered answer for a name that is no account's (no username is this short).
const NO_ACCOUNT: &str = "-";

#[async_trait]
impl Directory for RedisStore {
    async fn account_route(&self, name: &str) -> StoreResult<(NameLookup, Vec<String>)> {
        // Both keys share a hash tag: one pipeline, one round trip, one slot.
        let (acct, nodes) = self.account_keys(name);
        let mut pipe = redis::pipe();
        pipe.get(acct).smembers(nodes);
        let (known, nodes): (Option<String>, Vec<String>) =
            self.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        let lookup = match known {
            None => NameLookup::Unknown,
            Some(v) if v == NO_ACCOUNT => NameLookup::NoAccount,
            Some(account) => NameLookup::Account(account),
        };
        Ok((lookup, nodes))
    }

    async fn remember_account(&self, name: &str, account: Option<&str>) -> StoreResult<()> {
        let (acct, _) = self.account_keys(name);
        let (value, secs) = match account {
            Some(account) => (account.to_owned(), ACCOUNT_CACHE_SECS),
            None => (NO_ACCOUNT.to_owned(), NO_ACCOUNT_CACHE_SECS),
        };
        self.run(|mut c| async move { c.set_ex(acct, value, secs).await }).await
    }

    async fn nodes(&self, route: &Route) -> StoreResult<Vec<String>> {
        let key = self.route_key(route);
        self.run(|mut c| async move { c.smembers(key).await }).await
    }

    async fn join(&self, route: &Route, node_id: &str) -> StoreResult<()> {
        let (key, node) = (self.route_key(route), node_id.to_owned());
        self.run(|mut c| async move { c.sadd(key, node).await }).await
    }

    async fn leave(&self, route: &Route, node_id: &str) -> StoreResult<()> {
        let (key, node) = (self.route_key(route), node_id.to_owned());
        self.run(|mut c| async move { c.srem(key, node).await }).await
    }
}

impl RedisStore {
    /// One message on a channel.
    async fn send(&self, channel: String, event: &BusEvent) -> StoreResult<()> {
        let body = serde_json::to_string(event).expect("chat events serialize");
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(channel).arg(body);
        self.run(|mut c| async move { cmd.query_async::<i64>(&mut c).await.map(|_| ()) }).await
    }
}

#[async_trait]
impl ChatBuckets for RedisStore {
    async fn take_message(&self, user_id: i64, rate: ChatRate) -> StoreResult<bool> {
        let mut inv = self.chat_rate.key(self.chat_rate_key(user_id));
        inv.arg(1000.0 / f64::from(rate.per_sec)).arg(rate.burst);
        let taken: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(taken == 1)
    }

    async fn take_and_publish(&self, user_id: i64, rate: ChatRate, event: &BusEvent) -> StoreResult<bool> {
        let (key, channel) = (self.chat_rate_key(user_id), self.chat_channel());
        if self.cluster && Slot::for_key(&key) != Slot::for_key(&channel) {
            if !self.take_message(user_id, rate).await? {
                return Ok(false);
            }
            return self.send(channel, event).await.map(|()| true);
        }
        let body = serde_json::to_string(event).expect("chat events serialize");
        let mut inv = self.chat_rate.key(key);
        inv.arg(1000.0 / f64::from(rate.per_sec)).arg(rate.burst).arg(self.publish_command()).arg(channel).arg(body);
        let sent: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(sent == 1)
    }
}

fn decode_event(payload: &[u8]) -> Option<BusEvent> {
    serde_json::from_slice::<BusEvent>(payload)
        .inspect_err(|e| tracing::warn!(error = %e, "ignoring malformed chat bus message"))
        .ok()
}

#[async_trait]
impl Bus for RedisStore {
    async fn publish(&self, event: &BusEvent) -> StoreResult<()> {
        self.send(self.chat_channel(), event).await
    }

    async fn publish_to(&self, node_id: &str, event: &BusEvent) -> StoreResult<()> {
        self.send(self.node_channel(node_id), event).await
    }

    async fn subscribe(&self, node_id: &str) -> StoreResult<BoxStream<'static, BusEvent>> {
        let channels = [self.chat_channel(), self.node_channel(node_id)];
        let client = match &self.topology {
            Topology::Single { client, .. } => client.clone(),
            Topology::Sentinel(sentinel) => Topology::master(sentinel).await?,
            Topology::Cluster { nodes, certs } => {
                // Sharded pub/sub: each channel is subscribed on its own shard (one
                // SSUBSCRIBE per channel: they hash to different slots); messages
                // arrive as RESP3 pushes. The stream ends when a shard drops the
                // subscription (failover, slot moved) or a connection is lost.
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = Topology::cluster_builder(nodes, certs).push_sender(tx).build()?;
                let mut conn = match tokio::time::timeout(TIMEOUT * 2, client.get_async_connection()).await {
                    Ok(conn) => conn?,
                    Err(_) => return Err(StoreError::RedisUnreachable),
                };
                for channel in &channels {
                    conn.ssubscribe(channel).await?;
                }
                tracing::info!(?channels, "subscribed to the chat bus (sharded)");
                let events = futures_util::stream::unfold((conn, rx), |(conn, mut rx)| async move {
                    loop {
                        let push = rx.recv().await?;
                        match push.kind {
                            PushKind::SMessage => {
                                let event = match push.data.get(1) {
                                    Some(Value::BulkString(payload)) => decode_event(payload),
                                    _ => None,
                                };
                                if let Some(event) = event {
                                    return Some((event, (conn, rx)));
                                }
                            }
                            PushKind::SUnsubscribe | PushKind::Disconnection => return None,
                            _ => {}
                        }
                    }
                });
                return Ok(events.boxed());
            }
        };
        // A shared connection cannot subscribe: the bus has a dedicated one.
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channels).await?;
        tracing::info!(?channels, "subscribed to the chat bus");
        let events = pubsub.into_on_message().filter_map(|msg| async move { decode_event(msg.get_payload_bytes()) });
        Ok(events.boxed())
    }
}

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
    }

    /// Standalone only: Sentinel and Cluster keep no pool (one shared connection,
    /// one per shard on Cluster), so their gauges are not exported.
    fn export_pool_gauges(&self) {
        if let Topology::Single { pool, .. } = &self.topology {
            let s = pool.status();
            m::pool_connections("redis", s.size, s.available, s.waiting);
        }
    }
}

/// Matchmaking keys, all under one hash tag (one slot: every operation is one atomic
/// script): `{mm}:tickets` hash account → ticket (JSON), `{mm}:q:<queue>` sorted set
/// account → place, `{mm}:seq` places handed out, `{mm}:pending:<account>` the match
/// being formed for the account, `{mm}:forming` hash match → `{node, at, tickets}`,
/// `{mm}:found:<account>` the account's `match_found` while joinable, `{mm}:match:<id>`
/// a started match's `{server, accounts}`, `{mm}:lease:<server>` the match holding a
/// game server, `{mm}:formed:<account>` the matches the account started in the window.
const MM_JOIN: &str = r"
local p, acct = ARGV[1], ARGV[2]
local t = cjson.decode(ARGV[3])
if redis.call('EXISTS', p .. '{mm}:pending:' .. acct) == 1 then return {'pending'} end
local cap = tonumber(ARGV[4])
if cap > 0 and tonumber(redis.call('GET', p .. '{mm}:formed:' .. acct) or '0') >= cap then return {'limited'} end
local old = redis.call('HGET', KEYS[1], acct)
if old then
  local o = cjson.decode(old)
  if o.queue == t.queue then
    t.seq = o.seq
    t.joined_ms = o.joined_ms
    t.tries = o.tries
    redis.call('HSET', KEYS[1], acct, cjson.encode(t))
    return {'kept', o.node, tostring(o.conn)}
  end
  redis.call('ZREM', p .. '{mm}:q:' .. o.queue, acct)
end
t.seq = redis.call('INCR', p .. '{mm}:seq')
redis.call('HSET', KEYS[1], acct, cjson.encode(t))
redis.call('ZADD', p .. '{mm}:q:' .. t.queue, t.seq, acct)
return {'new'}
";

/// A disconnect (a holder given) while the account's match is forming marks its
/// ticket there as left, so it is not put back.
const MM_LEAVE: &str = r"
local p, acct = ARGV[1], ARGV[2]
local pending = redis.call('GET', p .. '{mm}:pending:' .. acct)
if pending then
  if ARGV[3] ~= '' then
    local forming = p .. '{mm}:forming'
    local raw = redis.call('HGET', forming, pending)
    if raw then
      local f = cjson.decode(raw)
      for _, t in ipairs(f.tickets) do
        if t.account == acct and t.node == ARGV[3] and tostring(t.conn) == ARGV[4] and not t.left then
          t.left = true
          redis.call('HSET', forming, pending, cjson.encode(f))
          return {'removed', cjson.encode(t)}
        end
      end
    end
  end
  return {'pending'}
end
local old = redis.call('HGET', KEYS[1], acct)
if not old then return {'none'} end
local o = cjson.decode(old)
if ARGV[3] ~= '' and (o.node ~= ARGV[3] or tostring(o.conn) ~= ARGV[4]) then return {'none'} end
redis.call('HDEL', KEYS[1], acct)
redis.call('ZREM', p .. '{mm}:q:' .. o.queue, acct)
return {'removed', old}
";

const MM_POSITION: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[2])
if not old then return {} end
local o = cjson.decode(old)
local rank = redis.call('ZRANK', ARGV[1] .. '{mm}:q:' .. o.queue, ARGV[2])
if not rank then return {} end
return {old, tostring(rank + 1)}
";

/// Shared by the scripts that end a forming match: `restore(p, match, gone, tries,
/// max_tries)` puts its players back at their places (not those that left or whose
/// node is `gone`, nor those queued again meanwhile, nor, when `max_tries` is given,
/// those whose tries reach it: their tickets end), adding `tries` to each ticket,
/// frees their pending state and deletes the record. Returns (put back, lost).
const MM_RESTORE: &str = r"
local function restore(p, mid, gone, tries, max_tries)
  local forming = p .. '{mm}:forming'
  local raw = redis.call('HGET', forming, mid)
  if not raw then return 0, 0 end
  local back, lost = 0, 0
  for _, t in ipairs(cjson.decode(raw).tickets) do
    local pending = p .. '{mm}:pending:' .. t.account
    if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
    if t.left then
    elseif gone[t.node] then
      lost = lost + 1
    elseif max_tries and (t.tries or 0) + tries >= max_tries then
      -- Out of tries: the ticket ends here (its player gets match_error).
    elseif redis.call('HEXISTS', KEYS[1], t.account) == 0 then
      t.tries = (t.tries or 0) + tries
      redis.call('HSET', KEYS[1], t.account, cjson.encode(t))
      redis.call('ZADD', p .. '{mm}:q:' .. t.queue, t.seq, t.account)
      back = back + 1
    end
  end
  redis.call('HDEL', forming, mid)
  return back, lost
end
";

const MM_TAKE: &str = r"
local p, q, size, mid, ttl = ARGV[1], ARGV[1] .. '{mm}:q:' .. ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local forming = p .. '{mm}:forming'
local gone = {}
for i = 7, #ARGV do gone[ARGV[i]] = true end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
-- Matches that dead nodes were forming go back in order; records older than the
-- pending state they set are forgotten.
local put_back, dead = 0, 0
local all = redis.call('HGETALL', forming)
for i = 1, #all, 2 do
  local f = cjson.decode(all[i + 1])
  if gone[f.node] then
    local back, lost = restore(p, all[i], gone, 0)
    put_back, dead = put_back + back, dead + lost
  elseif now - f.at > ttl * 1000 then
    redis.call('HDEL', forming, all[i])
  end
end
local taken, drop, start = {}, {}, 0
while #taken < size do
  local batch = redis.call('ZRANGE', q, start, start + 99)
  if #batch == 0 then break end
  for _, acct in ipairs(batch) do
    local raw = redis.call('HGET', KEYS[1], acct)
    if not raw or gone[cjson.decode(raw).node] then
      table.insert(drop, acct)
    elseif #taken < size then
      table.insert(taken, raw)
    end
  end
  start = start + 100
end
for _, acct in ipairs(drop) do
  redis.call('ZREM', q, acct)
  redis.call('HDEL', KEYS[1], acct)
end
local counts = {tostring(dead + #drop), tostring(put_back)}
if #taken < size then return counts end
local record = {}
for _, raw in ipairs(taken) do
  local t = cjson.decode(raw)
  redis.call('ZREM', q, t.account)
  redis.call('HDEL', KEYS[1], t.account)
  redis.call('SET', p .. '{mm}:pending:' .. t.account, mid, 'EX', ttl)
  table.insert(record, t)
  table.insert(counts, raw)
end
redis.call('HSET', forming, mid, cjson.encode({node = ARGV[6], at = now, tickets = record}))
return counts
";

const MM_PUT_BACK: &str = r"
local back = restore(ARGV[1], ARGV[2], {}, 1, tonumber(ARGV[3]))
return back
";

/// ARGV: prefix, match, server, joinable secs, match-count window secs, then
/// account/frame pairs. The match record lives as long as it is joinable, until its
/// game server confirms it (`MM_CONFIRM`).
const MM_START: &str = r"
local p, mid = ARGV[1], ARGV[2]
local forming = p .. '{mm}:forming'
if redis.call('HDEL', forming, mid) == 0 then return 0 end
local accounts = {}
for i = 6, #ARGV, 2 do
  local acct = ARGV[i]
  -- Still 'Match already found' while the match is joinable.
  redis.call('SET', p .. '{mm}:pending:' .. acct, mid, 'EX', tonumber(ARGV[4]))
  redis.call('SET', p .. '{mm}:found:' .. acct, ARGV[i + 1], 'EX', tonumber(ARGV[4]))
  local formed = p .. '{mm}:formed:' .. acct
  if redis.call('INCR', formed) == 1 then redis.call('EXPIRE', formed, tonumber(ARGV[5])) end
  table.insert(accounts, acct)
end
redis.call('SET', p .. '{mm}:match:' .. mid, cjson.encode({server = ARGV[3], accounts = accounts}), 'EX', tonumber(ARGV[4]))
return 1
";

/// ARGV: prefix, match, secs. Keeps a started match and its server's lease.
const MM_CONFIRM: &str = r"
local p, mid = ARGV[1], ARGV[2]
local record = p .. '{mm}:match:' .. mid
local raw = redis.call('GET', record)
if not raw then return 0 end
redis.call('EXPIRE', record, tonumber(ARGV[3]))
local lease = p .. '{mm}:lease:' .. cjson.decode(raw).server
if redis.call('GET', lease) == mid then redis.call('EXPIRE', lease, tonumber(ARGV[3])) end
return 1
";

/// ARGV: prefix, server. The started match holding the server's lease: {id, record}.
const MM_CURRENT: &str = r"
local mid = redis.call('GET', ARGV[1] .. '{mm}:lease:' .. ARGV[2])
if not mid then return {} end
local raw = redis.call('GET', ARGV[1] .. '{mm}:match:' .. mid)
if not raw then return {} end
return {mid, raw}
";

const MM_END: &str = r"
local p, mid = ARGV[1], ARGV[2]
local raw = redis.call('GET', p .. '{mm}:match:' .. mid)
if not raw then return 0 end
local m = cjson.decode(raw)
for _, acct in ipairs(m.accounts) do
  local found = p .. '{mm}:found:' .. acct
  local frame = redis.call('GET', found)
  if frame and string.find(frame, mid, 1, true) then redis.call('DEL', found) end
  local pending = p .. '{mm}:pending:' .. acct
  if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
end
local lease = p .. '{mm}:lease:' .. m.server
if redis.call('GET', lease) == mid then redis.call('DEL', lease) end
redis.call('DEL', p .. '{mm}:match:' .. mid)
return 1
";

/// Frees a game server's lease if match ARGV[1] still holds it. KEYS: the lease.
const MM_UNLEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The matchmaking scripts, by name.
struct MmScripts {
    join: Script,
    leave: Script,
    position: Script,
    take: Script,
    put_back: Script,
    start: Script,
    end: Script,
    unlease: Script,
    confirm: Script,
    current: Script,
}

static MM: std::sync::LazyLock<MmScripts> = std::sync::LazyLock::new(|| MmScripts {
    join: Script::new(MM_JOIN),
    leave: Script::new(MM_LEAVE),
    position: Script::new(MM_POSITION),
    take: Script::new(&format!("{MM_RESTORE}{MM_TAKE}")),
    put_back: Script::new(&format!("{MM_RESTORE}{MM_PUT_BACK}")),
    start: Script::new(MM_START),
    end: Script::new(MM_END),
    unlease: Script::new(MM_UNLEASE),
    confirm: Script::new(MM_CONFIRM),
    current: Script::new(MM_CURRENT),
});

/// A started match as `{mm}:match:<id>` records it.
#[derive(serde::Deserialize)]
struct MatchRecord {
    accounts: Vec<String>,
}

fn ticket_from(raw: &str) -> StoreResult<Ticket> {
    serde_json::from_str(raw).map_err(|e| StoreError::Other(format!("malformed ticket in Redis: {e}")))
}

impl RedisStore {
    fn mm_key(&self, rest: &str) -> String {
        format!("{}{{mm}}:{rest}", self.prefix)
    }
}

#[async_trait]
impl MatchQueue for RedisStore {
    async fn join(&self, ticket: &Ticket, max_matches: u64) -> StoreResult<Joined> {
        let mut inv = MM.join.key(self.mm_key("tickets"));
        let body = serde_json::to_string(ticket).expect("tickets serialize");
        inv.arg(&self.prefix).arg(&ticket.account).arg(body).arg(max_matches);
        let reply: Vec<String> = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("pending") => Joined::MatchPending,
            Some("limited") => Joined::Limited,
            Some("kept") => Joined::Kept {
                node: reply.get(1).cloned().unwrap_or_default(),
                conn: reply.get(2).and_then(|c| c.parse().ok()).unwrap_or_default(),
            },
            _ => Joined::New,
        })
    }

    async fn leave(&self, account: &str, holder: Option<(&str, u64)>) -> StoreResult<Left> {
        let mut inv = MM.leave.key(self.mm_key("tickets"));
        let (node, conn) = holder.map_or((String::new(), String::new()), |(n, c)| (n.to_owned(), c.to_string()));
        inv.arg(&self.prefix).arg(account).arg(node).arg(conn);
        let reply: Vec<String> = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("pending"), _) => Left::MatchPending,
            (Some("removed"), Some(raw)) => Left::Removed(ticket_from(raw)?),
            _ => Left::NoTicket,
        })
    }

    async fn position(&self, account: &str) -> StoreResult<Option<(Ticket, u64)>> {
        let mut inv = MM.position.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(account);
        let reply: Vec<String> = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        match (reply.first(), reply.get(1).and_then(|p| p.parse().ok())) {
            (Some(raw), Some(position)) => Ok(Some((ticket_from(raw)?, position))),
            _ => Ok(None),
        }
    }

    async fn take(
        &self,
        queue: &str,
        size: usize,
        match_id: &str,
        node: &str,
        pending_secs: u64,
        gone: &[String],
    ) -> StoreResult<Taken> {
        let mut inv = MM.take.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(queue).arg(size).arg(match_id).arg(pending_secs.max(1)).arg(node);
        for node in gone {
            inv.arg(node);
        }
        // Dropped, put back, then the taken tickets.
        let raw: Vec<String> = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        let count = |i: usize| raw.get(i).and_then(|n| n.parse().ok()).unwrap_or(0);
        let tickets = raw.iter().skip(2).map(|r| ticket_from(r)).collect::<StoreResult<_>>()?;
        Ok(Taken { tickets, dropped: count(0), put_back: count(1) })
    }

    async fn put_back(&self, match_id: &str, max_tries: u32) -> StoreResult<u64> {
        let mut inv = MM.put_back.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(match_id).arg(max_tries);
        self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await
    }

    async fn start(
        &self,
        match_id: &str,
        server: &str,
        frames: &[(String, String)],
        joinable_secs: u64,
    ) -> StoreResult<bool> {
        let mut inv = MM.start.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(match_id).arg(server).arg(joinable_secs.max(1)).arg(MATCH_COUNT_WINDOW_SECS);
        for (account, frame) in frames {
            inv.arg(account).arg(frame);
        }
        let started: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(started == 1)
    }

    async fn joinable(&self, account: &str) -> StoreResult<Joinable> {
        let keys = [self.mm_key(&format!("found:{account}")), self.mm_key(&format!("pending:{account}"))];
        let (found, pending): (Option<String>, Option<String>) =
            self.run(|mut c| async move { c.mget(&keys).await }).await?;
        Ok(match (found, pending) {
            (Some(frame), _) => Joinable::Found(frame),
            (None, Some(_)) => Joinable::Forming,
            (None, None) => Joinable::None,
        })
    }

    async fn confirm(&self, match_id: &str, secs: u64) -> StoreResult<bool> {
        let mut inv = MM.confirm.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(match_id).arg(secs.max(1));
        let confirmed: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(confirmed == 1)
    }

    async fn current(&self, server: &str) -> StoreResult<Option<(String, Vec<String>)>> {
        let mut inv = MM.current.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(server);
        let reply: Vec<String> = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        let Ok([match_id, record]) = <[String; 2]>::try_from(reply) else {
            return Ok(None);
        };
        let record: MatchRecord = serde_json::from_str(&record)
            .map_err(|e| StoreError::Other(format!("malformed match record in Redis: {e}")))?;
        Ok(Some((match_id, record.accounts)))
    }

    async fn end(&self, match_id: &str) -> StoreResult<bool> {
        let mut inv = MM.end.key(self.mm_key("tickets"));
        inv.arg(&self.prefix).arg(match_id);
        let ended: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(ended == 1)
    }

    async fn length(&self, queue: &str) -> StoreResult<u64> {
        let key = self.mm_key(&format!("q:{queue}"));
        self.run(|mut c| async move { c.zcard(key).await }).await
    }

    async fn lease(&self, server: &str, match_id: &str, secs: u64) -> StoreResult<bool> {
        let key = self.mm_key(&format!("lease:{server}"));
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(match_id).arg("NX").arg("EX").arg(secs.max(1));
        let set: Option<String> = self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        Ok(set.is_some())
    }

    async fn unlease(&self, server: &str, match_id: &str) -> StoreResult<()> {
        let mut inv = MM.unlease.key(self.mm_key(&format!("lease:{server}")));
        inv.arg(match_id);
        self.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await.map(drop) }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_redis_version_is_found_in_info() {
        let info =
            |v: &str| Value::BulkString(format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n").into());
        assert_eq!(oldest_version(&info("7.2.4")), Some((7, 2, 4)));
        assert_eq!(oldest_version(&info("6.2.14")), Some((6, 2, 14)));
        assert_eq!(oldest_version(&info("8.0")), Some((8, 0, 0)));
        assert_eq!(oldest_version(&info("255.255.255")), Some((255, 255, 255)));
        assert_eq!(oldest_version(&Value::BulkString(b"# Server\r\nos:Linux\r\n".to_vec())), None);
        assert_eq!(oldest_version(&info("unstable")), None);
        // RESP3 and Cluster (one reply per primary): the oldest counts.
        let verbatim =
            Value::VerbatimString { format: redis::VerbatimFormat::Text, text: "redis_version:7.0.0\n".into() };
        let cluster = Value::Map(vec![
            (Value::SimpleString("a:6379".into()), verbatim),
            (Value::SimpleString("b:6379".into()), info("6.2.7")),
        ]);
        assert_eq!(oldest_version(&cluster), Some((6, 2, 7)));
        assert!((6, 2, 7) < MIN_REDIS_VERSION && (7, 0, 0) >= MIN_REDIS_VERSION && (7, 4, 1) > MIN_REDIS_VERSION);
    }
}
