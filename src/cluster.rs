//! What makes many nodes one server: presence (the cluster-wide `count`), the
//! directory of who is where, and the chat bus. While Redis is unreachable all three
//! degrade to this node alone.
//!
//! Costs, whatever the number of nodes: `count` asks no store (each node keeps a
//! view of the others, refreshed by its heartbeat once a second); `global_chat` is
//! one call that takes from the sender's chat bucket, appends to the global resume
//! stream and publishes, and that every node receives once; `private_chat` is one
//! directory lookup (with the chat bucket taken from at the same time), one append to
//! the target account's personal stream, and one publish per node holding the
//! target, none when nobody holds it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper_tungstenite::tungstenite::Message;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::store_skipped;
use crate::metrics as m;
use crate::outbox::{Pushed, Stream};
use crate::protocol::{ChatLine, Reply};
use crate::ratelimit::ChatLimiter;
use crate::registry::{Registry, RouteChange, RouteChanges};
use crate::store::{
    Appended, Beat, Bus, BusEvent, ChatBuckets, Directory, FrameTarget, NameLookup, NodeInfo, Presence, Route, Stores,
    StreamLimits, StreamOf, Streams, UserStore,
};

/// How often a node writes its heartbeat and refreshes its view of the others.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Where a node is in its life, as `/ready` and the other nodes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Ready => "ready",
            Status::Draining => "draining",
        }
    }
}

/// Every this many heartbeats the node checks that PostgreSQL answers (for the
/// admin views of the cluster).
const POSTGRES_CHECK_BEATS: u32 = 5;

/// This node's part of the cluster: the stores that make it one, this node's live
/// sessions, and its view of the others. Built once at start-up; its tasks
/// ([`run_presence`](Cluster::run_presence), [`run_directory`](Cluster::run_directory),
/// [`run_chat_subscriber`](Cluster::run_chat_subscriber)) run beside the node.
pub struct Cluster {
    node_id: String,
    bus: Arc<dyn Bus>,
    directory: Arc<dyn Directory>,
    presence: Arc<dyn Presence>,
    chat_buckets: Arc<dyn ChatBuckets>,
    /// The resume streams every pushed frame is appended to, and how much they keep.
    streams: Arc<dyn Streams>,
    limits: StreamLimits,
    /// Which account a private message's target names, when the directory does not know.
    users: Arc<dyn UserStore>,
    registry: Arc<Registry>,
    chat: ChatLimiter,
    view: ClusterView,
    status: AtomicU8,
    /// Unix seconds this node started.
    started: i64,
}

/// This node's view of the other live nodes, as of its last heartbeat.
#[derive(Default)]
struct ClusterView {
    others_total: AtomicU64,
    /// The nodes found dead (by any node) lately: what they left behind in the
    /// directory and the queue is cleaned up by whichever node meets it.
    gone: RwLock<HashSet<String>>,
    /// Wakes the directory task when this node's routes must be announced again.
    reannounce: Notify,
}

impl ClusterView {
    fn update(&self, beat: Beat) {
        self.others_total.store(beat.others.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
        *self.gone.write().unwrap() = beat.gone.into_iter().collect();
        if beat.unknown {
            self.reannounce.notify_one();
        }
    }

    /// Redis is unreachable: this node counts alone (and judges nobody dead).
    fn alone(&self) {
        self.others_total.store(0, Ordering::Relaxed);
    }

    fn is_gone(&self, node_id: &str) -> bool {
        self.gone.read().unwrap().contains(node_id)
    }
}

impl Cluster {
    pub fn new(node_id: String, stores: &Stores, registry: Arc<Registry>, config: &Config) -> Cluster {
        Cluster {
            node_id,
            bus: stores.bus.clone(),
            directory: stores.directory.clone(),
            presence: stores.presence.clone(),
            chat_buckets: stores.chat.clone(),
            streams: stores.streams.clone(),
            limits: StreamLimits {
                window_ms: config.resume_window_secs * 1000,
                global_cap: config.resume_global_history,
                personal_cap: config.resume_personal_history,
            },
            users: stores.users.clone(),
            registry,
            chat: ChatLimiter::new(config),
            view: ClusterView::default(),
            status: AtomicU8::new(Status::Starting as u8),
            started: crate::store::unix_now(),
        }
    }

