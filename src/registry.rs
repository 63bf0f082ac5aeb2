//! The live sockets of this node — the only per-node state, rebuilt by reconnecting.
//! Chat fan-out finds its recipients here; presence publishes its size.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hyper_tungstenite::tungstenite::Message;
use tokio::sync::watch;

use crate::auth::TokenHash;
use crate::metrics as m;
use crate::outbox::{Outbox, Outgoing};

/// An authenticated connection as seen from outside its task.
pub struct Peer {
    pub display_name: Arc<str>,
    /// The account's name as stored.
    pub account: Arc<str>,
    pub token_hash: TokenHash,
    pub outbox: Outbox,
}

pub struct Registry {
    peers: RwLock<HashMap<u64, Peer>>,
    authenticated: watch::Sender<usize>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { peers: RwLock::default(), authenticated: watch::Sender::new(0) }
    }
}

impl Registry {
    /// Adds or replaces the entry of connection `id`.
    pub fn insert(&self, id: u64, peer: Peer) {
        let mut peers = self.peers.write().unwrap();
        peers.insert(id, peer);
        self.publish_len(peers.len());
    }

    pub fn remove(&self, id: u64) {
        let mut peers = self.peers.write().unwrap();
        if peers.remove(&id).is_some() {
            self.publish_len(peers.len());
        }
    }

    pub fn rename(&self, id: u64, display_name: Arc<str>) {
        if let Some(peer) = self.peers.write().unwrap().get_mut(&id) {
            peer.display_name = display_name;
        }
    }

    pub fn authenticated_count(&self) -> usize {
        *self.authenticated.borrow()
    }

    /// Follows the number of authenticated connections.
    pub fn watch_len(&self) -> watch::Receiver<usize> {
        self.authenticated.subscribe()
    }

    /// Queues `message` for every peer `to` accepts; returns how many got it. A peer
    /// whose queue is full is told to disconnect rather than let its backlog grow.
    pub fn deliver(&self, message: &Message, to: impl Fn(&Peer) -> bool) -> u64 {
        let peers = self.peers.read().unwrap();
        let mut delivered = 0;
        for peer in peers.values().filter(|p| to(p)) {
            if peer.outbox.offer(Outgoing::Frame(message.clone())) {
                delivered += 1;
            }
        }
        delivered
    }

    /// The tokens of every live session here, each once.
    pub fn tokens(&self) -> Vec<TokenHash> {
        let mut tokens: Vec<TokenHash> = self.peers.read().unwrap().values().map(|p| p.token_hash).collect();
        tokens.sort_unstable_by_key(|t| t.0);
        tokens.dedup();
        tokens
    }

    /// Tells every session using `token` to end.
    pub fn revoke(&self, token: &TokenHash) {
        for peer in self.peers.read().unwrap().values().filter(|p| p.token_hash == *token) {
            peer.outbox.offer(Outgoing::Revoked(*token));
        }
    }

    /// Wakes presence only when the number really changed (a re-authentication
    /// replaces an entry and must not cost a heartbeat).
    fn publish_len(&self, len: usize) {
        self.authenticated.send_if_modified(|current| {
            let changed = *current != len;
            *current = len;
            changed
        });
        m::authenticated_connections(len);
    }
}
