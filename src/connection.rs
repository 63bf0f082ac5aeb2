//! One WebSocket connection, from upgrade to close. It owns the socket, the
//! session and the receiving end of the outgoing queue: it hands each frame to
//! `dispatch` in arrival order and keeps writing queued chat while a handler
//! waits on a store, so a slow store never makes a reading client look slow. When
//! it ends, for whatever reason, it ends the session (the one disconnect hook).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use hyper_tungstenite::HyperWebsocketStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::auth::TokenHash;
use crate::bucket::Bucket;
use crate::config::Config;
use crate::error::Error;
use crate::gate::Gate;
use crate::handlers;
use crate::metrics as m;
use crate::node::Node;
use crate::outbox::{self, Inbox, Moderated, Outgoing};
use crate::protocol::Reply;
use crate::session::Session;

/// How long a server-side close may take (writing the close frame, then lingering
/// until the client answers it or leaves) before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Buffers sized for many idle connections; frames over the limit fail with 1009.
/// Bytes read from a socket at a time (and kept per idle connection).
const READ_CHUNK_BYTES: usize = 512;

pub fn websocket_config(config: &Config) -> WebSocketConfig {
    let limit = config.max_frame_bytes as usize;
    WebSocketConfig::default()
        // Every poll of the socket zeroes this much of the read buffer before trying
        // to read, and the socket is polled again after each frame written: at 4 KiB
        // that memset was 40 % of a chat delivery (bench/callgrind.sh). A longer frame
        // still arrives whole: the buffer grows to its length, read 512 bytes at a time.
        .read_buffer_size(READ_CHUNK_BYTES)
        .write_buffer_size(0)
        .max_frame_size(Some(limit))
        .max_message_size(Some(limit))
}

/// Why the server closes a connection: the close code and the reason it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    AuthTimeout,
    PingTimeout,
    TooSlow,
    FrameTooLarge,
    Binary,
    ShuttingDown,
    TooManyMessages,
    /// An operator kicked the player (MODERATION.md).
    Kicked,
}

impl Close {
    pub const ALL: [Close; 8] = [
        Close::AuthTimeout,
        Close::PingTimeout,
        Close::TooSlow,
        Close::FrameTooLarge,
        Close::Binary,
        Close::ShuttingDown,
        Close::TooManyMessages,
        Close::Kicked,
    ];

    pub fn code(self) -> CloseCode {
        match self {
            Close::AuthTimeout | Close::PingTimeout | Close::TooSlow | Close::TooManyMessages | Close::Kicked => {
                CloseCode::Policy
            }
            Close::FrameTooLarge => CloseCode::Size,
            Close::Binary => CloseCode::Unsupported,
            Close::ShuttingDown => CloseCode::Away,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Close::AuthTimeout => "authentication timeout",
            Close::PingTimeout => "ping timeout",
            Close::TooSlow => "client too slow",
            Close::FrameTooLarge => "frame too large",
            Close::Binary => "binary frames are not supported",
            Close::ShuttingDown => "server shutting down",
            Close::TooManyMessages => "too many messages",
            Close::Kicked => "kicked",
        }
    }
}

/// The span every log line of connection `id` is in, so one player's lines can be
/// found: the connection's id, this node's, and the account once the connection
/// authenticates (recorded by `Session::begin`).
pub fn span(node_id: &str, id: u64) -> Span {
    tracing::info_span!("connection", id, node = %node_id, account = tracing::field::Empty)
}

/// Runs `work` in `span`, entered for each poll (as `tracing::Instrument` does,
/// without owning the span). Only what may log runs in the connection's span: chat
/// written from the queue does not, which saves entering and leaving it (~300
/// instructions) on every delivery.
async fn in_span<F: Future + Unpin>(span: &Span, mut work: F) -> F::Output {
    std::future::poll_fn(|cx| span.in_scope(|| Pin::new(&mut work).poll(cx))).await
}

