//! The live sessions of this node — the only per-node state, rebuilt by reconnecting.
//! Chat finds its recipients here: everyone for global chat, or, through an index by
//! route (account, display name), exactly the sessions a private message is for.
//! Presence publishes its size; the directory learns from it which routes this node
//! holds (a route is announced when its first session arrives and withdrawn when its
//! last one leaves).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use hyper_tungstenite::tungstenite::Message;
use tokio::sync::mpsc;

use crate::auth::TokenHash;
use crate::metrics as m;
use crate::outbox::{Moderated, Outbox, Outgoing, Pushed};
use crate::store::{Route, SessionInfo};

/// An authenticated connection as seen from outside its task.
pub struct Peer {
    pub display_name: Arc<str>,
    /// The account's name as stored.
    pub account: Arc<str>,
    pub token_hash: TokenHash,
    pub outbox: Outbox,
    /// The client's address, when the session began (unix seconds) and how it
    /// authenticated: what the admin views show of it.
    pub address: std::net::IpAddr,
    pub since: i64,
    pub via: Via,
    /// The connection opted into resume (RESUME.md): it gets stream frames as
    /// [`Outgoing::Pushed`], to number them itself.
    pub resume: bool,
}

impl Peer {
    /// What this peer is offered of a frame: as is, or, for an opted-in connection, as
    /// the stream frame it is.
    fn offer(&self, message: &Message, pushed: Option<&Arc<Pushed>>) -> bool {
        match pushed {
            Some(pushed) if self.resume => self.outbox.offer(Outgoing::Pushed(pushed.clone())),
            _ => self.outbox.offer(Outgoing::Frame(message.clone())),
        }
    }

    fn routes(&self) -> [Route; 2] {
        [Route::Account(self.account.to_string()), Route::DisplayName(self.display_name.to_string())]
    }
}

/// How a session authenticated (the admin views show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Login,
    TokenAuth,
    Register,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Login => "login",
            Via::TokenAuth => "token_auth",
            Via::Register => "register",
        }
    }
}

/// A change of the routes this node holds, for the cluster directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Join(Route),
    Leave(Route),
}

impl RouteChange {
    pub fn route(&self) -> &Route {
        match self {
            RouteChange::Join(route) | RouteChange::Leave(route) => route,
        }
    }
}

/// The route changes in the order they happen, for the one task that announces them.
pub type RouteChanges = mpsc::UnboundedReceiver<RouteChange>;

#[derive(Default)]
struct Peers {
    by_id: HashMap<u64, Peer>,
    by_route: HashMap<Route, HashSet<u64>>,
}

impl Peers {
    fn index(&mut self, id: u64, route: Route, changes: &mpsc::UnboundedSender<RouteChange>) {
        let ids = self.by_route.entry(route.clone()).or_default();
        if ids.insert(id) && ids.len() == 1 {
            let _ = changes.send(RouteChange::Join(route));
        }
    }

    fn unindex(&mut self, id: u64, route: Route, changes: &mpsc::UnboundedSender<RouteChange>) {
        if let Some(ids) = self.by_route.get_mut(&route) {
            if ids.remove(&id) && ids.is_empty() {
                self.by_route.remove(&route);
                let _ = changes.send(RouteChange::Leave(route));
            }
        }
    }
}

pub struct Registry {
    peers: RwLock<Peers>,
    authenticated: AtomicUsize,
    changes: mpsc::UnboundedSender<RouteChange>,
}

impl Registry {
    /// An empty registry, and the changes of the routes it will hold.
    pub fn new() -> (Registry, RouteChanges) {
        let (changes, rx) = mpsc::unbounded_channel();
        (Registry { peers: RwLock::default(), authenticated: AtomicUsize::new(0), changes }, rx)
    }

    /// Adds or replaces the entry of connection `id`.
    pub fn insert(&self, id: u64, peer: Peer) {
        let mut peers = self.peers.write().unwrap();
        if let Some(old) = peers.by_id.get_mut(&id) {
            if old.account == peer.account && old.display_name == peer.display_name {
                // The same routes (a session authenticating again): nothing to re-index.
                *old = peer;
                return;
            }
        }
        let new = peer.routes();
        let old: Vec<Route> = peers.by_id.insert(id, peer).map(|old| old.routes().to_vec()).unwrap_or_default();
        for route in new.iter().filter(|r| !old.contains(r)) {
            peers.index(id, route.clone(), &self.changes);
        }
        for route in old.into_iter().filter(|r| !new.contains(r)) {
            peers.unindex(id, route, &self.changes);
        }
        self.publish_len(peers.by_id.len());
    }

    pub fn remove(&self, id: u64) {
        let mut peers = self.peers.write().unwrap();
        if let Some(old) = peers.by_id.remove(&id) {
            for route in old.routes() {
                peers.unindex(id, route, &self.changes);
            }
            self.publish_len(peers.by_id.len());
        }
    }

    pub fn rename(&self, id: u64, display_name: Arc<str>) {
        let mut peers = self.peers.write().unwrap();
        let Some(peer) = peers.by_id.get_mut(&id) else {
            return;
        };
        if peer.display_name == display_name {
            return;
        }
        let old = std::mem::replace(&mut peer.display_name, display_name.clone());
        peers.index(id, Route::DisplayName(display_name.to_string()), &self.changes);
        peers.unindex(id, Route::DisplayName(old.to_string()), &self.changes);
    }