    pub fn status(&self) -> Status {
        match self.status.load(Ordering::Relaxed) {
            1 => Status::Ready,
            2 => Status::Draining,
            _ => Status::Starting,
        }
    }

    pub fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The nodes found dead lately.
    pub fn gone_nodes(&self) -> Vec<String> {
        self.view.gone.read().unwrap().iter().cloned().collect()
    }

    /// Forgets the local chat buckets that refilled (housekeeping).
    pub fn forget_idle_chat(&self) {
        self.chat.forget_idle();
    }

    /// The resume streams (RESUME.md) and how much they keep.
    pub fn streams(&self) -> (&Arc<dyn Streams>, &StreamLimits) {
        (&self.streams, &self.limits)
    }

    /// Appends `frame` to `account`'s personal stream: where it landed, or `None`
    /// (Redis down: the frame goes out without a position).
    pub async fn append_personal(&self, account: &str, frame: &str) -> Option<Appended> {
        match self.streams.append(StreamOf::Personal(account), frame, &self.limits).await {
            Ok(at) => Some(at),
            Err(e) => {
                store_skipped(e, "frame not kept for resume");
                None
            }
        }
    }

    /// Sends a global chat message of account `user_id` to the whole cluster, if the
    /// account is within its chat rate, which holds cluster-wide: one Redis call takes
    /// from its bucket, appends the frame to the global resume stream and publishes.
    /// While Redis is down this node's own bucket decides and the message reaches this
    /// node only. `false`: past the rate, nothing sent.
    pub async fn publish_chat(&self, user_id: i64, event: BusEvent) -> bool {
        let BusEvent::Global { from, account, message, .. } = &event else {
            return false;
        };
        let frame = Reply::GlobalChat(chat_line(from, account, message)).to_json();
        let rate = self.chat.rate();
        let shared = self.streams.take_append_publish(user_id, rate, &frame, &event, &self.limits).await;
        let shared = shared.map(|appended| appended.is_some());
        let allowed = if rate.is_some() { self.chat.settle(user_id, &shared) } else { true };
        if allowed && shared.is_err() {
            self.deliver_local(&event);
        }
        allowed
    }

    /// Whether account `user_id` may send one more chat message (taking it): its
    /// cluster-wide bucket, or this node's own while Redis is down.
    async fn chat_token(&self, user_id: i64) -> bool {
        let Some(rate) = self.chat.rate() else {
            return true;
        };
        self.chat.settle(user_id, &self.chat_buckets.take_message(user_id, rate).await)
    }

    /// Sends account `user_id`'s private message to the sessions of account `target`, or,
    /// when no account has that name, to the sessions with that display name: only to
    /// the nodes that hold them. Which account a spelling names is PostgreSQL's answer,
    /// remembered. `false`: past the sender's chat rate, nothing sent.
    pub async fn send_private(
        &self,
        user_id: i64,
        from: String,
        account: String,
        target: String,
        message: String,
    ) -> bool {
        let directory = &self.directory;
        // The chat bucket is asked alongside the route lookup, on the same shared
        // connection: one more command, no more waiting than the lookup's round trip.
        let (route, allowed) = tokio::join!(directory.account_route(&target), self.chat_token(user_id));
        if !allowed {
            return false;
        }
        let (lookup, nodes_of_target) = route.unwrap_or_default();
        let named = match lookup {
            NameLookup::Account(stored) => Some(stored),
            NameLookup::NoAccount => None,
            NameLookup::Unknown => match self.users.find_user(&target).await {
                Ok(user) => {
                    let stored = user.map(|u| u.username);
                    if let Err(e) = directory.remember_account(&target, stored.as_deref()).await {
                        store_skipped(e, "target's account not remembered");
                    }
                    stored
                }
                // Nobody can tell whether `target` is an account: treat it as one, so a
                // look-alike display name never gets the message.
                Err(_) => Some(target.clone()),
            },
        };
        let to = match named {
            Some(stored) => Route::Account(stored),
            None => Route::DisplayName(target.clone()),
        };
        let nodes = match &to {
            // Typed as stored: its nodes came with the lookup.
            Route::Account(stored) if *stored == target => nodes_of_target,
            _ => directory.nodes(&to).await.unwrap_or_default(),
        };
        // A message to an account is kept in its personal stream (one more command);
        // one to a display name no account has reaches only who holds it now.
        let at = match &to {
            Route::Account(stored) => {
                self.append_personal(stored, &Reply::PrivateChat(chat_line(&from, &account, &message)).to_json()).await
            }
            Route::DisplayName(_) => None,
        };
        let event = BusEvent::Private { from, account, to: to.clone(), message, at };
        // This node's own sessions are always looked at: the directory may be unreachable.
        self.deliver_local(&event);
        for holder in nodes.iter().filter(|n| **n != self.node_id) {
            if self.view.is_gone(holder) {
                // A node that died holding the route: drop it from the directory.
                if let Err(e) = self.directory.leave(&to, holder).await {
                    store_skipped(e, "dead node's route left in the directory");
                }
            } else {
                if let Err(e) = self.bus.publish_to(holder, &event).await {
                    store_skipped(e, "private message not sent to another node");
                }
            }
        }
        true
    }

