//! The matchmaking queue: tickets, queues, forming and started matches, game-server
//! leases, on keys under one hash tag, `{mm}` (the schema in the module header). An
//! operation that changes more than one key is a script (`lua/mm_*.lua`), given each
//! key it touches in `KEYS`.
//!
//! Some keys are named from data: the queue of an account's ticket, the accounts
//! and queues of a forming match's tickets, a started match's accounts and game
//! server, the match holding a lease. They are named here from a hint (data read
//! before, or the answer of an earlier attempt) that goes to the script too; the
//! script reads the data again and, if the names it needs differ, changes nothing and
//! answers `{'retry', fresh hint}`, and the operation runs again with it, at most
//! [`ATTEMPTS`] times. Round trips, common case (each retry one more):
//! - `join`: 1 (the old ticket's queue guessed as the one this node last saw the
//!   account in, else the new ticket's, which needs no old queue key at all)
//! - `leave`, `position`: 1 when this node saw the account's queue last, else 2
//! - `take`: 1 when too few are queued; 2 when a match forms (the first answers the
//!   accounts it would take); plus one `put_back` script per match a gone node was
//!   forming, and one more take
//! - `put_back`, `end`, `confirm`, `current`: 2 (a read, then the script)
//! - `start`, `joinable`, `length`, `lease`, `unlease`: 1 (no key named from data)

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex};

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use serde::de::DeserializeOwned;

use super::RedisStore;
use crate::error::StoreError;
use crate::store::{
    Joinable, Joined, Left, MatchQueue, Parked, QueueOverview, StoreResult, Taken, Ticket, MATCH_COUNT_WINDOW_SECS,
};

/// Attempts an operation makes at naming its keys before giving up.
const ATTEMPTS: usize = 16;

/// Accounts [`QueueHints`] remembers at most.
const HINTS: usize = 10_000;

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
    grace: Script,
}

static MM: LazyLock<MmScripts> = LazyLock::new(|| MmScripts {
    join: Script::new(include_str!("lua/mm_join.lua")),
    leave: Script::new(include_str!("lua/mm_leave.lua")),
    position: Script::new(include_str!("lua/mm_position.lua")),
    take: Script::new(include_str!("lua/mm_take.lua")),
    put_back: Script::new(include_str!("lua/mm_put_back.lua")),
    start: Script::new(include_str!("lua/mm_start.lua")),
    end: Script::new(include_str!("lua/mm_end.lua")),
    unlease: Script::new(include_str!("lua/mm_unlease.lua")),
    confirm: Script::new(include_str!("lua/mm_confirm.lua")),
    current: Script::new(include_str!("lua/mm_current.lua")),
    grace: Script::new(include_str!("lua/mm_grace.lua")),
});

/// The queue this node last saw each account's ticket in: the first guess at the
/// queue key of `join`, `leave` and `position`. A wrong guess costs a retry, never a
/// wrong answer; forgotten all at once past [`HINTS`] accounts.
#[derive(Default)]
pub(super) struct QueueHints(Mutex<HashMap<String, String>>);

impl QueueHints {
    fn get(&self, account: &str) -> Option<String> {
        self.0.lock().unwrap().get(account).cloned()
    }

    fn set(&self, account: &str, queue: &str) {
        let mut hints = self.0.lock().unwrap();
        if hints.len() >= HINTS && !hints.contains_key(account) {
            hints.clear();
        }
        hints.insert(account.to_owned(), queue.to_owned());
    }

    fn forget(&self, account: &str) {
        self.0.lock().unwrap().remove(account);
    }
}

/// One attempt's outcome: done, or to be run again from a fresh hint (nothing changed).
enum Step<T, H> {
    Done(T),
    Retry(H),
}

/// Runs `attempt` from `hint`, then from each fresh hint it answers, until it is done.
async fn retrying<T, H, F, Fut>(mut hint: H, mut attempt: F) -> StoreResult<T>
where
    F: FnMut(H) -> Fut,
    Fut: Future<Output = StoreResult<Step<T, H>>>,
{
    for _ in 0..ATTEMPTS {
        match attempt(hint).await? {
            Step::Done(done) => return Ok(done),
            Step::Retry(fresh) => hint = fresh,
        }
    }
    Err(changed_too_often())
}

