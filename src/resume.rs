//! Resume on any node (RESUME.md): what an opted-in connection is sent, exactly once
//! and in order, across reconnects.
//!
//! Every pushed frame is appended to a stream before it is published (the global
//! stream, or the personal stream of the account it is for); the bus event carries the
//! entry's id and the id of the entry before it (`Appended`). An opted-in connection
//! keeps, per stream, the last id it delivered ([`Cursors`]), and for each frame the
//! bus brings:
//! - its `prev` is that id: it is the next one, written at once;
//! - its id is not past that id: already delivered (a duplicate), dropped;
//! - otherwise frames from several publishers crossed, or one never came (a lost
//!   subscription, a directory that did not know this node yet): the gap up to it is
//!   read from the stream, one read, and written in order.
//!
//! Resuming is the same gap read from the client's position, after the reply: live
//! frames arriving meanwhile wait in the connection's queue and then meet the rule
//! above, so none is skipped or written twice; one `resumed` frame separates the
//! replay from them.
//!
//! A personal stream also holds targeted entries: `dequeued` to the one connection
//! whose ticket moved to another of the account's connections
//! ([`targeted_entry`](crate::outbox::targeted_entry)). They number like any other, so
//! every connection's cursor passes them and no gap opens, but:
//! - live (a frame the bus brought, or a gap read): only the connection it names
//!   writes it; every other connection moves past it and writes nothing;
//! - replayed on resume: written iff the resumed session holds no ticket once its
//!   resume took back what it could (`Matchmaker::reclaim`), whichever connection it
//!   named, since to such a session "not in the queue" is true (a client that lost its
//!   `dequeued` with its connection learns it); never to a session that holds the
//!   ticket, whatever connection the entry named (the connection it was sent to may be
//!   this very one, re-authenticated, and have taken the ticket back since). Entries
//!   not written are not counted in `replayed`.

use crate::error::store_skipped;
use crate::metrics::{self as m, ResumeOutcome};
use crate::node::Node;
use crate::outbox::{split_entry, with_pos, Pushed, Stream};
use crate::protocol::ResumeFrom;
use crate::session::{Cursors, Replay, Session};
use crate::store::{History, Route, StreamId, StreamOf};

fn stream_of(stream: Stream, account: &str) -> StreamOf<'_> {
    match stream {
        Stream::Global => StreamOf::Global,
        Stream::Personal => StreamOf::Personal(account),
    }
}

/// Opts the session just begun into resume: makes sure the directory routes the
/// account's private messages here before reading where the streams end (so every
/// entry after that reaches this node), and keeps what to replay from `from`.
pub async fn open(node: &Node, session: &mut Session, from: Option<&ResumeFrom>) {
    let Some(account) = session.auth().map(|a| a.username.clone()) else {
        return;
    };
    let route = Route::Account(account.clone());
    if let Err(e) = node.stores.directory.join(&route, &node.node_id).await {
        store_skipped(e, "route announced by the directory task instead");
    }
    let (streams, _) = node.cluster.streams();
    let (global, personal) = tokio::join!(streams.last(StreamOf::Global), streams.last(StreamOf::Personal(&account)));
    // Unknown (Redis unreachable): the first frame that comes sets the place.
    let end = |last: crate::store::StoreResult<StreamId>| {
        last.unwrap_or_else(|e| {
            store_skipped(e, "stream end unknown");
            UNKNOWN
        })
    };
    let ends = Cursors { global: end(global), personal: end(personal) };
    let mut cursors = ends;
    let mut replay: Replay = Vec::new();
    if let Some(from) = from {
        for (stream, given) in [(Stream::Global, &from.global), (Stream::Personal, &from.personal)] {
            let Some(given) = given else { continue };
            let parsed = stream.parse(given);
            // Never past the end: a position from the future would hide what comes next.
            cursors.set(stream, parsed.unwrap_or(StreamId::ZERO).min(ends.get(stream)));
            replay.push((stream, parsed));
        }
    }
    // A player back (`token_auth`) within its ticket's grace keeps its place, from
    // this connection.
    let back = session.auth().is_some_and(|a| a.via == crate::registry::Via::TokenAuth);
    if back && node.matchmaker.reclaim(&account, session.id).await {
        session.set_queued(true);
    }
    if !replay.iter().any(|(stream, _)| *stream == Stream::Personal) {
        // Not replayed: its match, if one is joinable, as a plain session gets it.
        node.matchmaker.resend_joinable(account.clone(), session.outbox());
    }
    let known = |id: StreamId| if id == UNKNOWN { StreamId::ZERO } else { id };
    let positions = Cursors { global: known(ends.global), personal: known(ends.personal) };
    session.set_resume(cursors, positions, (from.is_some()).then_some(replay));
}

/// A place not known yet: the stream's end could not be read when the session began.
const UNKNOWN: StreamId = StreamId { ms: u64::MAX, seq: u64::MAX };

