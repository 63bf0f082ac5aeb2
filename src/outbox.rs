//! A connection's outgoing queue: one bounded queue plus a "too slow" signal.
//! The connection task holds the receiving [`Inbox`]; its session (and, once
//! authenticated, its registry entry) hold the sending [`Outbox`]. Chat is offered
//! without waiting: a client whose queue is full is cut off rather than buffered.
//! Besides frames, the queue carries the end of a session whose token stopped
//! being valid, and operators' actions on its account, so each takes its place in
//! order with the chat before it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use hyper_tungstenite::tungstenite::Message;

use crate::auth::TokenHash;
pub use crate::store::Moderated;
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

/// The sending end: cheap to clone, never waits.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving end, held by the connection task; dropping it closes the queue.
pub struct Inbox {
    shared: Arc<Shared>,
}

/// What both ends share. The queue holds no memory while it is empty: tens of
/// thousands of idle connections each hold one, and a channel that sets aside room
/// for its first messages up front (tokio's `mpsc` allocates a block of 32 slots)
/// costs each of them ~1.8 KB for nothing (issue #20).
struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Wakes the connection task when a message is queued or the queue overflowed.
    /// Only the connection task waits, in one place at a time (`recv` or `too_slow`),
    /// so one waker is enough; it registers before it looks at the queue, so nothing
    /// offered in between is missed. (A `Notify` cost ~600 instructions per delivery
    /// in its waiter list's lock, callgrind.)
    wake: AtomicWaker,
}

/// Room a drained queue keeps. A chatting player's messages come one at a time:
/// giving all the room back after each would cost an allocation per delivery
/// (callgrind: +1.1 per `global_chat` delivery). Room past this, left by a burst, is
/// given back. A connection that was never sent anything holds none.
const KEPT_SLOTS: usize = 4;

struct Queue {
    messages: VecDeque<Outgoing>,
    /// A sender found the queue full; the task has not been told yet.
    too_slow: bool,
    /// The `Inbox` is gone: nothing more is taken.
    closed: bool,
}

/// A queue holding at most `capacity` messages.
pub fn channel(capacity: usize) -> (Outbox, Inbox) {
    assert!(capacity > 0, "an outgoing queue needs room for at least one message");
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue { messages: VecDeque::new(), too_slow: false, closed: false }),
        capacity,
        wake: AtomicWaker::new(),
    });
    (Outbox { shared: shared.clone() }, Inbox { shared })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Outbox {
    /// The connection is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Queues `message`; `false` when the client is gone or too slow to take it (a
    /// full queue also tells the connection to close).
    pub fn offer(&self, message: Outgoing) -> bool {
        let mut queue = self.shared.lock();
        if queue.closed {
            return false;
        }
        let queued = queue.messages.len() < self.shared.capacity;
        if queued {
            queue.messages.push_back(message);
        } else {
            queue.too_slow = true;
        }
        drop(queue);
        self.shared.wake.wake();
        queued
    }
}

/// The client does not take its messages fast enough.
#[derive(Debug)]
pub struct TooSlow;

