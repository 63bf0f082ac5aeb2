//! A connection's outgoing queue: one bounded channel plus a "too slow" signal.
//! The connection task holds the receiving [`Inbox`]; its session (and, once
//! authenticated, its registry entry) hold the sending [`Outbox`]. Chat is offered
//! without waiting: a client whose queue is full is cut off rather than buffered.
//! Besides frames, the queue carries the end of a session whose token stopped
//! being valid, and operators' actions on its account, so each takes its place in
//! order with the chat before it.

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message;
use tokio::sync::{mpsc, Notify};

use crate::auth::TokenHash;
use crate::store::{Appended, StreamId};

/// What a connection is asked to do.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Write this frame.
    Frame(Message),
    /// A frame of a resume stream, for an opted-in connection: written with its `pos`
    /// once the connection knows it is the next one it owes the client (RESUME.md).
    Pushed(Arc<Pushed>),
    /// The session using this token must end (revoked, expired, user deleted).
    Revoked(TokenHash),
    /// An operator acted on the session's account.
    Moderated(Arc<Moderated>),
}

/// Which resume stream a frame is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Global,
    Personal,
}

impl Stream {
    /// The prefix of a position in this stream (RESUME.md).
    pub fn prefix(self) -> &'static str {
        match self {
            Stream::Global => "g:",
            Stream::Personal => "p:",
        }
    }

    /// The stream id of a position of this stream (`None`: another stream's, or no
    /// position at all).
    pub fn parse(self, position: &str) -> Option<StreamId> {
        position.strip_prefix(self.prefix()).and_then(StreamId::parse)
    }

    pub fn position(self, id: StreamId) -> String {
        format!("{}{id}", self.prefix())
    }
}

/// A frame appended to a resume stream, as the bus brought it.
#[derive(Debug)]
pub struct Pushed {
    pub stream: Stream,
    /// The account whose personal stream holds it (empty for the global stream).
    pub account: String,
    pub at: Appended,
    /// The frame as old clients get it (no `pos`).
    pub text: String,
    /// A targeted entry ([`targeted_entry`]): the one connection (node, connection id)
    /// that writes it; the account's other opted-in connections only move past it.
    /// `None`: every opted-in connection of the stream writes it.
    pub only: Option<(String, u64)>,
}

/// The text a personal stream keeps of a frame for one connection only (`dequeued`
/// to a connection whose ticket moved to another of the account's connections): `>`,
/// the JSON `["<node id>",<connection id>]` it is for, then the frame. Frames are JSON
/// objects, so no other entry starts with `>`.
pub fn targeted_entry(node: &str, conn: u64, frame: &str) -> String {
    let target = serde_json::to_string(&(node, conn)).expect("strings serialize");
    format!(">{target}{frame}")
}

/// A stream entry's frame, and the connection it is for when it is a targeted entry
/// ([`targeted_entry`]). A `>` entry whose target does not parse is for nobody
/// (`Some` target no connection has).
pub fn split_entry(entry: &str) -> (Option<(String, u64)>, &str) {
    let Some(targeted) = entry.strip_prefix('>') else {
        return (None, entry);
    };
    let mut target = serde_json::Deserializer::from_str(targeted).into_iter::<(String, u64)>();
    match target.next() {
        Some(Ok(to)) => (Some(to), &targeted[target.byte_offset()..]),
        _ => (Some((String::new(), u64::MAX)), ""),
    }
}

/// `frame` (a JSON object) with its top-level `pos`.
pub fn with_pos(frame: &str, stream: Stream, id: StreamId) -> String {
    let open = frame.strip_suffix('}').unwrap_or(frame);
    format!("{open},\"pos\":\"{}\"}}", stream.position(id))
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

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    too_slow: Arc<Notify>,
}

pub struct Inbox {
    rx: mpsc::Receiver<Outgoing>,
    too_slow: Arc<Notify>,
}

/// A queue holding at most `capacity` messages.
pub fn channel(capacity: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let too_slow = Arc::new(Notify::new());
    (Outbox { tx, too_slow: too_slow.clone() }, Inbox { rx, too_slow })
}

impl Outbox {
    /// The connection is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues `message`; `false` when the client is gone or too slow to take it (a
    /// full queue also tells the connection to close).
    pub fn offer(&self, message: Outgoing) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.too_slow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The client does not take its messages fast enough.
#[derive(Debug)]
pub struct TooSlow;

impl Inbox {
    /// The next queued message, or `TooSlow` once a sender found the queue full.
    pub async fn recv(&mut self) -> Result<Outgoing, TooSlow> {
        tokio::select! {
            biased;
            _ = self.too_slow.notified() => Err(TooSlow),
            // The session keeps a sender for as long as the connection lives.
            Some(message) = self.rx.recv() => Ok(message),
        }
    }

    /// Resolves once a sender found the queue full.
    pub async fn too_slow(&self) {
        self.too_slow.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targeted_entry_names_its_connection_and_keeps_the_frame() {
        let entry = targeted_entry("node-1", 42, r#"{"type":"dequeued"}"#);
        assert_eq!(entry, r#">["node-1",42]{"type":"dequeued"}"#);
        assert_eq!(split_entry(&entry), (Some(("node-1".to_owned(), 42)), r#"{"type":"dequeued"}"#));
        let quoted = targeted_entry(r#"a"]b"#, 0, "{}");
        assert_eq!(split_entry(&quoted), (Some((r#"a"]b"#.to_owned(), 0)), "{}"));
        assert_eq!(split_entry(r#"{"type":"private_chat"}"#), (None, r#"{"type":"private_chat"}"#));
        assert_eq!(split_entry(">garbage").0.map(|(_, conn)| conn), Some(u64::MAX), "for nobody");
    }
}
