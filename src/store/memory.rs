//! In-memory twins of the stores, for whole nodes inside a test process: the
//! protocol logic runs against them in milliseconds. They keep the same semantics
//! as PostgreSQL and Redis (case-insensitive names, expiries, atomic counters,
//! a bus every subscriber hears) but nothing is shared with another process:
//! several nodes of one process form a cluster by sharing one [`MemoryUsers`] and one
//! [`MemoryShared`] (`Stores::in_memory_with`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::{
    unix_now, AccountRecord, Admit, Appended, Beat, Bus, BusEvent, CacheLookup, ChatBuckets, ChatRate, Conflict,
    Directory, Health, History, Joinable, Joined, Left, Limits, LoginKey, LoginPolicy, MatchQueue, ModerationStore,
    NameLookup, NodeInfo, Pair, Parked, Presence, QueueOverview, Resolved, Route, Sanction, SanctionKind, Sessions,
    Standing, StoreResult, StreamId, StreamLimits, StreamOf, Streams, Taken, Ticket, TokenCache, TokenRecord,
    UserRecord, UserStore, GONE_KEPT_MS, GUESS_IN_FLIGHT_MS, MATCH_COUNT_WINDOW_SECS, NODE_INFO_FRESH_SECS,
};
use crate::auth::TokenHash;
use crate::bucket::AccountBuckets;

/// Accounts and tokens (the PostgreSQL role).
#[derive(Default)]
pub struct MemoryUsers {
    inner: Mutex<Users>,
}

#[derive(Default)]
struct Users {
    users: Vec<(UserRecord, Option<String>)>,
    tokens: HashMap<TokenHash, StoredToken>,
    /// Unix seconds each account was created.
    created: HashMap<i64, i64>,
    /// The sanctions in force, and waiting kicks, by account.
    standing: HashMap<i64, Standing>,
}

struct StoredToken {
    user_id: i64,
    expires_at: i64,
    revoked: bool,
    /// Issue order.
    seq: u64,
}

impl Users {
    fn by_name(&self, username: &str) -> Option<&UserRecord> {
        let wanted = username.to_lowercase();
        self.users.iter().map(|(u, _)| u).find(|u| u.username.to_lowercase() == wanted)
    }

    fn by_id(&self, id: i64) -> Option<&UserRecord> {
        self.users.iter().map(|(u, _)| u).find(|u| u.id == id)
    }

    /// What PostgreSQL's lookups join: sanctions in force now.
    fn standing(&self, id: i64) -> Standing {
        let now = unix_now();
        let mut standing = self.standing.get(&id).cloned().unwrap_or_default();
        standing.ban = standing.ban.filter(|b| b.in_force(now));
        standing.mute = standing.mute.filter(|m| m.in_force(now));
        standing
    }

    /// Token `hash` as the lookups see it: live, or revoked while its account is banned.
    fn token_record(&self, hash: &TokenHash) -> Option<TokenRecord> {
        let t = self.tokens.get(hash).filter(|t| t.expires_at > unix_now())?;
        let user = self.by_id(t.user_id)?;
        let standing = self.standing(user.id);
        if t.revoked && standing.ban.is_none() {
            return None;
        }
        Some(TokenRecord { user_id: user.id, username: user.username.clone(), expires_at: t.expires_at, standing })
    }

    fn account(&self, (user, email): &(UserRecord, Option<String>)) -> AccountRecord {
        AccountRecord {
            id: user.id,
            username: user.username.clone(),
            email: email.clone(),
            created_at: self.created.get(&user.id).copied().unwrap_or_default(),
            last_login: None,
        }
    }
}

#[async_trait]
impl Health for MemoryUsers {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl UserStore for MemoryUsers {
    async fn migrate(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self.inner.lock().unwrap().by_name(username).cloned())
    }

    async fn find_login(&self, username: &str) -> StoreResult<(String, Option<UserRecord>)> {
        let inner = self.inner.lock().unwrap();
        let user = inner.by_name(username).map(|u| UserRecord { standing: inner.standing(u.id), ..u.clone() });
        Ok((username.to_lowercase(), user))
    }

