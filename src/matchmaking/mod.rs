//! Matchmaking across the cluster. Tickets live in the shared store, one per account
//! (`store::MatchQueue`); every node runs a formation loop that atomically takes the
//! first players of each queue into a forming match recorded with the node's id, and
//! tries once to get it a game server (`allocate`, beside the loop):
//! - a server: each player gets `match_found` (with a signed join ticket) on whichever
//!   node holds it, and again on a new session while the match is joinable;
//! - none: the players go back to their places for the next round, each until its
//!   own `ALLOCATION_ATTEMPTS`-th failed try, which ends its ticket with `match_error`;
//! - the forming node dies: the next round on any node puts the players back.
//!
//! A connection that goes away releases its ticket through `Session::end`; a game
//! server confirms its match (keeping its server past the joinable window) and ends it
//! through `POST /matches/<id>/confirm` and `/end` with the match's credential
//! (`ticket::credential`, checked in `http.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod allocate;
mod resend;
pub mod ticket;

pub use resend::Asks;
pub use ticket::{ticket_command, TicketArgs};

use allocate::{Allocate, Failure, Request, Server};

use crate::cluster::Cluster;
use crate::config::{AllocatorSettings, Config};
use crate::error::store_skipped;
use crate::metrics::{self as m, AllocationResult, GraceOutcome, TicketOutcome};
use crate::outbox::Outbox;
use crate::protocol::{MatchFound, Reply};
use crate::store::{unix_now, unix_now_ms, BusEvent, FrameTarget, Left, MatchQueue, Parked, Ticket};

/// How often each node looks for matches to form.
pub(crate) const FORM_EVERY: Duration = Duration::from_millis(500);
/// Matches one node allocates servers for at once; more wait in the queue.
const MAX_FORMING: usize = 64;

/// This node's part of matchmaking: the configured queues, the server pool, the
/// ticket keys, the key of game servers' credentials, the shared queue, the cluster
/// (to reach the node holding a ticket), and the tickets its connections let go of.
pub struct Matchmaker {
    queues: Vec<(String, usize)>,
    keys: Vec<(String, Vec<u8>)>,
    game_server_key: String,
    /// Life of a join ticket and of a formed match (`MATCH_TICKET_TTL_SECS`).
    ticket_ttl_secs: u64,
    allocation_attempts: u32,
    allocator: Arc<dyn Allocate>,
    queue: Arc<dyn MatchQueue>,
    cluster: Arc<Cluster>,
    released: mpsc::UnboundedSender<(String, u64, Ended)>,
    /// How long a ticket of an opted-in player outlives its connection.
    grace_secs: u64,
    resends: resend::Resends,
}

/// How a connection holding a ticket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// On purpose (`logout`, another login, revocation, ban): the ticket ends.
    Session,
    /// The connection went away with an opted-in player: the ticket waits for its
    /// grace (`QUEUE_GRACE_SECS`).
    Away,
}

/// The tickets this node's ended connections held (account, connection, how), for
/// [`Matchmaker::run`].
pub type Releases = mpsc::UnboundedReceiver<(String, u64, Ended)>;

impl Matchmaker {
    pub fn new(
        config: &Config,
        allocator: &AllocatorSettings,
        queue: Arc<dyn MatchQueue>,
        cluster: Arc<Cluster>,
    ) -> (Matchmaker, Releases, Asks) {
        let mut keys = config.match_ticket_keys.0.clone();
        if keys.is_empty() {
            keys.push(("node".into(), uuid::Uuid::new_v4().as_bytes().to_vec()));
        }
        let (released, rx) = mpsc::unbounded_channel();
        let (resends, asks) = resend::channel();
        let allocator = allocate::build(allocator, !config.game_server_token.is_empty(), queue.clone());
        let matchmaker = Matchmaker {
            queues: config.match_queues.0.clone(),
            keys,
            game_server_key: config.game_server_token.clone(),
            ticket_ttl_secs: config.match_ticket_ttl_secs,
            allocation_attempts: config.allocation_attempts,
            allocator,
            queue,
            cluster,
            released,
            grace_secs: config.queue_grace_secs,
            resends,
        };
        (matchmaker, rx, asks)
    }

    /// The queue a `join_queue` names (`None`: the first configured), if it exists.
    pub fn queue(&self, name: Option<&str>) -> Option<&str> {
        match name {
            None => self.queues.first().map(|(q, _)| q.as_str()),
            Some(name) => self.queues.iter().find(|(q, _)| q == name).map(|(q, _)| q.as_str()),
        }
    }

    /// Connection `conn` of account `account` (its name as stored) ended with a ticket.
    pub fn release(&self, account: &str, conn: u64, how: Ended) {
        let _ = self.released.send((account.to_owned(), conn, how));
    }

    /// How long a ticket of a player who opted into resume outlives its connection.
    pub fn grace_secs(&self) -> u64 {
        self.grace_secs
    }