/// The `positions` an opted-in authentication's reply carries.
pub fn positions_json(ends: &Cursors) -> String {
    let position =
        |stream: Stream| serde_json::to_string(&stream.position(ends.get(stream))).expect("strings serialize");
    format!(r#"{{"global":{},"personal":{}}}"#, position(Stream::Global), position(Stream::Personal))
}

/// `reply` (a JSON object) with its top-level `positions`.
pub fn with_positions(reply: &str, ends: &Cursors) -> String {
    let open = reply.strip_suffix('}').unwrap_or(reply);
    format!(r#"{open},"positions":{}}}"#, positions_json(ends))
}

/// The frames a resuming connection is sent after its reply: every entry of each named
/// stream after its position, in order, then `resumed`. Moves the session's cursors
/// past them.
pub async fn replay(node: &Node, session: &mut Session, replay: Replay) -> Vec<String> {
    let Some(account) = session.auth().map(|a| a.username.clone()) else {
        return Vec::new();
    };
    let (streams, limits) = node.cluster.streams();
    let reads = replay.iter().map(|(stream, from)| {
        let stream_of = stream_of(*stream, &account);
        streams.read_after(stream_of, from.unwrap_or(StreamId::ZERO), None, limits.cap(stream_of))
    });
    let histories = futures_util::future::join_all(reads).await;
    // A targeted entry (`dequeued`) is replayed only to a session that holds no ticket
    // once the resume took back what it could: to it, "not in the queue" is true.
    let ticketless = !session.is_queued();
    let mut frames = Vec::new();
    let mut summary = serde_json::Map::new();
    for ((stream, from), history) in replay.into_iter().zip(histories) {
        let (history, outcome) = match history {
            Ok(h) if h.complete && from.is_some() => (h, ResumeOutcome::Complete),
            Ok(h) => (History { complete: false, ..h }, ResumeOutcome::Incomplete),
            Err(e) => {
                store_skipped(e, "stream not replayed");
                (History::default(), ResumeOutcome::NoHistory)
            }
        };
        let Some(cursors) = session.cursors() else { break };
        let mut replayed = 0;
        for (id, entry) in &history.entries {
            if let Some(frame) = owed(entry, |_| ticketless) {
                frames.push(with_pos(frame, stream, *id));
                replayed += 1;
            }
            cursors.set(stream, (*id).max(cursors.get(stream)));
        }
        m::resumed(outcome, replayed);
        let name = match stream {
            Stream::Global => "global",
            Stream::Personal => "personal",
        };
        summary.insert(
            name.to_owned(),
            serde_json::json!({"replayed": replayed, "complete": history.complete && outcome == ResumeOutcome::Complete}),
        );
    }
    frames.push(serde_json::json!({"type": "resumed", "payload": summary}).to_string());
    frames
}

/// The frame a connection writes of a stream entry, or `None` for a targeted entry
/// ([`targeted_entry`](crate::outbox::targeted_entry)) that `targets` says is not its
/// to write: it only moves past it.
fn owed(entry: &str, targets: impl Fn(&(String, u64)) -> bool) -> Option<&str> {
    match split_entry(entry) {
        (None, frame) => Some(frame),
        (Some(target), frame) if !frame.is_empty() && targets(&target) => Some(frame),
        (Some(_), _) => None,
    }
}

/// What an opted-in connection writes for a stream frame the bus brought: it, the gap
/// before it and it, or nothing (a duplicate).
pub async fn accept(node: &Node, session: &mut Session, pushed: &Pushed) -> Vec<String> {
    let here = session.id;
    let is_here = |(node_id, conn): &(String, u64)| *conn == here && *node_id == node.node_id;
    // A targeted entry is written by its connection only; the others move past it.
    let writes = pushed.only.as_ref().is_none_or(is_here);
    let as_is = || if writes { vec![pushed.text.clone()] } else { Vec::new() };
    let Some(account) = session.auth().map(|a| a.username.clone()) else {
        return as_is();
    };
    if pushed.stream == Stream::Personal && pushed.account != account {
        return Vec::new(); // another account's, queued before this connection switched
    }
    let Some(cursors) = session.cursors() else {
        return as_is();
    };
    let (stream, at) = (pushed.stream, pushed.at);
    let last = cursors.get(stream);
    if at.prev == last || last == UNKNOWN {
        cursors.set(stream, at.pos);
        return if writes { vec![with_pos(&pushed.text, stream, at.pos)] } else { Vec::new() };
    }
    if at.pos <= last {
        return Vec::new();
    }
    m::resume_gap_fill();
    let (streams, limits) = node.cluster.streams();
    let stream_of = stream_of(stream, &account);
    let gap = streams.read_after(stream_of, last, Some(at.pos), limits.cap(stream_of)).await;
    let Some(cursors) = session.cursors() else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    let mut through = last;
    match gap {
        Ok(history) => {
            for (id, entry) in history.entries {
                if let Some(frame) = owed(&entry, is_here) {
                    frames.push(with_pos(frame, stream, id));
                }
                through = id;
            }
        }
        Err(e) => store_skipped(e, "gap before a frame not read"),
    }
    if through < at.pos && writes {
        // The stream no longer has it (trimmed, or Redis down): the frame as it came.
        frames.push(with_pos(&pushed.text, stream, at.pos));
    }
    cursors.set(stream, at.pos);
    frames
}
