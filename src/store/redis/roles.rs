//! The roles on plain keys and small scripts: the token cache, sessions, limits
//! (registrations, the login throttle), presence, the directory and chat buckets.

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{lane, sized_cmd, RedisStore};
use crate::auth::TokenHash;
use crate::store::{
    seconds_until, unix_now, Admit, Beat, CacheLookup, ChatBuckets, ChatRate, Directory, Limits, LoginKey, LoginPolicy,
    NameLookup, NodeInfo, Pair, Presence, Resolved, Route, Sessions, Standing, StoreResult, TokenCache, TokenRecord,
    GONE_KEPT_MS, GUESS_IN_FLIGHT_MS, NODE_INFO_FRESH_SECS,
};

/// A node whose heartbeat is older than this stops counting (a few missed heartbeats).
pub const PRESENCE_STALE_MS: u64 = 5_000;

impl RedisStore {
    /// `login.lua` for one guess: its keys share the subject's tag.
    fn login_invocation(
        &self,
        key: &LoginKey,
        op: &str,
        pair: Pair,
        policy: &LoginPolicy,
    ) -> redis::ScriptInvocation<'_> {
        let [network_pair, address_pair, failures, known] = self.login_keys(key);
        let mut inv = self.login.key(network_pair);
        inv.key(address_pair).key(failures).key(known).arg(op).arg(&key.network).arg(&key.address);
        inv.arg(if pair == Pair::Address { "a" } else { "n" });
        inv.arg(policy.free).arg(policy.base_ms).arg(policy.max_ms).arg(policy.forget_ms);
        inv.arg(policy.per_subject).arg(policy.window_ms).arg(policy.known_ms).arg(GUESS_IN_FLIGHT_MS);
        inv
    }
}

fn parse_token_entry(value: &str) -> Option<TokenRecord> {
    // `<user id> <expiry> <username>`, then, for an account with sanctions, a line of
    // its standing as JSON (a username has no line breaks).
    let (value, standing) = value.split_once('\n').unwrap_or((value, ""));
    let standing = if standing.is_empty() { Standing::default() } else { serde_json::from_str(standing).ok()? };
    let mut parts = value.splitn(3, ' ');
    let user_id = parts.next()?.parse().ok()?;
    let expires_at = parts.next()?.parse().ok()?;
    let username = parts.next()?.to_owned();
    Some(TokenRecord { user_id, username, expires_at, standing })
}

/// What the token cache holds for a token: its entry and its session's display name.
fn cache_lookup(entry: Option<&str>, display_name: Option<&str>) -> CacheLookup {
    let display_name = display_name.map(Into::into);
    match entry {
        Some("-") => CacheLookup::Negative,
        Some(value) => match parse_token_entry(value) {
            Some(token) => CacheLookup::Hit { token, display_name },
            None => CacheLookup::Miss { display_name },
        },
        None => CacheLookup::Miss { display_name },
    }
}

fn token_entry(record: &TokenRecord) -> String {
    let mut value = format!("{} {} {}", record.user_id, record.expires_at, record.username);
    // A waiting kick is PostgreSQL's to hand out once, never the cache's.
    let standing = Standing { kick: None, ..record.standing.clone() };
    if !standing.is_clear() {
        value.push('\n');
        value.push_str(&serde_json::to_string(&standing).expect("standing serializes"));
    }
    value
}

#[async_trait]
impl TokenCache for RedisStore {
    async fn lookup(&self, token: &TokenHash) -> StoreResult<CacheLookup> {
        let keys = self.token_keys(token);
        if let Some(lane) = &self.lane {
            let mget: [&[u8]; 3] = [b"MGET", keys.tok(), keys.sess()];
            return self
                .run_lane(lane, &mget, |reply| {
                    let [entry, display_name] = lane::bulks(reply)?;
                    Ok(cache_lookup(entry, display_name))
                })
                .await;
        }
        let mut cmd = sized_cmd("MGET", 2, keys.both.len());
        cmd.arg(keys.tok()).arg(keys.sess());
        let (entry, display_name): (Option<String>, Option<String>) =
            self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        Ok(cache_lookup(entry.as_deref(), display_name.as_deref()))
    }