    /// The account's player is back on connection `conn` of this node: its ticket, if
    /// it is waiting through its grace (or held by another connection), is held here
    /// from now on; that other connection is told `dequeued` (a targeted entry of the
    /// personal stream, which no other connection writes). `true`: it has a ticket.
    pub async fn reclaim(&self, account: &str, conn: u64) -> bool {
        let node = self.cluster.node_id();
        match self.queue.reclaim(account, (node, conn)).await {
            Ok(Some((before, before_conn))) => {
                m::queue_grace(GraceOutcome::Reclaimed, 1);
                if (before.as_str(), before_conn) != (node, conn) {
                    let text = Reply::Dequeued.to_json();
                    self.cluster.send_only(&before, before_conn, account, text).await;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                store_skipped(e, "queue ticket not reclaimed");
                false
            }
        }
    }

    /// Forms matches every [`FORM_EVERY`] and releases the tickets of ended connections.
    pub async fn run(self: Arc<Self>, released: Releases, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_FORMING));
        let mut forming = JoinSet::new();
        let mut tick = tokio::time::interval(FORM_EVERY);
        // Releases that failed (Redis unreachable): tried again every round until they
        // hold, so no ticket outlives its connection on a live node.
        let mut unreleased: VecDeque<(String, u64)> = VecDeque::new();
        let mut released = released;
        loop {
            tokio::select! {
                // Matches still forming are put back by the other nodes once this one
                // is gone. The tickets of the connections the drain closed are let go
                // of first (an opted-in player's kept through its grace, to be
                // reclaimed on another node).
                _ = shutdown.cancelled() => {
                    while let Ok((account, conn, how)) = released.try_recv() {
                        let ticket = (account, conn);
                        if !(how == Ended::Away && self.park(&ticket).await) {
                            self.end_ticket(&ticket).await;
                        }
                    }
                    return;
                }
                Some((account, conn, how)) = released.recv() => {
                    let ticket = (account, conn);
                    if how == Ended::Away && self.park(&ticket).await {
                        continue;
                    }
                    if !self.end_ticket(&ticket).await {
                        unreleased.push_back(ticket);
                    }
                }
                Some(_) = forming.join_next() => {}
                _ = tick.tick() => {
                    // Oldest first; the first failure ends the pass (Redis is still away).
                    while let Some(ticket) = unreleased.front() {
                        if !self.end_ticket(ticket).await {
                            break;
                        }
                        unreleased.pop_front();
                    }
                    for (queue, size) in &self.queues {
                        while let Ok(permit) = slots.clone().try_acquire_owned() {
                            let Some(taken) = self.form(queue, *size).await else { break };
                            let matchmaker = self.clone();
                            forming.spawn(async move {
                                matchmaker.start(taken).await;
                                drop(permit);
                            });
                        }
                        if let Ok(length) = self.queue.length(queue).await {
                            m::queue_length(queue, length);
                        }
                    }
                }
            }
        }
    }

    /// Ends the ticket of account `ticket.0` held by this node's connection `ticket.1`;
    /// `false` when the store could not be asked (to be tried again).
    async fn end_ticket(&self, ticket: &(String, u64)) -> bool {
        match self.queue.leave(&ticket.0, Some((self.cluster.node_id(), ticket.1))).await {
            Ok(Left::Removed(_)) => m::ticket_ended(TicketOutcome::Disconnected, 1),
            Ok(_) => {}
            Err(_) => return false,
        }
        true
    }

    /// Keeps the ticket of a player gone away for its grace; `false` when it cannot
    /// wait (its match is forming, or no grace) and ends as today.
    async fn park(&self, ticket: &(String, u64)) -> bool {
        match self.queue.park(&ticket.0, (self.cluster.node_id(), ticket.1)).await {
            Ok(Parked::Kept) => {
                m::queue_grace(GraceOutcome::Kept, 1);
                true
            }
            Ok(_) => false,
            Err(e) => {
                store_skipped(e, "queue ticket not kept through its grace");
                false
            }
        }
    }

    /// Takes one match's players from `queue`, if there are enough.
    async fn form(&self, queue: &str, size: usize) -> Option<Formed> {
        let match_id = uuid::Uuid::new_v4().to_string();
        let ttl = self.ticket_ttl_secs;
        let gone = self.cluster.gone_nodes();
        let taken = self.queue.take(queue, size, &match_id, self.cluster.node_id(), ttl, &gone).await.ok()?;
        m::ticket_ended(TicketOutcome::NodeDied, taken.dropped);
        m::queue_grace(GraceOutcome::Dropped, taken.expired);
        m::put_back(taken.put_back);
        if taken.tickets.is_empty() {
            return None;
        }
        // Tickets back from a failed try were counted when first matched.
        let fresh: Vec<&Ticket> = taken.tickets.iter().filter(|t| t.tries == 0).collect();
        tracing::info!(%match_id, queue, players = taken.tickets.len(), retried = taken.tickets.len() - fresh.len(), "match formed");
        if !fresh.is_empty() {
            let now_ms = unix_now_ms();
            let waits = fresh.iter().map(|t| Duration::from_millis(now_ms.saturating_sub(t.joined_ms)));
            m::match_formed(queue, waits);
            m::ticket_ended(TicketOutcome::Matched, fresh.len() as u64);
        }
        Some(Formed { match_id, tickets: taken.tickets })
    }

    /// One try at a game server for a formed match; then `match_found` to its players,
    /// or its players back at their places for another try, or `match_error` after the
    /// last one.
    async fn start(&self, formed: Formed) {
        let Formed { match_id, tickets } = formed;
        let allocator = &self.allocator;
        let key = &self.game_server_key;
        let token = if key.is_empty() { String::new() } else { ticket::credential(key, "match", &match_id) };
        let request = Request {
            match_id: &match_id,
            queue: tickets.first().map_or("", |t| t.queue.as_str()),
            players: tickets.iter().map(|t| t.username.as_str()).collect(),
            token: &token,
        };
        let started = std::time::Instant::now();
        let result = allocator.allocate(&request).await;
        let outcome = result.as_ref().map_or_else(Failure::result, |_| AllocationResult::Ok);
        m::allocation(allocator.kind(), outcome, started.elapsed());
        match result {
            Ok(server) => self.announce(&match_id, &tickets, &server).await,
            Err(e) => {
                // Each ticket counts its own tries: a player formed with one retried
                // before still gets every attempt. The put-back ends the tickets out of
                // tries (all of them, on the match's last try).
                let attempts = self.allocation_attempts;
                let done: Vec<&Ticket> = tickets.iter().filter(|t| t.tries + 1 >= attempts).collect();
                tracing::warn!(%match_id, out_of_tries = done.len(), error = %e, "no game server");
                if let Ok(back) = self.queue.put_back(&match_id, attempts).await {
                    m::put_back(back);
                }
                let text = Reply::MatchError { message: "Failed to start game server".into() }.to_json();
                for ticket in done {
                    self.send(ticket, text.clone()).await;
                }
            }
        }
    }

    /// Records the started match (for players who reconnect, and for its end) and sends
    /// each player its `match_found`, unless the match stopped forming meanwhile.
    async fn announce(&self, match_id: &str, tickets: &[Ticket], server: &Server) {
        let players: Vec<String> = tickets.iter().map(|t| t.username.clone()).collect();
        let ttl = self.ticket_ttl_secs;
        let expires_at = unix_now() + ttl as i64;
        let frames: Vec<(String, String)> = tickets
            .iter()
            .map(|ticket| {
                let found = MatchFound {
                    match_id: match_id.to_owned(),
                    players: players.clone(),
                    host: server.host.clone(),
                    port: server.port,
                    container_id: server.server_id.clone(),
                    ticket: ticket::sign(&self.keys[0], match_id, &ticket.username, &server.server_id, expires_at),
                };
                (ticket.account.clone(), Reply::MatchFound(found).to_json())
            })
            .collect();
        match self.queue.start(match_id, &server.server_id, &frames, ttl).await {
            Ok(true) => {}
            outcome => {
                // Its players were put back (this node was taken for gone) or the store
                // failed: another match will seat them; free the server.
                tracing::warn!(%match_id, ?outcome, "match no longer forming; not announced");
                if let Err(e) = self.queue.unlease(&server.server_id, match_id).await {
                    store_skipped(e, "server's lease left to expire");
                }
                return;
            }
        }
        for (ticket, (_, frame)) in tickets.iter().zip(frames) {
            self.send(ticket, frame).await;
        }
    }

    /// Sends a frame to the connection holding the ticket, and to no other session of its
    /// account: one told `dequeued` because the ticket moved is out of the match. A
    /// player who comes back on a new session while the match forms gets its
    /// `match_found` from [`resend_joinable`].
    /// The frame is kept in the account's personal resume stream first: a player away
    /// (its ticket in its grace) gets it when it resumes.
    async fn send(&self, ticket: &Ticket, text: String) {
        let at = self.cluster.append_personal(&ticket.account, &text).await.map(|at| (ticket.account.clone(), at));
        let event = BusEvent::Frame { to: FrameTarget::Connection(ticket.conn), text, at };
        self.cluster.send_to_node(&ticket.node, &event).await;
    }

    /// Sends a session that just authenticated the `match_found` of its account's match,
    /// if one is still joinable, or once the match being formed for it is announced.
    /// Answered beside the session, with other sessions' asks (`resend.rs`): the auth
    /// reply never waits for it, and is written first.
    pub fn resend_joinable(&self, account: String, outbox: Outbox) {
        self.resends.ask(account, outbox);
    }

    /// Answers [`resend_joinable`](Matchmaker::resend_joinable)'s asks until shutdown.
    pub async fn run_resends(self: Arc<Self>, asks: Asks, shutdown: CancellationToken) {
        resend::run(asks, self.queue.clone(), self.ticket_ttl_secs, shutdown).await
    }
}

/// A match taken from `queue`: its id and players.
struct Formed {
    match_id: String,
    tickets: Vec<Ticket>,
}