    async fn email_taken(&self, email: &str) -> StoreResult<bool> {
        let email = email.to_lowercase();
        Ok(self.inner.lock().unwrap().users.iter().any(|(_, e)| e.as_ref().is_some_and(|e| e.to_lowercase() == email)))
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: Option<&str>,
    ) -> StoreResult<Result<i64, Conflict>> {
        let mut inner = self.inner.lock().unwrap();
        if inner.by_name(username).is_some() {
            return Ok(Err(Conflict::Username));
        }
        let lower = email.map(str::to_lowercase);
        if lower.is_some() && inner.users.iter().any(|(_, e)| e.as_ref().map(|e| e.to_lowercase()) == lower) {
            return Ok(Err(Conflict::Email));
        }
        let id = inner.users.len() as i64 + 1;
        let record = UserRecord {
            id,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            standing: Standing::default(),
        };
        inner.users.push((record, email.map(str::to_owned)));
        inner.created.insert(id, unix_now());
        Ok(Ok(id))
    }

    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        if let Some((user, _)) = inner.users.iter_mut().find(|(u, _)| u.id == user_id) {
            user.password_hash = password_hash.to_owned();
        }
        Ok(())
    }

    async fn insert_token(
        &self,
        user_id: i64,
        token: &TokenHash,
        _ip: Option<&str>,
        expires_at: i64,
        max_live: u32,
    ) -> StoreResult<Vec<TokenHash>> {
        let mut inner = self.inner.lock().unwrap();
        let seq = inner.tokens.len() as u64;
        inner.tokens.insert(*token, StoredToken { user_id, expires_at, revoked: false, seq });
        let now = unix_now();
        let mut live: Vec<(u64, TokenHash)> = inner
            .tokens
            .iter()
            .filter(|(_, t)| t.user_id == user_id && !t.revoked && t.expires_at > now)
            .map(|(h, t)| (t.seq, *h))
            .collect();
        live.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        let oldest: Vec<TokenHash> = live.into_iter().skip(max_live as usize).map(|(_, h)| h).collect();
        for hash in &oldest {
            inner.tokens.get_mut(hash).expect("listed above").revoked = true;
        }
        Ok(oldest)
    }

    async fn live_tokens(&self, tokens: &[TokenHash]) -> StoreResult<Vec<(TokenHash, TokenRecord)>> {
        let inner = self.inner.lock().unwrap();
        Ok(tokens.iter().filter_map(|h| Some((*h, inner.token_record(h)?))).collect())
    }

    async fn prune_tokens(&self) -> StoreResult<u64> {
        let mut inner = self.inner.lock().unwrap();
        let before = inner.tokens.len();
        let now = unix_now();
        inner.tokens.retain(|_, t| !t.revoked && t.expires_at > now);
        Ok((before - inner.tokens.len()) as u64)
    }

    async fn find_token(&self, token: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        Ok(self.inner.lock().unwrap().token_record(token))
    }

    async fn touch_tokens(&self, tokens: &[TokenHash]) -> StoreResult<u64> {
        let inner = self.inner.lock().unwrap();
        Ok(tokens.iter().filter(|t| inner.tokens.contains_key(t)).count() as u64)
    }

    async fn revoke_user_tokens(&self, username: &str) -> StoreResult<Vec<TokenHash>> {
        let mut inner = self.inner.lock().unwrap();
        let Some(id) = inner.by_name(username).map(|u| u.id) else {
            return Ok(Vec::new());
        };
        let mut revoked = Vec::new();
        for (hash, t) in inner.tokens.iter_mut().filter(|(_, t)| t.user_id == id && !t.revoked) {
            t.revoked = true;
            revoked.push(*hash);
        }
        Ok(revoked)
    }

    async fn revoke_token(&self, token: &TokenHash) -> StoreResult<bool> {
        Ok(self.inner.lock().unwrap().tokens.get_mut(token).map(|t| t.revoked = true).is_some())
    }
}

#[async_trait]
impl ModerationStore for MemoryUsers {
    async fn account(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        let inner = self.inner.lock().unwrap();
        let wanted = username.to_lowercase();
        Ok(inner.users.iter().find(|(u, _)| u.username.to_lowercase() == wanted).map(|u| inner.account(u)))
    }

    async fn search_accounts(&self, prefix: &str, limit: u32) -> StoreResult<Vec<AccountRecord>> {
        let inner = self.inner.lock().unwrap();
        let prefix = prefix.to_lowercase();
        let starts = |s: &str| s.to_lowercase().starts_with(&prefix);
        let mut found: Vec<AccountRecord> = inner
            .users
            .iter()
            .filter(|(u, email)| starts(&u.username) || email.as_deref().is_some_and(starts))
            .map(|u| inner.account(u))
            .collect();
        found.sort_by_key(|a| a.username.to_lowercase());
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn standing(&self, user_id: i64) -> StoreResult<Standing> {
        Ok(self.inner.lock().unwrap().standing(user_id))
    }

    async fn impose(&self, user_id: i64, kind: SanctionKind, sanction: &Sanction) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        let standing = inner.standing.entry(user_id).or_default();
        match kind {
            SanctionKind::Ban => standing.ban = Some(Box::new(sanction.clone())),
            SanctionKind::Mute => standing.mute = Some(Box::new(sanction.clone())),
        }
        Ok(())
    }

    async fn lift(&self, user_id: i64, kind: SanctionKind, _by: &str, _reason: &str) -> StoreResult<Option<Sanction>> {
        let mut inner = self.inner.lock().unwrap();
        let now = unix_now();
        let standing = inner.standing.entry(user_id).or_default();
        let slot = match kind {
            SanctionKind::Ban => &mut standing.ban,
            SanctionKind::Mute => &mut standing.mute,
        };
        Ok(slot.take().filter(|s| s.in_force(now)).map(|s| *s))
    }

    async fn pend_kick(&self, user_id: i64, reason: &str, _by: &str) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        inner.standing.entry(user_id).or_default().kick.get_or_insert_with(|| reason.to_owned());
        Ok(())
    }

    async fn take_kick(&self, user_id: i64) -> StoreResult<Option<String>> {
        Ok(self.inner.lock().unwrap().standing.get_mut(&user_id).and_then(|s| s.kick.take()))
    }

    async fn account_tokens(&self, user_id: i64) -> StoreResult<Vec<TokenHash>> {
        let inner = self.inner.lock().unwrap();
        let now = unix_now();
        Ok(inner.tokens.iter().filter(|(_, t)| t.user_id == user_id && t.expires_at > now).map(|(h, _)| *h).collect())
    }
}

/// The Redis roles: token cache, sessions, presence, bus, chat buckets, limits.
pub struct MemoryShared {
    inner: Mutex<Shared>,
    chat: AccountBuckets,
    /// Events with the node they are for (`None`: every node).
    bus: broadcast::Sender<(Option<String>, BusEvent)>,
    /// Added to every session write: lets a test hold a handler on a slow store.
    session_delay: Mutex<Duration>,
    /// The resume streams, by name (`g`, `p:<account>`).
    streams: Mutex<HashMap<String, MemStream>>,
}

