//! The matchmaking queue: tickets, queues, forming and started matches, game-server
//! leases. Every operation is one script (`lua/mm_*.lua`) on keys under one hash tag,
//! `{mm}` (the schema in the module header).

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::RedisStore;
use crate::error::StoreError;
use crate::store::{
    Joinable, Joined, Left, MatchQueue, QueueOverview, StoreResult, Taken, Ticket, MATCH_COUNT_WINDOW_SECS,
};

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

/// A script that names keys from data: `lua/mm.lua` (their names, beside KEYS[1],
/// the tickets) first.
macro_rules! naming {
    ($($file:literal),+) => {
        Script::new(concat!(include_str!("lua/mm.lua"), $(include_str!($file)),+))
    };
}

static MM: std::sync::LazyLock<MmScripts> = std::sync::LazyLock::new(|| MmScripts {
    join: naming!("lua/mm_join.lua"),
    leave: naming!("lua/mm_leave.lua"),
    position: naming!("lua/mm_position.lua"),
    take: naming!("lua/mm_restore.lua", "lua/mm_take.lua"),
    put_back: naming!("lua/mm_restore.lua", "lua/mm_put_back.lua"),
    start: Script::new(include_str!("lua/mm_start.lua")),
    end: naming!("lua/mm_end.lua"),
    unlease: Script::new(include_str!("lua/mm_unlease.lua")),
    confirm: naming!("lua/mm_confirm.lua"),
    current: naming!("lua/mm_current.lua"),
});

/// A started match as `{mm}:match:<id>` records it.
#[derive(serde::Deserialize)]
struct MatchRecord {
    accounts: Vec<String>,
}

fn ticket_from(raw: &str) -> StoreResult<Ticket> {
    serde_json::from_str(raw).map_err(|e| StoreError::Other(format!("malformed ticket in Redis: {e}")))
}

#[async_trait]
impl MatchQueue for RedisStore {
    async fn join(&self, ticket: &Ticket, max_matches: u64) -> StoreResult<Joined> {
        let account = &ticket.account;
        let mut inv = MM.join.key(self.mm_key("tickets"));
        inv.key(self.mm_key("seq")).key(self.mm_key(&format!("pending:{account}")));
        inv.key(self.mm_key(&format!("formed:{account}"))).key(self.mm_key(&format!("q:{}", ticket.queue)));
        let body = serde_json::to_string(ticket).expect("tickets serialize");
        inv.arg(account).arg(body).arg(max_matches);
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
        inv.key(self.mm_key("forming")).key(self.mm_key(&format!("pending:{account}")));
        let (node, conn) = holder.map_or((String::new(), String::new()), |(n, c)| (n.to_owned(), c.to_string()));
        inv.arg(account).arg(node).arg(conn);
        let reply: Vec<String> = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("pending"), _) => Left::MatchPending,
            (Some("removed"), Some(raw)) => Left::Removed(ticket_from(raw)?),
            _ => Left::NoTicket,
        })
    }

    async fn position(&self, account: &str) -> StoreResult<Option<(Ticket, u64)>> {
        let mut inv = MM.position.key(self.mm_key("tickets"));
        inv.arg(account);
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
        inv.key(self.mm_key("forming")).key(self.mm_key(&format!("q:{queue}")));
        inv.arg(size).arg(match_id).arg(pending_secs.max(1)).arg(node);
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
        inv.key(self.mm_key("forming")).arg(match_id).arg(max_tries);
        self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await
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
        inv.key(self.mm_key(&format!("match:{match_id}"))).arg(match_id).arg(secs.max(1));
        let confirmed: i64 = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(confirmed == 1)
    }

    async fn current(&self, server: &str) -> StoreResult<Option<(String, Vec<String>)>> {
        let mut inv = MM.current.key(self.mm_key("tickets"));
        inv.key(self.mm_key(&format!("lease:{server}")));
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
        inv.key(self.mm_key(&format!("match:{match_id}"))).arg(match_id);
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