impl Inbox {
    /// The next queued message, or `TooSlow` once a sender found the queue full
    /// (before any message still queued). Cancel-safe: a message leaves the queue
    /// only when it is returned.
    pub async fn recv(&mut self) -> Result<Outgoing, TooSlow> {
        std::future::poll_fn(|cx| {
            // The session keeps a sender for as long as the connection lives.
            self.shared.wake.register(cx.waker());
            self.take().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// `TooSlow` once (the overflow is reported once, as it is acted on at once),
    /// else the first queued message. The queue gives its memory back once drained.
    fn take(&self) -> Option<Result<Outgoing, TooSlow>> {
        let mut queue = self.shared.lock();
        if std::mem::take(&mut queue.too_slow) {
            return Some(Err(TooSlow));
        }
        let message = queue.messages.pop_front()?;
        if queue.messages.is_empty() {
            queue.messages.shrink_to(KEPT_SLOTS);
        }
        Some(Ok(message))
    }

    /// Resolves once a sender found the queue full.
    pub async fn too_slow(&self) {
        std::future::poll_fn(|cx| {
            // Woken by every offer: only an overflow ends the wait.
            self.shared.wake.register(cx.waker());
            if std::mem::take(&mut self.shared.lock().too_slow) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Messages left unread go now, not when the last sender does.
        let left = {
            let mut queue = self.shared.lock();
            queue.closed = true;
            std::mem::take(&mut queue.messages)
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(text: &str) -> Outgoing {
        Outgoing::Frame(Message::text(text))
    }

    fn text_of(message: Outgoing) -> String {
        match message {
            Outgoing::Frame(Message::Text(text)) => text.as_str().to_owned(),
            other => panic!("not a text frame: {other:?}"),
        }
    }

    fn capacity_held(inbox: &Inbox) -> usize {
        inbox.shared.lock().messages.capacity()
    }

    #[tokio::test]
    async fn keeps_the_order_of_offers() {
        let (outbox, mut inbox) = channel(8);
        for i in 0..5 {
            assert!(outbox.offer(frame(&i.to_string())));
        }
        for i in 0..5 {
            assert_eq!(text_of(inbox.recv().await.unwrap()), i.to_string());
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_reports_too_slow() {
        let (outbox, mut inbox) = channel(2);
        assert!(outbox.offer(frame("a")));
        assert!(outbox.offer(frame("b")));
        assert!(!outbox.offer(frame("c")), "a third message does not fit");
        assert!(!outbox.is_closed(), "a full queue is not a closed one");
        // The signal comes before the messages still queued.
        assert!(inbox.recv().await.is_err());
        // `too_slow` resolves too, once a sender finds the queue full again.
        assert!(!outbox.offer(frame("d")));
        tokio::time::timeout(Duration::from_secs(1), inbox.too_slow()).await.expect("too_slow resolves");
    }

    #[tokio::test]
    async fn closed_once_the_inbox_is_dropped() {
        let (outbox, inbox) = channel(4);
        let other = outbox.clone();
        assert!(outbox.offer(frame("unread")));
        assert!(!outbox.is_closed());
        let shared = inbox.shared.clone();
        drop(inbox);
        assert!(outbox.is_closed() && other.is_closed());
        assert!(!outbox.offer(frame("late")), "nothing is taken after the inbox is gone");
        assert_eq!(shared.lock().messages.len(), 0, "unread messages are dropped with the inbox");
        assert_eq!(shared.lock().messages.capacity(), 0);
    }

    #[tokio::test]
    async fn recv_wakes_on_offer() {
        let (outbox, mut inbox) = channel(4);
        let waiting = tokio::spawn(async move { text_of(inbox.recv().await.unwrap()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "nothing to receive yet");
        assert!(outbox.offer(frame("hello")));
        let got = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("woken").unwrap();
        assert_eq!(got, "hello");
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let (outbox, mut inbox) = channel(4);
        // Polled once and dropped while waiting, as a `select!` that another branch won.
        assert!(tokio::time::timeout(Duration::from_millis(10), inbox.recv()).await.is_err());
        assert!(outbox.offer(frame("after")));
        let got = tokio::time::timeout(Duration::from_secs(1), inbox.recv()).await.expect("woken").unwrap();
        assert_eq!(text_of(got), "after");
    }

    #[tokio::test]
    async fn holds_little_memory_while_empty() {
        let (outbox, mut inbox) = channel(256);
        assert_eq!(capacity_held(&inbox), 0, "a new queue allocates nothing");
        for i in 0..100 {
            assert!(outbox.offer(frame(&i.to_string())));
        }
        assert!(capacity_held(&inbox) >= 100);
        for _ in 0..99 {
            inbox.recv().await.unwrap();
        }
        assert!(capacity_held(&inbox) > 0, "still one message queued");
        inbox.recv().await.unwrap();
        assert!(capacity_held(&inbox) <= KEPT_SLOTS, "a drained queue gives a burst's room back");
        // One message at a time, as chat comes: the kept room serves it, no allocation.
        let room = capacity_held(&inbox);
        for i in 0..10 {
            assert!(outbox.offer(frame(&i.to_string())));
            inbox.recv().await.unwrap();
            assert_eq!(capacity_held(&inbox), room);
        }
    }

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