/// Exports every close reason at 0 from the start.
pub fn register_metrics() {
    m::register_close_reasons(Close::ALL.map(Close::reason));
}

/// How serving ended: the client left (or the socket failed), or the server closes.
type Ending = Option<Close>;

pub struct Connection {
    node: Arc<Node>,
    ws: Socket,
    session: Session,
    inbox: Inbox,
}

/// The socket and how long one write may take: a client that stops reading fills
/// its TCP window, and is cut off after the ping timeout instead of pinning the task
/// (or at once, when its queue overflows meanwhile).
struct Socket {
    ws: HyperWebsocketStream,
    write_limit: Duration,
    /// Reads wait for the socket to wake the task, not for any wake-up (chat).
    readable: Gate,
}

impl Socket {
    /// The next frame, or `None` once the client is gone.
    fn next(&mut self) -> impl Future<Output = Option<Result<Message, WsError>>> + '_ {
        std::future::poll_fn(|cx| self.readable.poll(cx, |cx| self.ws.poll_next_unpin(cx)))
    }

    async fn write(&mut self, message: Message, inbox: &Inbox) -> Result<(), Ending> {
        let send = self.ws.send(message);
        tokio::pin!(send);
        // Most writes complete at once: they need no timer (arming and dropping one is
        // a lock of the timer wheel each way, on every chat delivery).
        if let Some(written) = futures_util::FutureExt::now_or_never(&mut send) {
            return written.map_err(|_| None);
        }
        tokio::select! {
            written = tokio::time::timeout(self.write_limit, send) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(None),
                Err(_) => Err(Some(Close::TooSlow)),
            },
            _ = inbox.too_slow() => Err(Some(Close::TooSlow)),
        }
    }

    /// A lingering close: sends (and flushes) the close frame after everything written
    /// before it, then reads and discards input until the client answers the close or
    /// goes. Closing a socket with unread input makes the kernel reset the connection,
    /// and the client loses the replies and the close frame still in flight (1006).
    async fn close(&mut self, close: Close) {
        let frame = CloseFrame { code: close.code(), reason: close.reason().into() };
        if self.ws.close(Some(frame)).await.is_err() {
            return;
        }
        loop {
            match self.next().await {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => {}
                // Frames no longer parse (the rest of one over the limit): skip bytes.
                Some(Err(_)) => break,
            }
        }
        let _ = tokio::io::copy(self.ws.get_mut(), &mut tokio::io::sink()).await;
    }
}

impl Connection {
    /// Connection `id`, whose log lines go in `span` ([`span`]).
    pub fn new(node: Arc<Node>, ws: HyperWebsocketStream, id: u64, client_ip: IpAddr, span: Span) -> Connection {
        let (outbox, inbox) = outbox::channel(node.config.outgoing_queue as usize);
        let session = Session::new(id, client_ip, outbox).in_span(span);
        let write_limit = Duration::from_secs(node.config.ping_timeout_secs);
        let ws = Socket { ws, write_limit, readable: Gate::default() };
        Connection { node, ws, session, inbox }
    }