#[derive(Default)]
struct Shared {
    tokens: HashMap<TokenHash, Expiring<Option<TokenRecord>>>,
    sessions: HashMap<TokenHash, Expiring<String>>,
    presence: HashMap<String, u64>,
    /// What operators see of each node: `{presence}:nodes`.
    node_info: HashMap<String, NodeInfo>,
    /// Nodes judged dead ([`MemoryShared::mark_gone`]), and since when: Redis's
    /// `{presence}:gone`.
    gone: HashMap<String, Instant>,
    accounts: HashMap<String, NameLookup>,
    routes: HashMap<Route, std::collections::HashSet<String>>,
    counters: HashMap<String, Expiring<u64>>,
    /// Login throttle by (subject, network or address), as the Redis script `login.lua`.
    logins: HashMap<(String, String), LoginPair>,
    /// (subject, `n:<network>` or `a:<address>`) → until when it is known to the subject.
    known: HashMap<(String, String), Instant>,
    /// How many limit entries (`logins`, `known`, `counters`) the last sweep left.
    limits_swept: usize,
    tickets: HashMap<String, Ticket>,
    seq: u64,
    pending: HashMap<String, Expiring<String>>,
    forming: HashMap<String, Forming>,
    found: HashMap<String, Expiring<String>>,
    matches: HashMap<String, Expiring<(String, Vec<String>)>>,
    /// Started matches their game server confirmed (they no longer count against the cap).
    confirmed: std::collections::HashSet<String>,
    leases: HashMap<String, Expiring<String>>,
}

/// A match being formed: by which node, since when, with which tickets.
struct Forming {
    node: String,
    since: Instant,
    tickets: Vec<Ticket>,
}

impl Shared {
    /// As the Redis script `restore`: puts the forming match's players back at their
    /// places, adding `tries`; returns (put back, lost).
    fn restore(&mut self, match_id: &str, gone: &[String], tries: u32, max_tries: Option<u32>) -> (u64, u64) {
        let Some(forming) = self.forming.remove(match_id) else {
            return (0, 0);
        };
        let (mut back, mut lost) = (0, 0);
        for mut ticket in forming.tickets {
            if live(&self.pending, ticket.account.as_str()) == Some(&match_id.to_owned()) {
                self.pending.remove(&ticket.account);
            }
            if ticket.left {
                continue;
            } else if gone.contains(&ticket.node) {
                lost += 1;
            } else if max_tries.is_some_and(|max| ticket.tries + tries >= max) {
                continue; // out of tries: the ticket ends here
            } else if !self.tickets.contains_key(&ticket.account) {
                ticket.tries += tries;
                self.tickets.insert(ticket.account.clone(), ticket);
                back += 1;
            }
        }
        (back, lost)
    }

    fn end_pending(&mut self, match_id: &str, accounts: impl IntoIterator<Item = String>) {
        for account in accounts {
            if live(&self.pending, account.as_str()).is_some_and(|m| m == match_id) {
                self.pending.remove(&account);
            }
        }
    }
}

/// One (subject, network) pair's guesses, as the hash `login.lua` keeps: failures,
/// when the next guess may come, guesses in flight and since when, when forgotten.
struct LoginPair {
    n: u64,
    next: Instant,
    in_flight: u64,
    since: Instant,
    forget: Instant,
}

struct Expiring<T> {
    value: T,
    until: Instant,
}

impl<T> Expiring<T> {
    fn new(value: T, ttl_secs: u64) -> Self {
        Expiring { value, until: Instant::now() + Duration::from_secs(ttl_secs.max(1)) }
    }
}

/// The counter of a login subject's failures (as `login.lua`'s second key).
fn subject_failures(subject: &str) -> String {
    format!("login:{subject}:failures")
}

/// A login pair's key, as `login.lua` names it: (subject, `net:…` or `addr:…`).
fn pair_key(key: &LoginKey, pair: Pair) -> (String, String) {
    let client = match pair {
        Pair::Network => format!("net:{}", key.network),
        Pair::Address => format!("addr:{}", key.address),
    };
    (key.subject.clone(), client)
}

/// A login pair's state, fresh when it was forgotten; in-flight guesses this old
/// died with their node.
fn login_pair<'a>(inner: &'a mut Shared, key: &LoginKey, pair: Pair, now: Instant) -> &'a mut LoginPair {
    let fresh = || LoginPair { n: 0, next: now, in_flight: 0, since: now, forget: now };
    let entry = inner.logins.entry(pair_key(key, pair)).or_insert_with(fresh);
    if entry.forget <= now {
        *entry = fresh();
    }
    if entry.in_flight > 0 && now.duration_since(entry.since) > Duration::from_millis(GUESS_IN_FLIGHT_MS) {
        entry.in_flight = 0;
    }
    entry
}

/// Counts one more guess in flight on `entry`.
fn in_flight(entry: &mut LoginPair, now: Instant, policy: &LoginPolicy) {
    entry.in_flight += 1;
    entry.since = now;
    entry.forget = entry.forget.max(now + Duration::from_millis(policy.forget_ms.max(GUESS_IN_FLIGHT_MS)));
}

/// Fewest limit entries before a sweep is considered.
const SWEEP_FROM: usize = 2048;

/// Drops expired limit entries (login pairs, known clients, counters) once there are
/// twice as many as the last sweep left: memory follows the live entries, however
/// many names and addresses are tried, at an amortized constant cost per call.
fn sweep_limits(inner: &mut Shared, now: Instant) {
    let size = |inner: &Shared| inner.logins.len() + inner.known.len() + inner.counters.len();
    if size(inner) < 2 * inner.limits_swept.max(SWEEP_FROM) {
        return;
    }
    inner.logins.retain(|_, pair| pair.forget > now || pair.in_flight > 0);
    inner.known.retain(|_, until| *until > now);
    inner.counters.retain(|_, counter| counter.until > now);
    inner.limits_swept = size(inner);
}

