//! One connection's authentication state, owned by its connection task. Handlers
//! change it only through [`Session::begin`], [`Session::rename`],
//! [`Session::set_queued`] and [`Session::end`]; `end` is the one place where a session stops, whether by
//! `logout`, a new login on the same connection, or the socket going away, so every
//! feature that keeps per-session state (the registry of live players, the
//! matchmaking ticket) lets go of it there.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::Span;

use crate::auth::TokenHash;
use crate::matchmaking::Ended;
use crate::node::Node;
use crate::outbox::{Outbox, Stream};
use crate::registry::{Peer, Via};
use crate::store::StreamId;

/// An authenticated session's player. Handlers of players' messages receive it from
/// dispatch (`handlers::Access::Player`).
#[derive(Clone)]
pub struct Auth {
    pub user_id: i64,
    /// The account name as stored.
    pub username: String,
    pub token_hash: TokenHash,
    /// Unix seconds.
    pub expires_at: i64,
    pub display_name: Arc<str>,
    /// Chat is refused until this unix second (a mute in force when the session began,
    /// or imposed since).
    pub muted_until: Option<i64>,
    /// How the session authenticated.
    pub via: Via,
    /// The connection opted into resume (RESUME.md).
    pub resume: bool,
}

/// An opted-in connection's place in each resume stream: the last entry it delivered
/// (or, before any, the end of the stream when the session began, or the position the
/// client resumed from).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    pub global: StreamId,
    pub personal: StreamId,
}

impl Cursors {
    pub fn get(&self, stream: Stream) -> StreamId {
        match stream {
            Stream::Global => self.global,
            Stream::Personal => self.personal,
        }
    }

    pub fn set(&mut self, stream: Stream, id: StreamId) {
        match stream {
            Stream::Global => self.global = id,
            Stream::Personal => self.personal = id,
        }
    }
}

/// What a resuming `token_auth` leaves for its connection to send after its reply:
/// per stream named, the position to replay from (`None`: it named no position of that
/// stream, so none is complete).
pub type Replay = Vec<(Stream, Option<StreamId>)>;

impl Auth {
    /// The mute in force at `now`, as its end.
    pub fn muted(&self, now: i64) -> Option<i64> {
        self.muted_until.filter(|until| *until > now)
    }
}

pub struct Session {
    pub id: u64,
    /// The client's address (behind a trusted proxy: the forwarded one).
    pub client_ip: IpAddr,
    auth: Option<Auth>,
    /// This connection holds its account's matchmaking ticket.
    queued: bool,
    /// Since when the connection has been unauthenticated (it must authenticate in time).
    unauthenticated_since: Instant,
    /// Unix seconds the current session began (the admin views show it).
    since: i64,
    outbox: Outbox,
    /// An opted-in session's places in the resume streams.
    cursors: Option<Cursors>,
    /// The ends of the streams for the authentication's reply (`positions`).
    positions: Option<Cursors>,
    /// The streams to replay once the reply is written.
    replay: Option<Replay>,
    /// The connection's span (`connection::span`): [`Session::begin`] records the
    /// account in it.
    span: Span,
}

impl Session {
    pub fn new(id: u64, client_ip: IpAddr, outbox: Outbox) -> Session {
        Session {
            id,
            client_ip,
            auth: None,
            queued: false,
            unauthenticated_since: Instant::now(),
            since: 0,
            cursors: None,
            positions: None,
            replay: None,
            outbox,
            span: Span::none(),
        }
    }