    /// Hands a bus event to the matching sessions of this node.
    pub fn deliver_local(&self, event: &BusEvent) {
        match event {
            BusEvent::Global { from, account, message, at } => {
                let text = Reply::GlobalChat(chat_line(from, account, message)).to_json();
                let pushed = at.map(|at| pushed(Stream::Global, String::new(), at, &text));
                let relayed = self.registry.deliver_all(&Message::text(text), pushed.as_ref());
                m::chat_relayed(m::ChatKind::Global, relayed);
            }
            BusEvent::Private { from, account, to, message, at } => {
                let text = Reply::PrivateChat(chat_line(from, account, message)).to_json();
                let pushed = match (to, at) {
                    (Route::Account(target), Some(at)) => Some(pushed(Stream::Personal, target.clone(), *at, &text)),
                    _ => None,
                };
                let relayed = self.registry.deliver_to(to, &Message::text(text), pushed.as_ref());
                m::chat_relayed(m::ChatKind::Private, relayed);
            }
            BusEvent::Frame { to: FrameTarget::Account(account), text, at } => {
                let pushed = at.as_ref().map(|(owner, at)| pushed(Stream::Personal, owner.clone(), *at, text));
                let route = Route::Account(account.clone());
                self.registry.deliver_to(&route, &Message::text(text.as_str()), pushed.as_ref());
            }
            BusEvent::Frame { to: FrameTarget::Connection(id), text, at } => {
                let pushed = at.as_ref().map(|(owner, at)| pushed(Stream::Personal, owner.clone(), *at, text));
                self.registry.deliver_to_connection(*id, &Message::text(text.as_str()), pushed.as_ref());
            }
            BusEvent::Frame { to: FrameTarget::ConnectionOnly(id), text, at } => {
                let only = (self.node_id.clone(), *id);
                let pushed = at.as_ref().map(|(owner, at)| (owner, targeted(owner.clone(), *at, text, only)));
                self.registry.deliver_to_connection(
                    *id,
                    &Message::text(text.as_str()),
                    pushed.as_ref().map(|(_, p)| p),
                );
                // The account's other opted-in sessions here move past it now, as
                // `send_only` has those of the sending node do, rather than reading it
                // as a gap before their next personal frame.
                if let Some((owner, pushed)) = &pushed {
                    self.registry.pass(owner, pushed, Some(*id));
                }
            }
            BusEvent::Moderate { account, action } => {
                self.registry.moderate(account, &Arc::new(action.clone()));
            }
            BusEvent::Describe { account, reply_to, request } => {
                // Answered even when empty: the asking node waits for every node it asked.
                let sessions = self.registry.describe(account);
                let answer = BusEvent::Described { request: *request, node: self.node_id.clone(), sessions };
                let (bus, reply_to) = (self.bus.clone(), reply_to.clone());
                tokio::spawn(async move {
                    if let Err(e) = bus.publish_to(&reply_to, &answer).await {
                        store_skipped(e, "sessions not described to the asking node");
                    }
                });
            }
            // Answers go to the process that asked (`moderation`), not to sessions.
            BusEvent::Described { .. } => {}
        }
    }

    /// Sends `event` to node `node_id`: delivered here when that is this node.
    pub async fn send_to_node(&self, node_id: &str, event: &BusEvent) {
        if node_id == self.node_id {
            self.deliver_local(event);
        } else {
            if let Err(e) = self.bus.publish_to(node_id, event).await {
                store_skipped(e, "frame not sent to its node");
            }
        }
    }