/// The counter of the matches `account` started (`Joined::Limited`).
fn formed_key(account: &str) -> String {
    format!("formed:{account}")
}

/// The value under `key` unless it has expired.
fn live<'m, K, Q, V>(map: &'m HashMap<K, Expiring<V>>, key: &Q) -> Option<&'m V>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    map.get(key).filter(|e| e.until > Instant::now()).map(|e| &e.value)
}

impl Default for MemoryShared {
    fn default() -> Self {
        MemoryShared {
            inner: Mutex::default(),
            chat: AccountBuckets::default(),
            bus: broadcast::channel(16_384).0,
            session_delay: Mutex::new(Duration::ZERO),
            streams: Mutex::default(),
        }
    }
}

impl MemoryShared {
    /// Counts a guess the shared store admitted on `pair` as in flight here too, so
    /// that this twin, as a node's fallback (`store::WithLocalFallback`), continues
    /// from the node's own guesses when the shared store stops answering.
    pub fn note_admitted(&self, key: &LoginKey, pair: Pair, policy: &LoginPolicy) {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        sweep_limits(&mut inner, now);
        in_flight(login_pair(&mut inner, key, pair, now), now, policy);
    }

    /// Makes every later session write take `delay` (a slow store, for tests).
    pub fn slow_sessions(&self, delay: Duration) {
        *self.session_delay.lock().unwrap() = delay;
    }

    /// Judges `node_id` dead, as Redis's heartbeat script does with a node whose
    /// heartbeat went stale: it stops counting among the others, and every later
    /// [`Beat`] lists it in `gone` (for [`GONE_KEPT_MS`]) until it beats again. Nodes
    /// sharing one process never go stale by themselves: this is the in-process
    /// stand-in for a stale heartbeat, for a test that killed a node without a goodbye.
    pub fn mark_gone(&self, node_id: &str) {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        inner.presence.remove(node_id);
        inner.gone.insert(node_id.to_owned(), now);
        inner.gone.retain(|_, since| now.duration_since(*since) < Duration::from_millis(GONE_KEPT_MS));
    }
}

#[async_trait]
impl TokenCache for MemoryShared {
    async fn lookup(&self, token: &TokenHash) -> StoreResult<CacheLookup> {
        let inner = self.inner.lock().unwrap();
        let display_name = live(&inner.sessions, token).map(|name| name.as_str().into());
        Ok(match live(&inner.tokens, token) {
            Some(Some(record)) => CacheLookup::Hit { token: record.clone(), display_name },
            Some(None) => CacheLookup::Negative,
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
        let mut inner = self.inner.lock().unwrap();
        // A waiting kick is never cached (as in Redis).
        let standing = Standing { kick: None, ..record.standing.clone() };
        inner.tokens.insert(*token, Expiring::new(Some(TokenRecord { standing, ..record.clone() }), ttl_secs));
        if let Some(name) = display_name {
            let ttl = super::seconds_until(record.expires_at);
            inner.sessions.insert(*token, Expiring::new(name.to_owned(), ttl));
        }
        Ok(())
    }

    async fn cache_negative(&self, token: &TokenHash, ttl_secs: u64) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        if live(&inner.tokens, token).is_none() {
            inner.tokens.insert(*token, Expiring::new(None, ttl_secs));
        }
        Ok(())
    }

    async fn forget(&self, tokens: &[TokenHash]) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        for t in tokens {
            inner.tokens.remove(t);
            inner.sessions.remove(t);
        }
        Ok(())
    }
}

#[async_trait]
impl Sessions for MemoryShared {
    async fn set_display_name(&self, token: &TokenHash, name: &str, ttl_secs: u64) -> StoreResult<()> {
        let delay = *self.session_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.lock().unwrap().sessions.insert(*token, Expiring::new(name.to_owned(), ttl_secs));
        Ok(())
    }
}

#[async_trait]
impl Presence for MemoryShared {
    /// Nodes sharing one process never die unannounced: nobody goes stale, and only
    /// the nodes a test judged dead ([`MemoryShared::mark_gone`]) are gone.
    async fn beat(&self, node_id: &str, authenticated: usize) -> StoreResult<Beat> {
        let mut inner = self.inner.lock().unwrap();
        let known = inner.presence.insert(node_id.to_owned(), authenticated as u64).is_some();
        if !known {
            // Back (or new): not gone, whatever others judged.
            inner.gone.remove(node_id);
        }
        let others = inner.presence.iter().filter(|(node, _)| *node != node_id).map(|(k, v)| (k.clone(), *v));
        let others = others.collect();
        Ok(Beat { others, gone: inner.gone.keys().cloned().collect(), unknown: !known })
    }

    async fn remove(&self, node_id: &str) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        inner.presence.remove(node_id);
        inner.node_info.remove(node_id);
        Ok(())
    }

    async fn announce(&self, node: &NodeInfo) -> StoreResult<()> {
        self.inner.lock().unwrap().node_info.insert(node.id.clone(), node.clone());
        Ok(())
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let mut inner = self.inner.lock().unwrap();
        let now = unix_now();
        inner.node_info.retain(|_, node| now - node.heartbeat <= NODE_INFO_FRESH_SECS);
        let mut nodes: Vec<NodeInfo> = inner.node_info.values().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}