    /// The session of a connection whose log lines are in `span`.
    pub fn in_span(self, span: Span) -> Session {
        Session { span, ..self }
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// `None` while authenticated.
    pub fn unauthenticated_since(&self) -> Option<Instant> {
        (!self.is_authenticated()).then_some(self.unauthenticated_since)
    }

    pub fn ip_string(&self) -> String {
        self.client_ip.to_string()
    }

    /// Starts a session (ending the one before, if any) and makes it reachable by chat.
    /// The same account authenticating again keeps its session going: only its token
    /// and display name change.
    pub fn begin(&mut self, node: &Node, auth: Auth) {
        let fresh = self.auth.as_ref().is_none_or(|old| old.user_id != auth.user_id);
        if fresh {
            self.end(node);
            // A player back on a new connection: its match, if it is still on (an opted-in
            // one finds it in its personal stream, or is sent it by `resume::open`).
            if !auth.resume {
                node.matchmaker.resend_joinable(auth.username.clone(), self.outbox.clone());
            }
            self.span.record("account", tracing::field::display(&auth.username));
            self.since = crate::store::unix_now();
        }
        let peer = Peer {
            display_name: auth.display_name.clone(),
            account: auth.username.as_str().into(),
            token_hash: auth.token_hash,
            outbox: self.outbox.clone(),
            address: self.client_ip,
            since: self.since,
            via: auth.via,
            resume: auth.resume,
        };
        node.registry.insert(self.id, peer);
        self.auth = Some(auth);
    }

    pub fn rename(&mut self, node: &Node, display_name: Arc<str>) {
        if let Some(auth) = self.auth.as_mut() {
            auth.display_name = display_name.clone();
            node.registry.rename(self.id, display_name);
        }
    }

    /// Asks this connection to carry out an operator's action once the current
    /// message is handled.
    pub fn moderate(&self, action: crate::outbox::Moderated) {
        self.outbox.offer(crate::outbox::Outgoing::Moderated(Arc::new(action)));
    }

    /// Mutes the session until `until` (unix seconds), or lifts its mute (`None`).
    pub fn set_muted(&mut self, until: Option<i64>) {
        if let Some(auth) = self.auth.as_mut() {
            auth.muted_until = until;
        }
    }

    /// Records whether this connection holds its account's matchmaking ticket, which
    /// [`Session::end`] then releases.
    pub fn set_queued(&mut self, queued: bool) {
        self.queued = queued;
    }

    /// Whether this connection holds its account's matchmaking ticket, as far as it
    /// knows (it took or took back the ticket and has not ended).
    pub fn is_queued(&self) -> bool {
        self.queued
    }

    /// A sender of this connection's outgoing queue.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// The session's places in the resume streams, when it opted in.
    pub fn cursors(&mut self) -> Option<&mut Cursors> {
        self.cursors.as_mut()
    }

    /// Opts the session into resume (`resume::open`): its places in the streams, the
    /// positions its reply carries, and what to replay after it.
    pub fn set_resume(&mut self, cursors: Cursors, positions: Cursors, replay: Option<Replay>) {
        self.cursors = Some(cursors);
        self.positions = Some(positions);
        self.replay = replay;
    }

    /// The positions for the authentication's reply, once.
    pub fn take_positions(&mut self) -> Option<Cursors> {
        self.positions.take()
    }

    /// What to replay now that the reply is written, once.
    pub fn take_replay(&mut self) -> Option<Replay> {
        self.replay.take()
    }

    /// Ends the session, if any: the one hook every feature joins.
    pub fn end(&mut self, node: &Node) {
        self.stop(node, Ended::Session);
    }

    /// Ends the session of a connection that went away: an opted-in player's queue
    /// ticket waits for it through its grace (RESUME.md).
    pub fn disconnect(&mut self, node: &Node) {
        self.stop(node, Ended::Away);
    }

    fn stop(&mut self, node: &Node, how: Ended) {
        self.cursors = None;
        self.positions = None;
        self.replay = None;
        if let Some(auth) = self.auth.take() {
            node.registry.remove(self.id);
            if std::mem::take(&mut self.queued) {
                let how = if auth.resume && node.matchmaker.grace_secs() > 0 { how } else { Ended::Session };
                node.matchmaker.release(&auth.username, self.id, how);
            }
            self.unauthenticated_since = Instant::now();
        }
    }
}