    /// Sends `text` to connection `conn` of node `node_id` only, as a targeted entry of
    /// `account`'s personal stream (`dequeued` to a connection whose ticket moved to
    /// another of the account's connections): it gets a position, so the stream stays
    /// gap-free for every connection of the account, but only that connection writes it
    /// live; the others, here and on its node, move past it (RESUME.md; `resume`
    /// decides what a gap read or a replay writes of it). One append more than a
    /// frame sent live only.
    pub async fn send_only(&self, node_id: &str, conn: u64, account: &str, text: String) {
        let entry = crate::outbox::targeted_entry(node_id, conn, &text);
        let at = self.append_personal(account, &entry).await;
        if let (Some(at), true) = (at, node_id != self.node_id) {
            // This node's opted-in sessions of the account (the connection that took the
            // ticket, most often) move past it now rather than reading it as a gap later.
            self.registry.pass(account, &targeted(account.to_owned(), at, &text, (node_id.to_owned(), conn)), None);
        }
        let at = at.map(|at| (account.to_owned(), at));
        let event = BusEvent::Frame { to: FrameTarget::ConnectionOnly(conn), text, at };
        self.send_to_node(node_id, &event).await;
    }

    /// Authenticated connections across every live node, from this node's view (no
    /// store is asked); this node's own while Redis is down. This node's part is
    /// counted live, so a player always counts itself.
    pub fn player_count(&self) -> u64 {
        self.view.others_total.load(Ordering::Relaxed) + self.registry.authenticated_count() as u64
    }

    /// Writes this node's heartbeat once a second and refreshes its view of the others.
    /// Removes it on shutdown, so the count drops at once.
    pub async fn run_presence(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        // A late beat is not followed by a burst of catching-up beats.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_beat = Instant::now();
        let (mut beats, mut postgres_up) = (0u32, true);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if beats % POSTGRES_CHECK_BEATS == 0 {
                postgres_up = tokio::time::timeout(HEARTBEAT_EVERY, self.users.ping()).await.is_ok_and(|r| r.is_ok());
            }
            beats = beats.wrapping_add(1);
            let count = self.registry.authenticated_count();
            match self.presence.beat(&self.node_id, count).await {
                Ok(beat) => {
                    self.view.update(beat);
                    last_beat = Instant::now();
                    if let Err(e) = self.presence.announce(&self.facts(count, postgres_up)).await {
                        store_skipped(e, "this node's facts not shown to operators");
                    }
                }
                Err(_) => self.view.alone(),
            }
            m::heartbeat_age(last_beat.elapsed());
        }
        if let Err(e) = self.presence.remove(&self.node_id).await {
            tracing::warn!(error = %e, "could not remove presence at shutdown; it expires by itself");
        }
    }

    /// What operators see of this node (the admin API's nodes view).
    fn facts(&self, players: usize, postgres_up: bool) -> NodeInfo {
        let up = |up: bool| if up { "up" } else { "down" }.to_owned();
        NodeInfo {
            id: self.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: self.started,
            players: players as u64,
            status: self.status().as_str().to_owned(),
            // Written through Redis: as this node sees it, Redis answers.
            redis: up(true),
            postgres: up(postgres_up),
            heartbeat: crate::store::unix_now(),
        }
    }

    /// Keeps the directory told which routes this node holds, in the order they change.
    /// It announces every route held again after a failed write (Redis down), once Redis
    /// answers, and whenever the heartbeat finds this node unknown (Redis lost its data,
    /// or others judged this node dead and dropped its routes); at shutdown it withdraws
    /// them all.
    pub async fn run_directory(self: Arc<Self>, mut changes: RouteChanges, shutdown: CancellationToken) {
        let (directory, node_id) = (&self.directory, self.node_id.as_str());
        let mut missed = false;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.view.reannounce.notified() => {
                    missed = true;
                    None
                }
                change = changes.recv() => match change { Some(change) => Some(change), None => break },
            };
            if missed {
                let routes = self.registry.routes();
                let resent = futures_util::future::join_all(routes.iter().map(|route| directory.join(route, node_id)));
                missed = resent.await.iter().any(Result::is_err);
            }
            for change in first.into_iter().flat_map(|first| coalesce(first, &mut changes)) {
                let applied = match &change {
                    RouteChange::Join(route) => directory.join(route, node_id).await,
                    RouteChange::Leave(route) => directory.leave(route, node_id).await,
                };
                missed |= applied.is_err();
            }
        }
        for route in self.registry.routes() {
            if let Err(e) = directory.leave(&route, node_id).await {
                store_skipped(e, "route left in the directory at shutdown (it ages out with this node)");
            }
        }
    }

    /// Listens to the chat bus, subscribing again after any loss.
    pub async fn run_chat_subscriber(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let session = async {
                let mut events = self.bus.subscribe(&self.node_id).await?;
                while let Some(event) = events.next().await {
                    self.deliver_local(&event);
                }
                Ok::<(), crate::error::StoreError>(())
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = session => match result {
                    Ok(()) => tracing::warn!("chat bus subscription ended; resubscribing"),
                    Err(e) => {
                        m::store_error(m::Store::Redis);
                        tracing::warn!(error = %e, "chat bus unreachable; retrying");
                    }
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            }
        }
    }
}