#[async_trait]
impl Directory for MemoryShared {
    async fn account_route(&self, name: &str) -> StoreResult<(NameLookup, Vec<String>)> {
        let inner = self.inner.lock().unwrap();
        let nodes = inner.routes.get(&Route::Account(name.to_owned())).map(|n| n.iter().cloned().collect());
        Ok((inner.accounts.get(name).cloned().unwrap_or_default(), nodes.unwrap_or_default()))
    }

    async fn remember_account(&self, name: &str, account: Option<&str>) -> StoreResult<()> {
        let lookup = account.map_or(NameLookup::NoAccount, |a| NameLookup::Account(a.to_owned()));
        self.inner.lock().unwrap().accounts.insert(name.to_owned(), lookup);
        Ok(())
    }

    async fn nodes(&self, route: &Route) -> StoreResult<Vec<String>> {
        Ok(self.inner.lock().unwrap().routes.get(route).map(|n| n.iter().cloned().collect()).unwrap_or_default())
    }

    async fn join(&self, route: &Route, node_id: &str) -> StoreResult<()> {
        self.inner.lock().unwrap().routes.entry(route.clone()).or_default().insert(node_id.to_owned());
        Ok(())
    }

    async fn leave(&self, route: &Route, node_id: &str) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(nodes) = inner.routes.get_mut(route) {
            nodes.remove(node_id);
            if nodes.is_empty() {
                inner.routes.remove(route);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for MemoryShared {
    async fn publish(&self, event: &BusEvent) -> StoreResult<()> {
        let _ = self.bus.send((None, event.clone()));
        Ok(())
    }

    async fn publish_to(&self, node_id: &str, event: &BusEvent) -> StoreResult<()> {
        let _ = self.bus.send((Some(node_id.to_owned()), event.clone()));
        Ok(())
    }

    async fn subscribe(&self, node_id: &str) -> StoreResult<BoxStream<'static, BusEvent>> {
        let me = node_id.to_owned();
        let events = stream::unfold((self.bus.subscribe(), me), |(mut rx, me)| async move {
            loop {
                match rx.recv().await {
                    Ok((to, event)) if to.as_ref().is_none_or(|to| *to == me) => return Some((event, (rx, me))),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(events.boxed())
    }
}

#[async_trait]
impl ChatBuckets for MemoryShared {
    async fn take_message(&self, user_id: i64, rate: ChatRate) -> StoreResult<bool> {
        Ok(self.chat.take(user_id, rate.per_sec, rate.burst))
    }
}

#[async_trait]
impl Limits for MemoryShared {
    async fn login_admit(&self, key: &LoginKey, policy: &LoginPolicy) -> StoreResult<Admit> {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        sweep_limits(&mut inner, now);
        let known = |inner: &Shared, client: String| {
            inner.known.get(&(key.subject.clone(), client)).is_some_and(|until| *until > now)
        };
        let pair = if known(&inner, format!("a:{}", key.address)) { Pair::Address } else { Pair::Network };
        if pair == Pair::Network && !known(&inner, format!("n:{}", key.network)) {
            let failures = live(&inner.counters, &subject_failures(&key.subject)).copied().unwrap_or_default();
            if failures >= policy.per_subject {
                return Ok(Admit::Refuse);
            }
        }
        let entry = login_pair(&mut inner, key, pair, now);
        if now < entry.next {
            return Ok(Admit::Refuse);
        }
        if entry.in_flight > 0 && policy.wait_after(entry.n + entry.in_flight) > 0 {
            return Ok(Admit::Wait);
        }
        in_flight(entry, now, policy);
        Ok(Admit::Check(pair))
    }

    async fn login_resolved(&self, key: &LoginKey, pair: Pair, how: Resolved, policy: &LoginPolicy) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        sweep_limits(&mut inner, now);
        if how == Resolved::Right {
            inner.logins.remove(&pair_key(key, pair));
            let until = now + Duration::from_millis(policy.known_ms);
            for client in [format!("n:{}", key.network), format!("a:{}", key.address)] {
                inner.known.insert((key.subject.clone(), client), until);
            }
            return Ok(());
        }
        {
            let window = Duration::from_millis(policy.window_ms);
            let failures = subject_failures(&key.subject);
            let counter = inner.counters.entry(failures).or_insert(Expiring { value: 0, until: now });
            if counter.until <= now {
                *counter = Expiring { value: 0, until: now + window };
            }
            counter.value += 1;
        }
        let entry = login_pair(&mut inner, key, pair, now);
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.n += 1;
        entry.next = now + Duration::from_millis(policy.wait_after(entry.n));
        entry.forget = entry.next.max(now) + Duration::from_millis(policy.forget_ms);
        Ok(())
    }

    async fn failed_logins(&self, subject: &str) -> StoreResult<u64> {
        let inner = self.inner.lock().unwrap();
        Ok(live(&inner.counters, &subject_failures(subject)).copied().unwrap_or_default())
    }

    async fn hit(&self, key: &str, window_secs: u64) -> StoreResult<u64> {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        sweep_limits(&mut inner, now);
        let entry = inner.counters.entry(key.to_owned()).or_insert_with(|| Expiring::new(0, window_secs));
        if entry.until <= now {
            *entry = Expiring::new(0, window_secs);
        }
        entry.value += 1;
        Ok(entry.value)
    }
}

#[async_trait]
impl Health for MemoryShared {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl MatchQueue for MemoryShared {
    async fn join(&self, ticket: &Ticket, max_matches: u64) -> StoreResult<Joined> {
        let mut inner = self.inner.lock().unwrap();
        if live(&inner.pending, ticket.account.as_str()).is_some() {
            return Ok(Joined::MatchPending);
        }
        let formed = live(&inner.counters, formed_key(&ticket.account).as_str()).copied().unwrap_or(0);
        if max_matches > 0 && formed >= max_matches {
            return Ok(Joined::Limited);
        }
        let mut ticket = ticket.clone();
        if let Some(old) = inner.tickets.get(&ticket.account).filter(|old| old.queue == ticket.queue) {
            let held = Joined::Kept { node: old.node.clone(), conn: old.conn };
            (ticket.seq, ticket.joined_ms, ticket.tries) = (old.seq, old.joined_ms, old.tries);
            inner.tickets.insert(ticket.account.clone(), ticket);
            return Ok(held);
        }
        inner.seq += 1;
        ticket.seq = inner.seq;
        inner.tickets.insert(ticket.account.clone(), ticket);
        Ok(Joined::New)
    }

    async fn leave(&self, account: &str, holder: Option<(&str, u64)>) -> StoreResult<Left> {
        let mut inner = self.inner.lock().unwrap();
        let held = |t: &Ticket| holder.is_none_or(|(node, conn)| t.node == node && t.conn == conn);
        if let Some(match_id) = live(&inner.pending, account).cloned() {
            let forming = inner.forming.get_mut(&match_id).filter(|_| holder.is_some());
            let ticket =
                forming.and_then(|f| f.tickets.iter_mut().find(|t| t.account == account && held(t) && !t.left));
            return Ok(match ticket {
                Some(ticket) => {
                    ticket.left = true;
                    Left::Removed(ticket.clone())
                }
                None => Left::MatchPending,
            });
        }
        if !inner.tickets.get(account).is_some_and(held) {
            return Ok(Left::NoTicket);
        }
        Ok(inner.tickets.remove(account).map_or(Left::NoTicket, Left::Removed))
    }

    async fn position(&self, account: &str) -> StoreResult<Option<(Ticket, u64)>> {
        let inner = self.inner.lock().unwrap();
        let Some(ticket) = inner.tickets.get(account) else {
            return Ok(None);
        };
        let ahead = inner.tickets.values().filter(|t| t.queue == ticket.queue && t.seq < ticket.seq).count();
        Ok(Some((ticket.clone(), ahead as u64 + 1)))
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
        let mut inner = self.inner.lock().unwrap();
        let (mut put_back, mut dropped) = (0, 0);
        let ids: Vec<String> = inner.forming.keys().cloned().collect();
        for id in ids {
            let forming = &inner.forming[&id];
            if gone.contains(&forming.node) {
                let (back, lost) = inner.restore(&id, gone, 0, None);
                (put_back, dropped) = (put_back + back, dropped + lost);
            } else if forming.since.elapsed() > Duration::from_secs(pending_secs) {
                inner.forming.remove(&id);
            }
        }
        // A ticket with a grace whose node is gone waits that long for its player;
        // one away past its grace is dropped, as is one of a gone node without grace.
        let now_ms = super::unix_now_ms();
        let mut expired = 0;
        inner.tickets.retain(|_, t| {
            if t.queue != queue {
                return true;
            }
            if gone.contains(&t.node) && t.away_until_ms.is_none() {
                if t.grace_secs == 0 {
                    dropped += 1;
                    return false;
                }
                t.away_until_ms = Some(now_ms + t.grace_secs * 1000);
            }
            let past = t.away_until_ms.is_some_and(|until| until < now_ms);
            expired += u64::from(past);
            !past
        });
        let mut queued: Vec<&Ticket> = inner.tickets.values().filter(|t| t.queue == queue).collect();
        if queued.len() < size {
            return Ok(Taken { tickets: Vec::new(), dropped, put_back, expired });
        }
        queued.sort_by_key(|t| t.seq);
        let tickets: Vec<Ticket> = queued.into_iter().take(size).cloned().collect();
        for t in &tickets {
            inner.tickets.remove(&t.account);
            inner.pending.insert(t.account.clone(), Expiring::new(match_id.to_owned(), pending_secs));
        }
        let forming = Forming { node: node.to_owned(), since: Instant::now(), tickets: tickets.clone() };
        inner.forming.insert(match_id.to_owned(), forming);
        Ok(Taken { tickets, dropped, put_back, expired })
    }

    async fn park(&self, account: &str, (node, conn): (&str, u64)) -> StoreResult<Parked> {
        let mut inner = self.inner.lock().unwrap();
        if live(&inner.pending, account).is_some() {
            return Ok(Parked::Forming);
        }
        match inner.tickets.get_mut(account) {
            Some(t) if t.node == node && t.conn == conn && t.grace_secs > 0 => {
                t.away_until_ms = Some(super::unix_now_ms() + t.grace_secs * 1000);
                Ok(Parked::Kept)
            }
            _ => Ok(Parked::None),
        }
    }

    async fn reclaim(&self, account: &str, (node, conn): (&str, u64)) -> StoreResult<Option<(String, u64)>> {
        let mut inner = self.inner.lock().unwrap();
        let now_ms = super::unix_now_ms();
        match inner.tickets.get_mut(account) {
            Some(t) if t.grace_secs > 0 && t.away_until_ms.is_none_or(|until| until >= now_ms) => {
                let before = (std::mem::replace(&mut t.node, node.to_owned()), std::mem::replace(&mut t.conn, conn));
                t.away_until_ms = None;
                Ok(Some(before))
            }
            _ => Ok(None),
        }
    }

    async fn put_back(&self, match_id: &str, max_tries: u32) -> StoreResult<u64> {
        Ok(self.inner.lock().unwrap().restore(match_id, &[], 1, Some(max_tries)).0)
    }

    async fn start(
        &self,
        match_id: &str,
        server: &str,
        frames: &[(String, String)],
        joinable_secs: u64,
    ) -> StoreResult<bool> {
        let mut inner = self.inner.lock().unwrap();
        if inner.forming.remove(match_id).is_none() {
            return Ok(false);
        }
        let accounts: Vec<String> = frames.iter().map(|(account, _)| account.clone()).collect();
        for (account, frame) in frames {
            // Still "Match already found" while the match is joinable.
            inner.pending.insert(account.clone(), Expiring::new(match_id.to_owned(), joinable_secs));
            inner.found.insert(account.clone(), Expiring::new(frame.clone(), joinable_secs));
            let formed = inner.counters.entry(formed_key(account)).or_insert_with(|| Expiring::new(0, 0));
            if formed.until <= Instant::now() {
                *formed = Expiring::new(0, MATCH_COUNT_WINDOW_SECS);
            }
            formed.value += 1;
        }
        inner.matches.insert(match_id.to_owned(), Expiring::new((server.to_owned(), accounts), joinable_secs));
        Ok(true)
    }

    async fn joinable_many(&self, accounts: &[&str]) -> StoreResult<Vec<Joinable>> {
        let inner = self.inner.lock().unwrap();
        let joinable = |account: &str| match (live(&inner.found, account), live(&inner.pending, account)) {
            (Some(frame), _) => Joinable::Found(frame.clone()),
            (None, Some(_)) => Joinable::Forming,
            (None, None) => Joinable::None,
        };
        Ok(accounts.iter().map(|a| joinable(a)).collect())
    }

    async fn confirm(&self, match_id: &str, secs: u64) -> StoreResult<bool> {
        let mut inner = self.inner.lock().unwrap();
        let Some((server, accounts)) = live(&inner.matches, match_id).cloned() else {
            return Ok(false);
        };
        // As mm_confirm.lua: a confirmed match no longer counts against its players' cap.
        if inner.confirmed.insert(match_id.to_owned()) {
            for account in accounts {
                if let Some(formed) = inner.counters.get_mut(&formed_key(&account)) {
                    formed.value = formed.value.saturating_sub(1);
                }
            }
        }
        let until = Expiring::new((), secs).until;
        inner.matches.get_mut(match_id).expect("live").until = until;
        if let Some(lease) = inner.leases.get_mut(&server).filter(|l| l.until > Instant::now() && l.value == match_id) {
            lease.until = until;
        }
        Ok(true)
    }

    async fn current(&self, server: &str) -> StoreResult<Option<(String, Vec<String>)>> {
        let inner = self.inner.lock().unwrap();
        let Some(match_id) = live(&inner.leases, server) else {
            return Ok(None);
        };
        Ok(live(&inner.matches, match_id.as_str()).map(|(_, accounts)| (match_id.clone(), accounts.clone())))
    }

    async fn end(&self, match_id: &str) -> StoreResult<bool> {
        let mut inner = self.inner.lock().unwrap();
        let Some((server, accounts)) = live(&inner.matches, match_id).cloned() else {
            return Ok(false);
        };
        inner.matches.remove(match_id);
        inner.end_pending(match_id, accounts.clone());
        for account in accounts {
            if live(&inner.found, account.as_str()).is_some_and(|frame| frame.contains(match_id)) {
                inner.found.remove(&account);
            }
        }
        if live(&inner.leases, server.as_str()).is_some_and(|m| m == match_id) {
            inner.leases.remove(&server);
        }
        Ok(true)
    }

    async fn length(&self, queue: &str) -> StoreResult<u64> {
        Ok(self.inner.lock().unwrap().tickets.values().filter(|t| t.queue == queue).count() as u64)
    }

    async fn lease(&self, server: &str, match_id: &str, secs: u64) -> StoreResult<bool> {
        let mut inner = self.inner.lock().unwrap();
        if live(&inner.leases, server).is_some() {
            return Ok(false);
        }
        inner.leases.insert(server.to_owned(), Expiring::new(match_id.to_owned(), secs));
        Ok(true)
    }

    async fn overview(&self, queues: &[String], servers: &[String]) -> StoreResult<Vec<QueueOverview>> {
        let inner = self.inner.lock().unwrap();
        let leased = servers.iter().filter(|s| live(&inner.leases, s.as_str()).is_some()).count() as u64;
        Ok(queues
            .iter()
            .map(|queue| {
                let waiting = inner.tickets.values().filter(|t| &t.queue == queue);
                let first = waiting.clone().min_by_key(|t| t.seq);
                let forming = inner.forming.values().filter(|f| f.tickets.first().is_some_and(|t| &t.queue == queue));
                QueueOverview {
                    queue: queue.clone(),
                    waiting: waiting.count() as u64,
                    oldest_joined_ms: first.map(|t| t.joined_ms),
                    forming: forming.count() as u64,
                    leased,
                }
            })
            .collect())
    }

    async fn unlease(&self, server: &str, match_id: &str) -> StoreResult<()> {
        let mut inner = self.inner.lock().unwrap();
        if live(&inner.leases, server).is_some_and(|m| m == match_id) {
            inner.leases.remove(server);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guesser trying ever new names (each a new subject) leaves entries that expire;
    /// they are swept, so the twin's memory follows the live ones (it is every node's
    /// fallback for the login throttle, counting all along).
    #[tokio::test]
    async fn expired_login_entries_are_swept() {
        let shared = MemoryShared::default();
        let policy = LoginPolicy {
            free: 5,
            base_ms: 1000,
            max_ms: 1000,
            forget_ms: 0,
            per_subject: 100,
            window_ms: 1,
            known_ms: 1,
        };
        let guess =
            |i: usize| LoginKey { subject: format!("n{i}"), network: "10.0.0.0/24".into(), address: "10.0.0.1".into() };
        for i in 0..20_000 {
            let key = guess(i);
            let Admit::Check(pair) = shared.login_admit(&key, &policy).await.unwrap() else { panic!() };
            shared.login_resolved(&key, pair, Resolved::Wrong, &policy).await.unwrap();
            // As if their waits had passed: each entry is forgotten at once.
            let mut inner = shared.inner.lock().unwrap();
            let past = Instant::now() - Duration::from_secs(1);
            inner.logins.values_mut().for_each(|pair| pair.forget = past);
            inner.counters.values_mut().for_each(|counter| counter.until = past);
        }
        let inner = shared.inner.lock().unwrap();
        let size = inner.logins.len() + inner.known.len() + inner.counters.len();
        assert!(size < 2 * 2 * SWEEP_FROM, "{size} entries kept for 20,000 expired guesses");
    }

    /// A node judged dead is reported gone and stops counting, as Redis reports a node
    /// whose heartbeat went stale; beating again brings it back.
    #[tokio::test]
    async fn a_node_marked_gone_is_gone_until_it_beats_again() {
        let shared = MemoryShared::default();
        shared.beat("a", 1).await.unwrap();
        shared.beat("b", 2).await.unwrap();
        shared.mark_gone("a");
        let beat = shared.beat("b", 2).await.unwrap();
        assert_eq!((beat.others, beat.gone, beat.unknown), (Vec::new(), vec!["a".to_owned()], false));
        // Back: unknown (its routes must be written again), and no longer gone.
        assert!(shared.beat("a", 1).await.unwrap().unknown);
        let beat = shared.beat("b", 2).await.unwrap();
        assert_eq!((beat.others, beat.gone), (vec![("a".to_owned(), 1)], Vec::new()));
        // A node that withdrew is not dead.
        shared.remove("a").await.unwrap();
        assert_eq!(shared.beat("b", 2).await.unwrap().gone, Vec::<String>::new());
    }
}

/// One resume stream, as Redis keeps it: entries in id order (each with the id of the
/// entry before it), the last id handed out, and when it was last appended to (an idle
/// stream is forgotten, as its Redis key expires).
#[derive(Default)]
pub struct MemStream {
    entries: std::collections::VecDeque<(StreamId, StreamId, String)>,
    last: StreamId,
    expires: Option<Instant>,
}

fn stream_name(stream: StreamOf) -> String {
    match stream {
        StreamOf::Global => "g".to_owned(),
        StreamOf::Personal(account) => format!("p:{account}"),
    }
}

impl MemoryShared {
    /// The stream, forgotten first if it went idle.
    fn with_stream<T>(&self, stream: StreamOf, f: impl FnOnce(&mut MemStream) -> T) -> T {
        let mut streams = self.streams.lock().unwrap();
        let entry = streams.entry(stream_name(stream)).or_default();
        if entry.expires.is_some_and(|at| at <= Instant::now()) {
            *entry = MemStream::default();
        }
        f(entry)
    }

    fn append_now(&self, stream: StreamOf, frame: &str, limits: &StreamLimits) -> Appended {
        let now_ms = super::unix_now_ms();
        self.with_stream(stream, |s| {
            let prev = s.entries.back().map_or(StreamId::ZERO, |(id, _, _)| *id);
            let pos = s.last.next(now_ms);
            s.last = pos;
            s.entries.push_back((pos, prev, frame.to_owned()));
            let cutoff = StreamId { ms: now_ms.saturating_sub(limits.window_ms), seq: 0 };
            while s.entries.len() as u64 > limits.cap(stream)
                || s.entries.front().is_some_and(|(id, _, _)| *id < cutoff)
            {
                s.entries.pop_front();
            }
            s.expires = Some(Instant::now() + Duration::from_secs(limits.idle_secs()));
            Appended { pos, prev }
        })
    }
}

#[async_trait]
impl Streams for MemoryShared {
    async fn append(&self, stream: StreamOf<'_>, frame: &str, limits: &StreamLimits) -> StoreResult<Appended> {
        Ok(self.append_now(stream, frame, limits))
    }

    async fn take_append_publish(
        &self,
        user_id: i64,
        rate: Option<ChatRate>,
        frame: &str,
        event: &BusEvent,
        limits: &StreamLimits,
    ) -> StoreResult<Option<Appended>> {
        if rate.is_some_and(|rate| !self.chat.take(user_id, rate.per_sec, rate.burst)) {
            return Ok(None);
        }
        let at = self.append_now(StreamOf::Global, frame, limits);
        let mut event = event.clone();
        if let BusEvent::Global { at: slot, .. } = &mut event {
            *slot = Some(at);
        }
        self.publish(&event).await?;
        Ok(Some(at))
    }

    async fn read_after(
        &self,
        stream: StreamOf<'_>,
        after: StreamId,
        upto: Option<StreamId>,
        limit: u64,
    ) -> StoreResult<History> {
        Ok(self.with_stream(stream, |s| {
            let after_it = s.entries.iter().filter(|(id, _, _)| *id > after);
            let found: Vec<_> =
                after_it.take_while(|(id, _, _)| upto.is_none_or(|upto| *id <= upto)).take(limit as usize).collect();
            // The entry right after the position still names it (or one before it) as
            // its predecessor: nothing between them was trimmed.
            let complete = found.first().is_none_or(|(_, prev, _)| *prev <= after);
            History { entries: found.into_iter().map(|(id, _, frame)| (*id, frame.clone())).collect(), complete }
        }))
    }

    async fn last(&self, stream: StreamOf<'_>) -> StoreResult<StreamId> {
        Ok(self.with_stream(stream, |s| s.entries.back().map_or(StreamId::ZERO, |(id, _, _)| *id)))
    }
}