    pub fn authenticated_count(&self) -> usize {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Every route held here now (to announce them all again after the directory
    /// missed changes).
    pub fn routes(&self) -> Vec<Route> {
        self.peers.read().unwrap().by_route.keys().cloned().collect()
    }

    /// Queues `message` for every session; returns how many got it. A session whose
    /// queue is full is told to disconnect rather than let its backlog grow.
    /// `pushed`: where the frame is in a resume stream, for opted-in connections.
    pub fn deliver_all(&self, message: &Message, pushed: Option<&Arc<Pushed>>) -> u64 {
        let peers = self.peers.read().unwrap();
        peers.by_id.values().filter(|peer| peer.offer(message, pushed)).count() as u64
    }

    /// Queues `message` for the sessions of `route` only.
    pub fn deliver_to(&self, route: &Route, message: &Message, pushed: Option<&Arc<Pushed>>) -> u64 {
        let peers = self.peers.read().unwrap();
        let Some(ids) = peers.by_route.get(route) else {
            return 0;
        };
        let offered = ids.iter().filter_map(|id| peers.by_id.get(id));
        offered.filter(|peer| peer.offer(message, pushed)).count() as u64
    }

    /// Queues `message` for connection `id`, if it is a live session here; a frame of
    /// `pushed`'s personal stream also goes to the account's other opted-in sessions
    /// here (its stream is theirs too).
    pub fn deliver_to_connection(&self, id: u64, message: &Message, pushed: Option<&Arc<Pushed>>) -> bool {
        let peers = self.peers.read().unwrap();
        if let Some(pushed) = pushed {
            let ids = peers.by_route.get(&Route::Account(pushed.account.clone()));
            let others = ids.into_iter().flatten().filter(|other| **other != id).filter_map(|i| peers.by_id.get(i));
            for peer in others.filter(|peer| peer.resume) {
                peer.outbox.offer(Outgoing::Pushed(pushed.clone()));
            }
        }
        peers.by_id.get(&id).is_some_and(|peer| peer.offer(message, pushed))
    }

    /// Offers a targeted entry of `pushed`'s personal stream to the account's opted-in
    /// sessions here other than connection `except` (the one it is for, when it is
    /// here: it is delivered the entry itself), which only move past it; the others
    /// are offered nothing.
    pub fn pass(&self, account: &str, pushed: &Arc<Pushed>, except: Option<u64>) {
        let peers = self.peers.read().unwrap();
        let ids = peers.by_route.get(&Route::Account(account.to_owned()));
        let others = ids.into_iter().flatten().filter(|id| Some(**id) != except);
        for peer in others.filter_map(|id| peers.by_id.get(id)).filter(|peer| peer.resume) {
            peer.outbox.offer(Outgoing::Pushed(pushed.clone()));
        }
    }

    /// The tokens of every live session here, each once.
    pub fn tokens(&self) -> Vec<TokenHash> {
        let mut tokens: Vec<TokenHash> = self.peers.read().unwrap().by_id.values().map(|p| p.token_hash).collect();
        tokens.sort_unstable_by_key(|t| t.0);
        tokens.dedup();
        tokens
    }

    /// Tells every session using `token` to end.
    pub fn revoke(&self, token: &TokenHash) {
        for peer in self.peers.read().unwrap().by_id.values().filter(|p| p.token_hash == *token) {
            peer.outbox.offer(Outgoing::Revoked(*token));
        }
    }

    /// Asks every session of `account` (its name as stored) to carry out an
    /// operator's action; returns how many were asked.
    pub fn moderate(&self, account: &str, action: &Arc<Moderated>) -> u64 {
        let peers = self.peers.read().unwrap();
        let Some(ids) = peers.by_route.get(&Route::Account(account.to_owned())) else {
            return 0;
        };
        let asked = ids.iter().filter_map(|id| peers.by_id.get(id));
        asked.filter(|peer| peer.outbox.offer(Outgoing::Moderated(action.clone()))).count() as u64
    }

    /// Asks every session using `token` to carry out an operator's action.
    pub fn moderate_token(&self, token: &TokenHash, action: &Arc<Moderated>) {
        for peer in self.peers.read().unwrap().by_id.values().filter(|p| p.token_hash == *token) {
            peer.outbox.offer(Outgoing::Moderated(action.clone()));
        }
    }

    /// The sessions of `account` here, as the admin views show them.
    pub fn describe(&self, account: &str) -> Vec<SessionInfo> {
        let peers = self.peers.read().unwrap();
        let Some(ids) = peers.by_route.get(&Route::Account(account.to_owned())) else {
            return Vec::new();
        };
        let mut sessions: Vec<SessionInfo> = ids
            .iter()
            .filter_map(|id| peers.by_id.get(id))
            .map(|peer| SessionInfo {
                display_name: peer.display_name.to_string(),
                address: peer.address.to_string(),
                since: peer.since,
                via: peer.via.as_str().to_owned(),
            })
            .collect();
        sessions.sort_by_key(|s| s.since);
        sessions
    }

    fn publish_len(&self, len: usize) {
        self.authenticated.store(len, Ordering::Relaxed);
        m::authenticated_connections(len);
    }
}