fn changed_too_often() -> StoreError {
    StoreError::Other("matchmaking state changed too often; try again".into())
}

/// A started match as `{mm}:match:<id>` records it.
#[derive(serde::Deserialize)]
struct MatchRecord {
    server: String,
    accounts: Vec<String>,
}

/// A forming match as `{mm}:forming` records it: whose tickets, from which queues.
#[derive(serde::Deserialize)]
struct FormingRecord {
    tickets: Vec<Named>,
}

#[derive(serde::Deserialize)]
struct Named {
    account: String,
    queue: String,
}

fn record<T: DeserializeOwned>(raw: &str) -> StoreResult<T> {
    serde_json::from_str(raw).map_err(|e| StoreError::Other(format!("malformed match record in Redis: {e}")))
}

fn ticket_from(raw: &str) -> StoreResult<Ticket> {
    serde_json::from_str(raw).map_err(|e| StoreError::Other(format!("malformed ticket in Redis: {e}")))
}

/// A script's reply: what happened (its first field), then its fields.
struct Reply(Vec<String>);

impl Reply {
    fn tag(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    fn field(&self, i: usize) -> String {
        self.0.get(i).cloned().unwrap_or_default()
    }

    fn count(&self, i: usize) -> u64 {
        self.0.get(i).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    fn unexpected(&self, script: &str) -> StoreError {
        StoreError::Other(format!("unexpected reply from {script}: {:?}", self.0))
    }
}

impl RedisStore {
    async fn invoke(&self, inv: redis::ScriptInvocation<'static>) -> StoreResult<Reply> {
        self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await.map(Reply)
    }

    async fn get(&self, key: String) -> StoreResult<Option<String>> {
        self.run(|mut c| async move { c.get(key).await }).await
    }

    /// Ends forming match `match_id` (mm_put_back.lua), `raw` being its record as
    /// last read: (put back, lost to `gone` nodes).
    async fn restore(
        &self,
        match_id: &str,
        raw: String,
        tries: u32,
        max_tries: Option<u32>,
        gone: &[String],
    ) -> StoreResult<(u64, u64)> {
        retrying(raw, |raw| async move {
            let forming: FormingRecord = record(&raw)?;
            let mut inv = MM.put_back.key(self.mm_key("tickets"));
            inv.key(self.mm_key("forming"));
            for t in &forming.tickets {
                inv.key(self.mm_key(&format!("pending:{}", t.account))).key(self.mm_key(&format!("q:{}", t.queue)));
            }
            inv.arg(match_id).arg(&raw).arg(tries).arg(max_tries.map(|m| m.to_string()).unwrap_or_default());
            for node in gone {
                inv.arg(node);
            }
            let reply = self.invoke(inv).await?;
            match reply.tag() {
                "done" => Ok(Step::Done((reply.count(1), reply.count(2)))),
                "retry" => Ok(Step::Retry(reply.field(1))),
                _ => Err(reply.unexpected("mm_put_back.lua")),
            }
        })
        .await
    }
}

#[async_trait]
impl MatchQueue for RedisStore {
    async fn join(&self, ticket: &Ticket, max_matches: u64) -> StoreResult<Joined> {
        let account = &ticket.account;
        let body = serde_json::to_string(ticket).expect("tickets serialize");
        let guess = self.mm_hints.get(account).unwrap_or_else(|| ticket.queue.clone());
        let joined = retrying(guess, |old| {
            let mut inv = MM.join.key(self.mm_key("tickets"));
            inv.key(self.mm_key("seq")).key(self.mm_key(&format!("pending:{account}")));
            inv.key(self.mm_key(&format!("formed:{account}"))).key(self.mm_key(&format!("q:{}", ticket.queue)));
            inv.key(self.mm_key(&format!("q:{old}")));
            inv.arg(account).arg(&body).arg(max_matches).arg(old);
            async move {
                let reply = self.invoke(inv).await?;
                Ok(Step::Done(match reply.tag() {
                    "retry" => return Ok(Step::Retry(reply.field(1))),
                    "pending" => Joined::MatchPending,
                    "limited" => Joined::Limited,
                    "kept" => Joined::Kept { node: reply.field(1), conn: reply.field(2).parse().unwrap_or_default() },
                    "new" => Joined::New,
                    _ => return Err(reply.unexpected("mm_join.lua")),
                }))
            }
        })
        .await?;
        if matches!(joined, Joined::New | Joined::Kept { .. }) {
            self.mm_hints.set(account, &ticket.queue);
        }
        Ok(joined)
    }

    async fn leave(&self, account: &str, holder: Option<(&str, u64)>) -> StoreResult<Left> {
        let (node, conn) = holder.map_or((String::new(), String::new()), |(n, c)| (n.to_owned(), c.to_string()));
        let guess = self.mm_hints.get(account).unwrap_or_default();
        let left = retrying(guess, |queue| {
            let mut inv = MM.leave.key(self.mm_key("tickets"));
            inv.key(self.mm_key("forming")).key(self.mm_key(&format!("pending:{account}")));
            inv.key(self.mm_key(&format!("q:{queue}")));
            inv.arg(account).arg(&node).arg(&conn).arg(queue);
            async move {
                let reply = self.invoke(inv).await?;
                Ok(Step::Done(match reply.tag() {
                    "retry" => return Ok(Step::Retry(reply.field(1))),
                    "pending" => Left::MatchPending,
                    "removed" => Left::Removed(ticket_from(&reply.field(1))?),
                    "none" => Left::NoTicket,
                    _ => return Err(reply.unexpected("mm_leave.lua")),
                }))
            }
        })
        .await?;
        if !matches!(left, Left::MatchPending) {
            self.mm_hints.forget(account);
        }
        Ok(left)
    }

    async fn position(&self, account: &str) -> StoreResult<Option<(Ticket, u64)>> {
        let guess = self.mm_hints.get(account).unwrap_or_default();
        let found = retrying(guess, |queue| {
            let mut inv = MM.position.key(self.mm_key("tickets"));
            inv.key(self.mm_key(&format!("q:{queue}"))).arg(account).arg(queue);
            async move {
                let reply = self.invoke(inv).await?;
                Ok(Step::Done(match reply.tag() {
                    "retry" => return Ok(Step::Retry(reply.field(1))),
                    "at" => Some((ticket_from(&reply.field(1))?, reply.count(2))),
                    "none" => None,
                    _ => return Err(reply.unexpected("mm_position.lua")),
                }))
            }
        })
        .await?;
        match &found {
            Some((ticket, _)) => self.mm_hints.set(account, &ticket.queue),
            None => self.mm_hints.forget(account),
        }
        Ok(found)
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
        let mut taken = Taken::default();
        // The accounts the previous attempt would have taken: none at first, so a
        // queue too short for a match costs one round trip.
        let mut expected: Vec<String> = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut inv = MM.take.key(self.mm_key("tickets"));
            inv.key(self.mm_key("forming")).key(self.mm_key(&format!("q:{queue}")));
            for account in &expected {
                inv.key(self.mm_key(&format!("pending:{account}")));
            }
            inv.arg(size).arg(match_id).arg(pending_secs.max(1)).arg(node);
            for account in &expected {
                inv.arg(account);
            }
            for node in gone {
                inv.arg(node);
            }
            let reply = self.invoke(inv).await?;
            let (dropped, expired) = reply
                .field(1)
                .split_once(':')
                .map_or((reply.count(1), 0), |(d, e)| (d.parse().unwrap_or(0), e.parse().unwrap_or(0)));
            taken.dropped += dropped;
            taken.expired += expired;
            let mut fields = reply.0.iter().skip(2);
            match reply.tag() {
                "taken" => {
                    taken.tickets = fields.map(|raw| ticket_from(raw)).collect::<StoreResult<_>>()?;
                    return Ok(taken);
                }
                "retry" => expected = fields.cloned().collect(),
                // Matches gone nodes were forming: their players go back first, in order.
                "restore" => {
                    while let (Some(id), Some(raw)) = (fields.next(), fields.next()) {
                        let (back, lost) = self.restore(id, raw.clone(), 0, None, gone).await?;
                        taken.put_back += back;
                        taken.dropped += lost;
                    }
                }
                _ => return Err(reply.unexpected("mm_take.lua")),
            }
        }
        Err(changed_too_often())
    }

    async fn park(&self, account: &str, (node, conn): (&str, u64)) -> StoreResult<Parked> {
        let mut inv = MM.grace.key(self.mm_key("tickets"));
        inv.key(self.mm_key(&format!("pending:{account}"))).arg("park").arg(account).arg(node).arg(conn);
        let reply = self.invoke(inv).await?;
        Ok(match reply.tag() {
            "kept" => Parked::Kept,
            "forming" => Parked::Forming,
            _ => Parked::None,
        })
    }

    async fn reclaim(&self, account: &str, (node, conn): (&str, u64)) -> StoreResult<Option<(String, u64)>> {
        let mut inv = MM.grace.key(self.mm_key("tickets"));
        inv.key(self.mm_key(&format!("pending:{account}"))).arg("reclaim").arg(account).arg(node).arg(conn);
        let reply = self.invoke(inv).await?;
        Ok((reply.tag() == "reclaimed").then(|| (reply.field(1), reply.count(2))))
    }

    async fn put_back(&self, match_id: &str, max_tries: u32) -> StoreResult<u64> {
        let (key, field) = (self.mm_key("forming"), match_id.to_owned());
        let raw: Option<String> = self.run(|mut c| async move { c.hget(key, field).await }).await?;
        // A match id forms once: a record gone is gone for good.
        let Some(raw) = raw else { return Ok(0) };
        Ok(self.restore(match_id, raw, 1, Some(max_tries), &[]).await?.0)
    }

    async fn start(
        &self,
        match_id: &str,
        server: &str,
        frames: &[(String, String)],
        joinable_secs: u64,
    ) -> StoreResult<bool> {
        let mut inv = MM.start.key(self.mm_key("forming"));
        inv.key(self.mm_key(&format!("match:{match_id}")));
        inv.arg(match_id).arg(server).arg(joinable_secs.max(1)).arg(MATCH_COUNT_WINDOW_SECS);
        for (account, frame) in frames {
            inv.key(self.mm_key(&format!("pending:{account}"))).key(self.mm_key(&format!("found:{account}")));
            inv.key(self.mm_key(&format!("formed:{account}")));
            inv.arg(account).arg(frame);
        }
        let started: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(started == 1)
    }

    async fn joinable_many(&self, accounts: &[&str]) -> StoreResult<Vec<Joinable>> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        // All matchmaking keys share the `{mm}` slot: one MGET on a cluster too.
        let mut cmd = redis::cmd("MGET");
        for account in accounts {
            cmd.arg(self.mm_key(&format!("found:{account}"))).arg(self.mm_key(&format!("pending:{account}")));
        }
        let values: Vec<Option<String>> = self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        let mut values = values.into_iter();
        let mut joinable = Vec::with_capacity(accounts.len());
        while let (Some(found), Some(pending)) = (values.next(), values.next()) {
            joinable.push(match (found, pending) {
                (Some(frame), _) => Joinable::Found(frame),
                (None, Some(_)) => Joinable::Forming,
                (None, None) => Joinable::None,
            });
        }
        Ok(joinable)
    }