fn pushed(stream: Stream, account: String, at: Appended, text: &str) -> Arc<Pushed> {
    Arc::new(Pushed { stream, account, at, text: text.to_owned(), only: None })
}

/// A targeted entry of `account`'s personal stream, for connection `only` alone.
fn targeted(account: String, at: Appended, text: &str, only: (String, u64)) -> Arc<Pushed> {
    Arc::new(Pushed { stream: Stream::Personal, account, at, text: text.to_owned(), only: Some(only) })
}

fn chat_line<'a>(from: &'a str, account: &'a str, message: &'a str) -> ChatLine<'a> {
    ChatLine { username: from.into(), message: message.into(), account: account.into() }
}

/// The net effect of `first` and every change already waiting: a route joined and
/// left again (a player renaming through many names) costs Redis nothing. A route's
/// changes alternate, so an even number of them cancels out. A few changes are
/// matched by a scan (a rename is two); past [`SCANNED`], through an index.
fn coalesce(first: RouteChange, waiting: &mut tokio::sync::mpsc::UnboundedReceiver<RouteChange>) -> Vec<RouteChange> {
    const SCANNED: usize = 32;
    let mut net: Vec<(RouteChange, usize)> = Vec::new();
    let mut index: Option<std::collections::HashMap<Route, usize>> = None;
    let mut add = |change: RouteChange| {
        let found = match &index {
            Some(index) => index.get(change.route()).copied(),
            None => net.iter().position(|(seen, _)| seen.route() == change.route()),
        };
        match found {
            Some(i) => net[i].1 += 1,
            None => {
                if let Some(index) = &mut index {
                    index.insert(change.route().clone(), net.len());
                }
                net.push((change, 1));
                if index.is_none() && net.len() > SCANNED {
                    let mut built = std::collections::HashMap::with_capacity(4 * SCANNED);
                    built.extend(net.iter().enumerate().map(|(i, (seen, _))| (seen.route().clone(), i)));
                    index = Some(built);
                }
            }
        }
    };
    add(first);
    while let Ok(change) = waiting.try_recv() {
        add(change);
    }
    net.into_iter().filter(|(_, n)| n % 2 == 1).map(|(change, _)| change).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_changes_that_cancel_out_cost_nothing() {
        let name = |n: &str| Route::DisplayName(n.to_owned());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for change in [
            RouteChange::Leave(name("a")),
            RouteChange::Join(name("b")),
            RouteChange::Leave(name("b")),
            RouteChange::Join(name("c")),
            RouteChange::Leave(name("c")),
            RouteChange::Join(name("d")),
        ] {
            tx.send(change).unwrap();
        }
        let first = RouteChange::Join(name("a"));
        // a joined then left, b and c came and went: only d remains.
        assert_eq!(coalesce(first, &mut rx), vec![RouteChange::Join(name("d"))]);
    }

    #[test]
    fn many_waiting_route_changes_cancel_out_through_the_index() {
        let name = |n: usize| Route::DisplayName(format!("n{n}"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // A rename storm through 80 names, back to the first and on to the last.
        for n in 1..80 {
            tx.send(RouteChange::Join(name(n))).unwrap();
            tx.send(RouteChange::Leave(name(n))).unwrap();
        }
        tx.send(RouteChange::Join(name(0))).unwrap();
        tx.send(RouteChange::Leave(name(0))).unwrap();
        tx.send(RouteChange::Join(name(80))).unwrap();
        let first = RouteChange::Leave(name(0));
        assert_eq!(coalesce(first, &mut rx), vec![RouteChange::Leave(name(0)), RouteChange::Join(name(80))]);
    }
}