    /// Serves the connection until it ends; `going_away` closes it with 1001. Its
    /// log lines are in `span` (the one given to [`Connection::new`]).
    ///
    /// Not an `async fn`: one would keep its `self` argument twice in the future, the
    /// argument and the local it is moved to (rust-lang/rust#62958), ~700 bytes more
    /// per connection. The block below uses the captured `self` in place.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run(mut self, going_away: CancellationToken, span: &Span) -> impl Future<Output = ()> + Send + '_ {
        async move {
            m::connection_opened();
            let ending = self.serve(&going_away, span).await.err().flatten();
            span.in_scope(|| {
                tracing::debug!(id = self.session.id, reason = ending.map(Close::reason), "connection ended");
                self.session.disconnect(&self.node);
            });
            if let Some(close) = ending {
                m::connection_killed(close.reason());
                let _ = tokio::time::timeout(CLOSE_GRACE, Box::pin(self.ws.close(close))).await;
            }
            m::connection_closed();
        }
    }

    /// Runs until the connection ends (always `Err`: the ending).
    async fn serve(&mut self, going_away: &CancellationToken, span: &Span) -> Result<(), Ending> {
        let config = &self.node.config;
        let ping_every = Duration::from_secs(config.ping_interval_secs);
        let silence_limit = Duration::from_secs(config.ping_timeout_secs);
        let auth_timeout = Duration::from_secs(config.auth_timeout_secs);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let auth_deadline = tokio::time::sleep(auth_timeout);
        tokio::pin!(auth_deadline);
        let mut rate = Bucket::new(config.max_messages_per_sec, config.max_messages_per_sec.saturating_mul(2));
        // Made once: a fresh one per turn of the loop would join and leave the token's
        // waiters each time (every chat delivery).
        let shutting_down = going_away.cancelled();
        tokio::pin!(shutting_down);
        let mut shutdown = Gate::default();

        loop {
            let unauthenticated_since = self.session.unauthenticated_since();
            if let Some(since) = unauthenticated_since {
                if auth_deadline.deadline() != since + auth_timeout {
                    auth_deadline.as_mut().reset(since + auth_timeout);
                }
            }
            tokio::select! {
                biased;
                _ = std::future::poll_fn(|cx| shutdown.poll(cx, |cx| shutting_down.as_mut().poll(cx))) => {
                    return Err(Some(Close::ShuttingDown));
                }
                frame = self.ws.next() => {
                    last_heard = Instant::now();
                    if !rate.as_mut().is_none_or(Bucket::take) {
                        return Err(Some(Close::TooManyMessages));
                    }
                    match frame {
                        // Boxed: the handlers' futures are large, and held only while
                        // a message is handled, not by every idle connection's task.
                        Some(Ok(Message::Text(text))) => {
                            in_span(span, Box::pin(self.handle(text.as_str(), going_away))).await?
                        }
                        Some(Ok(Message::Binary(_))) => return Err(Some(Close::Binary)),
                        Some(Ok(_)) => {} // ping, pong, close: tungstenite answers those itself
                        Some(Err(WsError::Capacity(_))) => return Err(Some(Close::FrameTooLarge)),
                        Some(Err(_)) | None => return Err(None),
                    }
                }
                queued = self.inbox.recv() => match queued.map_err(|_| Some(Close::TooSlow))? {
                    // Chat, most of what is queued, is written in place; the rest
                    // (resume streams, revocations, operators' actions) is boxed.
                    Outgoing::Frame(message) => self.ws.write(message, &self.inbox).await?,
                    outgoing => in_span(span, Box::pin(self.apply(outgoing))).await?,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= silence_limit {
                        return Err(Some(Close::PingTimeout));
                    }
                    // Half an interval of quiet is enough for a ping: waiting for a full
                    // one could skip a tick and leave a live client unpinged until timeout.
                    if last_heard.elapsed() >= ping_every / 2 {
                        self.ws.write(Message::Ping(Default::default()), &self.inbox).await?;
                    }
                }
                _ = &mut auth_deadline, if unauthenticated_since.is_some() => {
                    return Err(Some(Close::AuthTimeout));
                }
            }
        }
    }

    /// Runs one message's handler to its reply, writing queued chat meanwhile. A
    /// revocation or an operator's action arriving meanwhile waits until the handler is
    /// done with the session.
    async fn handle(&mut self, text: &str, going_away: &CancellationToken) -> Result<(), Ending> {
        let mut deferred = Vec::new();
        let reply = {
            let Connection { node, ws, session, inbox } = self;
            let dispatch = handlers::dispatch(node, session, text);
            tokio::pin!(dispatch);
            loop {
                tokio::select! {
                    biased;
                    reply = &mut dispatch => break reply,
                    _ = going_away.cancelled() => return Err(Some(Close::ShuttingDown)),
                    queued = inbox.recv() => match queued.map_err(|_| Some(Close::TooSlow))? {
                        Outgoing::Frame(message) => ws.write(message, inbox).await?,
                        // Session changes, and stream frames (numbered against the
                        // session the handler may be changing), wait for the reply.
                        session_change => deferred.push(session_change),
                    },
                }
            }
        };
        if let Some(reply) = reply {
            self.ws.write(Message::text(reply), &self.inbox).await?;
        }
        // A resuming session's replay comes right after its reply, before any frame
        // that arrived meanwhile (those wait in `deferred` and the queue).
        if let Some(replay) = self.session.take_replay() {
            for frame in crate::resume::replay(&self.node, &mut self.session, replay).await {
                self.ws.write(Message::text(frame), &self.inbox).await?;
            }
        }
        for session_change in deferred {
            self.apply(session_change).await?;
        }
        Ok(())
    }

    async fn apply(&mut self, outgoing: Outgoing) -> Result<(), Ending> {
        match outgoing {
            Outgoing::Frame(message) => self.ws.write(message, &self.inbox).await,
            Outgoing::Pushed(pushed) => {
                for frame in crate::resume::accept(&self.node, &mut self.session, &pushed).await {
                    self.ws.write(Message::text(frame), &self.inbox).await?;
                }
                Ok(())
            }
            Outgoing::Revoked(token) => self.end_revoked(token).await,
            Outgoing::Moderated(action) => self.moderated(&action).await,
        }
    }

    /// Carries out an operator's action on this session's account.
    async fn moderated(&mut self, action: &Moderated) -> Result<(), Ending> {
        match action {
            Moderated::Banned { reason, until } => {
                if self.session.is_authenticated() {
                    self.session.end(&self.node);
                    return self.ws.write(Message::text(Error::banned(reason, *until).to_json()), &self.inbox).await;
                }
                Ok(())
            }
            Moderated::Muted { until } => {
                self.session.set_muted(*until);
                Ok(())
            }
            Moderated::Kicked { reason } => {
                let frame = Reply::Kicked { reason: reason.as_str().into() }.to_json();
                self.ws.write(Message::text(frame), &self.inbox).await?;
                Err(Some(Close::Kicked))
            }
            Moderated::TokensRevoked => match self.session.auth() {
                Some(auth) => self.end_revoked(auth.token_hash).await,
                None => Ok(()),
            },
            Moderated::NameReset => {
                let Some(auth) = self.session.auth() else {
                    return Ok(());
                };
                if *auth.display_name == *auth.username {
                    return Ok(());
                }
                let name: Arc<str> = auth.username.as_str().into();
                self.session.rename(&self.node, name.clone());
                let frame = Reply::DisplayNameUpdated(name.as_ref().into()).to_json();
                self.ws.write(Message::text(frame), &self.inbox).await
            }
        }
    }

    /// Ends the session if it still uses `token`, and tells the client why.
    async fn end_revoked(&mut self, token: TokenHash) -> Result<(), Ending> {
        if self.session.auth().is_none_or(|auth| auth.token_hash != token) {
            return Ok(()); // logged out or switched accounts meanwhile
        }
        self.session.end(&self.node);
        self.ws.write(Message::text(Error::InvalidToken.to_json()), &self.inbox).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection's task holds this future for as long as it lives: what a
    /// message's handling needs is boxed only while it runs (issue #20), so the idle
    /// task is smaller than one handling alone.
    #[test]
    fn an_idle_connection_future_is_small() {
        let run = future_size(Connection::run);
        let handle = future_size(Connection::handle);
        let (connection, serve) = (std::mem::size_of::<Connection>(), future_size(Connection::serve));
        eprintln!("futures: Connection::run {run} bytes (Connection {connection}, serve {serve}), handle {handle}");
        assert!(run < handle, "Connection::run's future ({run} bytes) holds a handler's ({handle} bytes)");
        // The connection once, plus what serving it needs.
        assert!(run <= connection + serve + 64, "Connection::run's future ({run} bytes) holds the connection twice");
    }
}