    async fn confirm(&self, match_id: &str, secs: u64) -> StoreResult<bool> {
        let key = self.mm_key(&format!("match:{match_id}"));
        // Only mm_start.lua writes a match record: one gone is gone for good.
        let Some(raw) = self.get(key.clone()).await? else { return Ok(false) };
        let key = &key;
        retrying(raw, |raw| async move {
            let started: MatchRecord = record(&raw)?;
            let mut inv = MM.confirm.key(key);
            inv.key(self.mm_key(&format!("lease:{}", started.server)));
            for account in &started.accounts {
                inv.key(self.mm_key(&format!("formed:{account}")));
            }
            inv.arg(match_id).arg(secs.max(1)).arg(&raw);
            let reply = self.invoke(inv).await?;
            match reply.tag() {
                "confirmed" => Ok(Step::Done(true)),
                "unknown" => Ok(Step::Done(false)),
                "retry" => Ok(Step::Retry(reply.field(1))),
                _ => Err(reply.unexpected("mm_confirm.lua")),
            }
        })
        .await
    }

    async fn current(&self, server: &str) -> StoreResult<Option<(String, Vec<String>)>> {
        let lease = self.mm_key(&format!("lease:{server}"));
        let Some(holder) = self.get(lease.clone()).await? else { return Ok(None) };
        let lease = &lease;
        retrying(holder, |holder| async move {
            let mut inv = MM.current.key(lease);
            inv.key(self.mm_key(&format!("match:{holder}"))).arg(&holder);
            let reply = self.invoke(inv).await?;
            match reply.tag() {
                "match" => Ok(Step::Done(Some((reply.field(1), record::<MatchRecord>(&reply.field(2))?.accounts)))),
                "none" => Ok(Step::Done(None)),
                "retry" => Ok(Step::Retry(reply.field(1))),
                _ => Err(reply.unexpected("mm_current.lua")),
            }
        })
        .await
    }

