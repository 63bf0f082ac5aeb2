//! The resume streams (RESUME.md): one global stream beside the global chat channel
//! (one slot: the script that takes the sender's chat bucket also appends and
//! publishes), and one personal stream per account, under the account's own tag.

use async_trait::async_trait;
use redis::cluster_routing::Slot;
use redis::Value;

use super::RedisStore;
use crate::store::{Appended, BusEvent, ChatRate, History, StoreResult, StreamId, StreamLimits, StreamOf, Streams};

impl RedisStore {
    /// `stream_append.lua` for `stream`, without bucket or publish (`ARGV` 1–6 set,
    /// 7 empty); callers add the rest.
    fn append_invocation(
        &self,
        stream: StreamOf,
        frame: &str,
        limits: &StreamLimits,
        rate: Option<ChatRate>,
        user_id: i64,
    ) -> redis::ScriptInvocation<'_> {
        let mut inv = self.stream_append.key(self.stream_key(stream));
        if rate.is_some() {
            inv.key(self.chat_rate_key(user_id));
        }
        inv.arg(frame).arg(limits.cap(stream)).arg(limits.window_ms).arg(limits.idle_secs());
        match rate {
            Some(rate) => inv.arg(1000.0 / f64::from(rate.per_sec)).arg(rate.burst),
            None => inv.arg(0).arg(0),
        };
        inv
    }
}

fn parse_appended(value: Value) -> StoreResult<Option<Appended>> {
    let id = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(StreamId::parse),
        Value::SimpleString(s) => StreamId::parse(s),
        _ => None,
    };
    match value {
        Value::Int(0) => Ok(None),
        Value::Array(items) if items.len() == 2 => match (id(&items[0]), id(&items[1])) {
            (Some(pos), Some(prev)) => Ok(Some(Appended { pos, prev })),
            _ => Err(crate::error::StoreError::Other("stream_append.lua: malformed answer".into())),
        },
        other => Err(crate::error::StoreError::Other(format!("stream_append.lua answered {other:?}"))),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One `XRANGE` entry: its id, the id before it (field `p`) and its frame (`f`).
fn parse_entry(v: &Value) -> Option<(StreamId, StreamId, String)> {
    let Value::Array(parts) = v else { return None };
    let id = StreamId::parse(&text(parts.first()?)?)?;
    let fields: Vec<String> = match parts.get(1)? {
        Value::Array(fields) => fields.iter().filter_map(text).collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).flatten().collect(),
        _ => return None,
    };
    let (mut prev, mut frame) = (None, None);
    for pair in fields.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("p", Some(p)) => prev = StreamId::parse(p),
            ("f", Some(f)) => frame = Some(f.clone()),
            _ => {}
        }
    }
    Some((id, prev?, frame?))
}

#[async_trait]
impl Streams for RedisStore {
    async fn append(&self, stream: StreamOf<'_>, frame: &str, limits: &StreamLimits) -> StoreResult<Appended> {
        let mut inv = self.append_invocation(stream, frame, limits, None, 0);
        inv.arg("").arg("").arg("");
        let answer: Value = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        parse_appended(answer)?
            .ok_or_else(|| crate::error::StoreError::Other("stream_append.lua appended nothing".into()))
    }

    async fn take_append_publish(
        &self,
        user_id: i64,
        rate: Option<ChatRate>,
        frame: &str,
        event: &BusEvent,
        limits: &StreamLimits,
    ) -> StoreResult<Option<Appended>> {
        let (key, channel) = (self.stream_key(StreamOf::Global), self.chat_channel());
        let body = serde_json::to_string(event).expect("chat events serialize");
        let mut inv = self.append_invocation(StreamOf::Global, frame, limits, rate, user_id);
        // A `REDIS_KEY_PREFIX` whose braces move the stream off the channel's slot: the
        // script, then the publish.
        let apart = self.cluster && Slot::for_key(&key) != Slot::for_key(&channel);
        if apart {
            inv.arg("").arg("").arg("");
        } else {
            let open = body.strip_suffix('}').expect("events are JSON objects");
            inv.arg(self.publish_command()).arg(&channel).arg(open);
        }
        let answer: Value = self.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        let appended = parse_appended(answer)?;
        if let (true, Some(at)) = (apart, appended) {
            let mut event = event.clone();
            if let BusEvent::Global { at: slot, .. } = &mut event {
                *slot = Some(at);
            }
            self.send(channel, &event).await?;
        }
        Ok(appended)
    }

    async fn read_after(
        &self,
        stream: StreamOf<'_>,
        after: StreamId,
        upto: Option<StreamId>,
        limit: u64,
    ) -> StoreResult<History> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.stream_key(stream)).arg(format!("({after}"));
        cmd.arg(upto.map_or_else(|| "+".to_owned(), |u| u.to_string())).arg("COUNT").arg(limit.max(1));
        let answer: Value = self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        let entries: Vec<(StreamId, StreamId, String)> = match &answer {
            Value::Array(items) => items.iter().filter_map(parse_entry).collect(),
            _ => Vec::new(),
        };
        // The entry right after the position still names it (or one before it) as its
        // predecessor: nothing between them was trimmed.
        let complete = entries.first().is_none_or(|(_, prev, _)| *prev <= after);
        Ok(History { entries: entries.into_iter().map(|(id, _, frame)| (id, frame)).collect(), complete })
    }

    async fn last(&self, stream: StreamOf<'_>) -> StoreResult<StreamId> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.stream_key(stream)).arg("+").arg("-").arg("COUNT").arg(1);
        let answer: Value = self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        let first = match &answer {
            Value::Array(items) => items.first().and_then(parse_entry).map(|(id, _, _)| id),
            _ => None,
        };
        Ok(first.unwrap_or(StreamId::ZERO))
    }
}
