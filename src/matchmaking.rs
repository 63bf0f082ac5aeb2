//! Matchmaking across the cluster. Tickets live in the shared store, one per account
//! (`store::MatchQueue`); every node runs a formation loop that atomically takes the
//! first players of each queue, leases a game server for them, and sends each player
//! `match_found` (with a signed join ticket) on whichever node holds them, or
//! `match_error` when no server could be had after `ALLOCATION_ATTEMPTS` tries.
//! A connection that goes away releases its ticket through `Session::end`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster;
use crate::config::Config;
use crate::node::Node;
use crate::protocol::{MatchFound, Reply};
use crate::store::{unix_now, BusEvent, FrameTarget, Ticket};

/// How often each node looks for matches to form.
const FORM_EVERY: Duration = Duration::from_millis(500);
/// Pause between two tries to get a game server for one match.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// This node's part of matchmaking: the configured queues, the server pool, the
/// ticket keys, and the tickets its connections let go of.
pub struct Matchmaker {
    queues: Vec<(String, usize)>,
    keys: Vec<(String, Vec<u8>)>,
    released: mpsc::UnboundedSender<(String, u64)>,
    released_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, u64)>>>,
}

impl Matchmaker {
    pub fn new(config: &Config) -> Matchmaker {
        let mut keys = config.match_ticket_keys.0.clone();
        if keys.is_empty() {
            keys.push(("node".into(), uuid::Uuid::new_v4().as_bytes().to_vec()));
        }
        let (released, rx) = mpsc::unbounded_channel();
        Matchmaker { queues: config.match_queues.0.clone(), keys, released, released_rx: Mutex::new(Some(rx)) }
    }

    /// The queue a `join_queue` names (`None`: the first configured), if it exists.
    pub fn queue(&self, name: Option<&str>) -> Option<&str> {
        match name {
            None => self.queues.first().map(|(q, _)| q.as_str()),
            Some(name) => self.queues.iter().find(|(q, _)| q == name).map(|(q, _)| q.as_str()),
        }
    }

    /// Connection `conn` of account `account` (lower case) ended with a ticket.
    pub fn release(&self, account: &str, conn: u64) {
        let _ = self.released.send((account.to_owned(), conn));
    }

    /// The join ticket of `username` for a match: `v1.<kid>.<claims>.<signature>`,
    /// the claims base64url JSON, the signature base64url HMAC-SHA256 of
    /// `v1.<kid>.<claims>` with the key `kid`.
    pub fn sign(&self, match_id: &str, username: &str, server_id: &str, expires_at: i64) -> String {
        let (kid, key) = &self.keys[0];
        let claims = serde_json::json!({"mid": match_id, "sub": username, "srv": server_id, "exp": expires_at});
        let signed = format!("v1.{kid}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

/// Forms matches every [`FORM_EVERY`] and releases the tickets of ended connections.
pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let Some(mut released) = node.matchmaker.released_rx.lock().unwrap().take() else {
        return;
    };
    let mut tick = tokio::time::interval(FORM_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some((account, conn)) = released.recv() => {
                let _ = node.stores.queue.leave(&account, Some((&node.node_id, conn))).await;
            }
            _ = tick.tick() => {
                for (queue, size) in node.matchmaker.queues.clone() {
                    while form(&node, &queue, size).await {}
                }
            }
        }
    }
}

/// Takes one match's players from `queue`, if there are enough; returns whether it did.
async fn form(node: &Node, queue: &str, size: usize) -> bool {
    let match_id = uuid::Uuid::new_v4().to_string();
    let ttl = node.config.match_ticket_ttl_secs;
    let gone = node.view.gone_nodes();
    let tickets = match node.stores.queue.take(queue, size, &match_id, ttl, &gone).await {
        Ok(tickets) if !tickets.is_empty() => tickets,
        _ => return false,
    };
    tracing::info!(%match_id, queue, players = tickets.len(), "match formed");
    let server = allocate(node, &match_id).await;
    let accounts: Vec<String> = tickets.iter().map(|t| t.account.clone()).collect();
    match server {
        Some((host, port)) => announce(node, &match_id, &tickets, &host, port).await,
        None => {
            tracing::warn!(%match_id, "no game server after {} attempts", node.config.allocation_attempts);
            let _ = node.stores.queue.settle(&accounts).await;
            let text = Reply::MatchError { message: "Failed to start game server".into() }.to_json();
            for ticket in &tickets {
                send(node, ticket, text.clone()).await;
            }
        }
    }
    true
}

/// A game server from the static pool, leased to the match; tried
/// `ALLOCATION_ATTEMPTS` times.
async fn allocate(node: &Node, match_id: &str) -> Option<(String, u16)> {
    let servers = &node.config.game_servers.0;
    for attempt in 0..node.config.allocation_attempts {
        if attempt > 0 {
            tokio::time::sleep(RETRY_AFTER).await;
        }
        // Start at a random server, so nodes do not all race for the first.
        let start = if servers.is_empty() { 0 } else { rand::random::<u32>() as usize % servers.len() };
        for (host, port) in servers.iter().cycle().skip(start).take(servers.len()) {
            let server_id = format!("{host}:{port}");
            let leased = node.stores.queue.lease(&server_id, match_id, node.config.game_server_lease_secs).await;
            if leased.unwrap_or(false) {
                return Some((host.clone(), *port));
            }
        }
    }
    None
}

async fn announce(node: &Node, match_id: &str, tickets: &[Ticket], host: &str, port: u16) {
    let players: Vec<String> = tickets.iter().map(|t| t.username.clone()).collect();
    let server_id = format!("{host}:{port}");
    let expires_at = unix_now() + node.config.match_ticket_ttl_secs as i64;
    for ticket in tickets {
        let found = MatchFound {
            match_id: match_id.to_owned(),
            players: players.clone(),
            host: host.to_owned(),
            port,
            container_id: server_id.clone(),
            ticket: node.matchmaker.sign(match_id, &ticket.username, &server_id, expires_at),
        };
        send(node, ticket, Reply::MatchFound(found).to_json()).await;
    }
}

/// Sends a frame to every session of the ticket's account, on the node holding it.
async fn send(node: &Node, ticket: &Ticket, text: String) {
    let event = BusEvent::Frame { to: FrameTarget::Account(ticket.account.clone()), text };
    cluster::send_to_node(node, &ticket.node, &event).await;
}