    async fn end(&self, match_id: &str) -> StoreResult<bool> {
        let key = self.mm_key(&format!("match:{match_id}"));
        let Some(raw) = self.get(key.clone()).await? else { return Ok(false) };
        let key = &key;
        retrying(raw, |raw| async move {
            let started: MatchRecord = record(&raw)?;
            let mut inv = MM.end.key(key);
            inv.key(self.mm_key(&format!("lease:{}", started.server)));
            for account in &started.accounts {
                inv.key(self.mm_key(&format!("found:{account}"))).key(self.mm_key(&format!("pending:{account}")));
            }
            inv.arg(match_id).arg(&raw);
            let reply = self.invoke(inv).await?;
            match reply.tag() {
                "ended" => Ok(Step::Done(true)),
                "unknown" => Ok(Step::Done(false)),
                "retry" => Ok(Step::Retry(reply.field(1))),
                _ => Err(reply.unexpected("mm_end.lua")),
            }
        })
        .await
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

    async fn overview(&self, queues: &[String], servers: &[String]) -> StoreResult<Vec<QueueOverview>> {
        // Every key is in the {mm} slot: one pipeline for the counts and heads, one for
        // the heads' tickets.
        let mut pipe = redis::pipe();
        for queue in queues {
            let key = self.mm_key(&format!("q:{queue}"));
            pipe.zcard(&key).zrange(&key, 0, 0);
        }
        pipe.hvals(self.mm_key("forming"));
        for server in servers {
            pipe.exists(self.mm_key(&format!("lease:{server}")));
        }
        let replies: Vec<redis::Value> = self.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        let value = |i: usize| replies.get(i).cloned().unwrap_or(redis::Value::Nil);
        let parse = |v: redis::Value| redis::from_redis_value::<Vec<String>>(v).unwrap_or_default();
        let mut counts = Vec::new();
        for i in 0..queues.len() {
            let waiting: u64 = redis::from_redis_value(value(2 * i)).unwrap_or(0);
            counts.push((waiting, parse(value(2 * i + 1)).into_iter().next()));
        }
        let forming: Vec<String> = parse(value(2 * queues.len()));
        let leased = (0..servers.len())
            .filter(|s| redis::from_redis_value::<bool>(value(2 * queues.len() + 1 + s)).unwrap_or(false))
            .count() as u64;
        let heads: Vec<&String> = counts.iter().filter_map(|(_, head)| head.as_ref()).collect();
        let tickets: Vec<Option<String>> = if heads.is_empty() {
            Vec::new()
        } else {
            let (key, heads) = (self.mm_key("tickets"), heads.clone());
            self.run(|mut c| async move { redis::cmd("HMGET").arg(key).arg(heads).query_async(&mut c).await }).await?
        };
        let mut joined = tickets.into_iter().map(|raw| raw.and_then(|r| ticket_from(&r).ok()).map(|t| t.joined_ms));
        Ok(queues
            .iter()
            .zip(counts)
            .map(|(queue, (waiting, head))| {
                let forming = forming.iter().filter(|raw| forming_queue(raw).as_deref() == Some(queue)).count() as u64;
                QueueOverview {
                    queue: queue.clone(),
                    waiting,
                    oldest_joined_ms: head.and_then(|_| joined.next().flatten()),
                    forming,
                    leased,
                }
            })
            .collect())
    }
}

/// The queue of a forming match (`{mm}:forming` record): its first ticket's.
fn forming_queue(raw: &str) -> Option<String> {
    let record: serde_json::Value = serde_json::from_str(raw).ok()?;
    record["tickets"][0]["queue"].as_str().map(str::to_owned)
}
