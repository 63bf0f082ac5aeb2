//! One connection's authentication state, owned by its connection task.

use std::net::IpAddr;
use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message;
use tokio::sync::{mpsc, Notify};

use crate::auth::TokenHash;
use crate::node::Node;
use crate::registry::Peer;

pub struct Auth {
    pub user_id: i64,
    pub username: String,
    pub token: TokenHash,
    /// Unix seconds.
    pub expires_at: i64,
    pub display_name: Arc<str>,
}

pub struct Session {
    pub id: u64,
    /// The client's address (behind a trusted proxy: the forwarded one).
    pub client_ip: IpAddr,
    pub auth: Option<Auth>,
    outbox: mpsc::Sender<Message>,
    too_slow: Arc<Notify>,
}

impl Session {
    pub fn new(id: u64, client_ip: IpAddr, outbox: mpsc::Sender<Message>, too_slow: Arc<Notify>) -> Session {
        Session { id, client_ip, auth: None, outbox, too_slow }
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    pub fn ip_string(&self) -> String {
        self.client_ip.to_string()
    }

    /// Marks the connection authenticated and makes it reachable by chat.
    pub fn authenticate(&mut self, node: &Node, auth: Auth) {
        let peer = Peer::new(auth.display_name.clone(), self.outbox.clone(), self.too_slow.clone());
        node.registry.insert(self.id, peer);
        self.auth = Some(auth);
    }

    pub fn logout(&mut self, node: &Node) {
        node.registry.remove(self.id);
        self.auth = None;
    }
}