    async fn cache(
        &self,
        token: &TokenHash,
        record: &TokenRecord,
        ttl_secs: u64,
        display_name: Option<&str>,
    ) -> StoreResult<()> {
        let keys = self.token_keys(token);
        let mut pipe = redis::pipe();
        pipe.set_ex(keys.tok(), token_entry(record), ttl_secs.max(1)).ignore();
        if let Some(name) = display_name {
            pipe.set_ex(keys.sess(), name, seconds_until(record.expires_at)).ignore();
        }
        self.run(|mut c| async move { pipe.query_async(&mut c).await }).await
    }

    async fn cache_negative(&self, token: &TokenHash, ttl_secs: u64) -> StoreResult<()> {
        let keys = self.token_keys(token);
        // NX: never overwrite an entry a concurrent login just wrote.
        let mut cmd = redis::cmd("SET");
        cmd.arg(keys.tok()).arg("-").arg("EX").arg(ttl_secs.max(1)).arg("NX");
        self.run(|mut c| async move { cmd.query_async::<Option<String>>(&mut c).await.map(|_| ()) }).await
    }

    async fn forget(&self, tokens: &[TokenHash]) -> StoreResult<()> {
        // One command per token: each token's keys share a slot, different tokens may not.
        for t in tokens {
            let keys = self.token_keys(t);
            let mut cmd = redis::cmd("DEL");
            cmd.arg(keys.tok()).arg(keys.sess());
            self.run(|mut c| async move { cmd.query_async::<()>(&mut c).await }).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sessions for RedisStore {
    async fn set_display_name(&self, token: &TokenHash, name: &str, ttl_secs: u64) -> StoreResult<()> {
        let keys = self.token_keys(token);
        let mut ttl = itoa::Buffer::new();
        self.command(&[b"SETEX", keys.sess(), ttl.format(ttl_secs.max(1)).as_bytes(), name.as_bytes()], lane::expect_ok)
            .await
    }
}

#[async_trait]
impl Limits for RedisStore {
    async fn login_admit(&self, key: &LoginKey, policy: &LoginPolicy) -> StoreResult<Admit> {
        let inv = self.login_invocation(key, "admit", Pair::Network, policy);
        let decided: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(match decided {
            1 => Admit::Check(Pair::Network),
            3 => Admit::Check(Pair::Address),
            2 => Admit::Wait,
            _ => Admit::Refuse,
        })
    }

    async fn login_resolved(&self, key: &LoginKey, pair: Pair, how: Resolved, policy: &LoginPolicy) -> StoreResult<()> {
        let op = match how {
            Resolved::Wrong => "wrong",
            Resolved::Right => "right",
        };
        let inv = self.login_invocation(key, op, pair, policy);
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

    async fn failed_logins(&self, subject: &str) -> StoreResult<u64> {
        let key = LoginKey { subject: subject.to_owned(), network: String::new(), address: String::new() };
        let [_, _, failures, _] = self.login_keys(&key);
        let count: Option<u64> = self.run(|mut c| async move { c.get(failures).await }).await?;
        Ok(count.unwrap_or(0))
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
        pipe.hdel(self.nodes_key(), node_id).ignore();
        self.run(|mut c| async move { pipe.query_async(&mut c).await }).await
    }

    async fn announce(&self, node: &NodeInfo) -> StoreResult<()> {
        let (key, body) = (self.nodes_key(), serde_json::to_string(node).expect("node facts serialize"));
        let id = node.id.clone();
        self.run(|mut c| async move { c.hset(key, id, body).await }).await
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let key = self.nodes_key();
        let all: Vec<(String, String)> = self.run(|mut c| async move { c.hgetall(key).await }).await?;
        let now = unix_now();
        let (mut fresh, mut stale) = (Vec::new(), Vec::new());
        for (id, body) in all {
            match serde_json::from_str::<NodeInfo>(&body) {
                Ok(node) if now - node.heartbeat <= NODE_INFO_FRESH_SECS => fresh.push(node),
                _ => stale.push(id),
            }
        }
        // Dead nodes' facts go with the first look after they stop beating.
        if !stale.is_empty() {
            let key = self.nodes_key();
            self.run(|mut c| async move { c.hdel::<_, _, ()>(key, stale).await }).await?;
        }
        fresh.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(fresh)
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
        self.command(&[b"SADD", self.route_key(route).as_bytes(), node_id.as_bytes()], lane::expect_integer).await
    }

    async fn leave(&self, route: &Route, node_id: &str) -> StoreResult<()> {
        self.command(&[b"SREM", self.route_key(route).as_bytes(), node_id.as_bytes()], lane::expect_integer).await
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
}
