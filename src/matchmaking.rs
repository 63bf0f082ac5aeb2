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
use crate::metrics as m;
use crate::node::Node;
use crate::protocol::{MatchFound, Reply};
use crate::store::{unix_now, BusEvent, FrameTarget, Left, Ticket};

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

/// Why a join ticket is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadTicket {
    Malformed,
    UnknownKey(String),
    BadSignature,
    Expired,
}

impl std::fmt::Display for BadTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTicket::Malformed => f.write_str("not a join ticket (v1.<kid>.<claims>.<signature>)"),
            BadTicket::UnknownKey(kid) => write!(f, "signed with key '{kid}', which is not in MATCH_TICKET_KEYS"),
            BadTicket::BadSignature => f.write_str("the signature does not match: forged or altered"),
            BadTicket::Expired => f.write_str("expired"),
        }
    }
}

/// Checks a join ticket against `keys` at `now` (Unix seconds); returns its claims.
pub fn verify(keys: &[(String, Vec<u8>)], ticket: &str, now: i64) -> Result<serde_json::Value, BadTicket> {
    let (signed, signature) = ticket.rsplit_once('.').ok_or(BadTicket::Malformed)?;
    let mut parts = signed.splitn(3, '.');
    let (Some("v1"), Some(kid), Some(claims)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BadTicket::Malformed);
    };
    let key = keys.iter().find(|(k, _)| k == kid).ok_or_else(|| BadTicket::UnknownKey(kid.to_owned()))?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| BadTicket::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.1).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&signature).map_err(|_| BadTicket::BadSignature)?;
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or(BadTicket::Malformed)?;
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Err(BadTicket::Expired);
    }
    Ok(claims)
}

#[derive(Debug, clap::Args)]
pub struct TicketArgs {
    /// `verify`
    #[arg(value_parser = ["verify"])]
    pub action: String,
    /// The ticket, as `match_found` carried it.
    pub ticket: String,
}

/// `openchampps ticket verify TICKET`: prints the claims of a valid ticket, or why not.
pub fn ticket_command(config: &Config, args: TicketArgs) -> Result<(), String> {
    let claims =
        verify(&config.match_ticket_keys.0, &args.ticket, unix_now()).map_err(|e| format!("ticket refused: {e}"))?;
    println!("valid: {claims}");
    Ok(())
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
                if let Ok(Left::Removed(_)) = node.stores.queue.leave(&account, Some((&node.node_id, conn))).await {
                    m::ticket_ended("disconnected", 1);
                }
            }
            _ = tick.tick() => {
                for (queue, size) in node.matchmaker.queues.clone() {
                    while form(&node, &queue, size).await {}
                    if let Ok(length) = node.stores.queue.length(&queue).await {
                        m::queue_length(&queue, length);
                    }
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
        Ok((tickets, dropped)) => {
            m::ticket_ended("node_died", dropped);
            tickets
        }
        Err(_) => return false,
    };
    if tickets.is_empty() {
        return false;
    }
    tracing::info!(%match_id, queue, players = tickets.len(), "match formed");
    let now_ms = (unix_now() * 1000) as u64;
    m::match_formed(queue, tickets.iter().map(|t| Duration::from_millis(now_ms.saturating_sub(t.joined_ms))));
    m::ticket_ended("matched", tickets.len() as u64);
    let started = std::time::Instant::now();
    let server = allocate(node, &match_id, &tickets).await;
    m::allocation(if server.is_some() { "ok" } else { "exhausted" }, started.elapsed());
    let accounts: Vec<String> = tickets.iter().map(|t| t.account.clone()).collect();
    match server {
        Some((host, port, server_id)) => announce(node, &match_id, &tickets, &host, port, &server_id).await,
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

/// A game server for the match, from the configured allocator; tried
/// `ALLOCATION_ATTEMPTS` times. Returns (host, port, server id).
async fn allocate(node: &Node, match_id: &str, tickets: &[Ticket]) -> Option<(String, u16, String)> {
    for attempt in 0..node.config.allocation_attempts {
        if attempt > 0 {
            tokio::time::sleep(RETRY_AFTER).await;
        }
        let server = match node.config.allocator.as_str() {
            "command" => run_command(&node.config.allocator_command, match_id, tickets).await,
            _ => lease_static(node, match_id).await,
        };
        match server {
            Ok(server) => return Some(server),
            Err(e) => tracing::warn!(%match_id, attempt = attempt + 1, error = %e, "no game server"),
        }
    }
    None
}

/// A server of the static pool nobody else holds, leased to the match.
async fn lease_static(node: &Node, match_id: &str) -> Result<(String, u16, String), String> {
    let servers = &node.config.game_servers.0;
    // Start at a random server, so nodes do not all race for the first.
    let start = if servers.is_empty() { 0 } else { rand::random::<u32>() as usize % servers.len() };
    for (host, port) in servers.iter().cycle().skip(start).take(servers.len()) {
        let server_id = format!("{host}:{port}");
        let leased = node.stores.queue.lease(&server_id, match_id, node.config.game_server_lease_secs).await;
        if leased.unwrap_or(false) {
            return Ok((host.clone(), *port, server_id));
        }
    }
    Err("every server of the pool is leased".into())
}

/// What `ALLOCATOR_COMMAND` prints.
#[derive(serde::Deserialize)]
struct Allocated {
    server_id: String,
    host: String,
    port: u16,
}

/// Runs `ALLOCATOR_COMMAND` with the match on stdin (`{"match_id","queue","players"}`),
/// within a minute.
async fn run_command(command: &str, match_id: &str, tickets: &[Ticket]) -> Result<(String, u16, String), String> {
    use tokio::io::AsyncWriteExt;
    let players: Vec<&str> = tickets.iter().map(|t| t.username.as_str()).collect();
    let queue = tickets.first().map_or("", |t| t.queue.as_str());
    let input = serde_json::json!({"match_id": match_id, "queue": queue, "players": players}).to_string();
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run ALLOCATOR_COMMAND: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| "ALLOCATOR_COMMAND did not answer within 60 s".to_owned())?
        .map_err(|e| format!("ALLOCATOR_COMMAND failed: {e}"))?;
    if !output.status.success() {
        return Err(format!("ALLOCATOR_COMMAND exited with {}", output.status));
    }
    let Allocated { server_id, host, port } = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("ALLOCATOR_COMMAND printed no {{server_id, host, port}}: {e}"))?;
    Ok((host, port, server_id))
}

async fn announce(node: &Node, match_id: &str, tickets: &[Ticket], host: &str, port: u16, server_id: &str) {
    let players: Vec<String> = tickets.iter().map(|t| t.username.clone()).collect();
    let expires_at = unix_now() + node.config.match_ticket_ttl_secs as i64;
    for ticket in tickets {
        let found = MatchFound {
            match_id: match_id.to_owned(),
            players: players.clone(),
            host: host.to_owned(),
            port,
            container_id: server_id.to_owned(),
            ticket: node.matchmaker.sign(match_id, &ticket.username, server_id, expires_at),
        };
        send(node, ticket, Reply::MatchFound(found).to_json()).await;
    }
}

/// Sends a frame to every session of the ticket's account, on the node holding it.
async fn send(node: &Node, ticket: &Ticket, text: String) {
    let event = BusEvent::Frame { to: FrameTarget::Account(ticket.account.clone()), text };
    cluster::send_to_node(node, &ticket.node, &event).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<(String, Vec<u8>)> {
        vec![("k1".into(), b"0123456789abcdef0123456789abcdef".to_vec())]
    }

    /// The test vector of docs/MATCH_TICKETS.md, computed with Python's `hmac`.
    const VECTOR: &str = "v1.k1.eyJleHAiOjIwMDAwMDAwMDAsIm1pZCI6IjExMTExMTExLTIyMjItMzMzMy00NDQ0LTU1NTU1NTU1NTU1NSIsInNydiI6IjIwMy4wLjExMy43OjcwMDEiLCJzdWIiOiJhbGljZSJ9.T-rVoER0dqRmt2YGLqWBvBkA_kCQ7zTVb9RvzH2nrO0";

    #[test]
    fn signs_what_it_verifies_and_refuses_the_rest() {
        let mut config = Config::from_flags(&[]).unwrap();
        config.match_ticket_keys = crate::config::TicketKeys(keys());
        let m = Matchmaker::new(&config);
        let ticket = m.sign("m-1", "alice", "203.0.113.7:7001", 2_000_000_000);
        let claims = verify(&keys(), &ticket, 1_900_000_000).unwrap();
        assert_eq!((claims["mid"].as_str(), claims["sub"].as_str()), (Some("m-1"), Some("alice")));
        assert_eq!(verify(&keys(), &ticket, 2_000_000_000), Err(BadTicket::Expired));
        let other = vec![("k1".to_owned(), b"another key, same id, 32 bytes!!".to_vec())];
        assert_eq!(verify(&other, &ticket, 0), Err(BadTicket::BadSignature));
        let tampered = ticket.replacen("v1.k1.", "v1.k1.e", 1);
        assert!(verify(&keys(), &tampered, 0).is_err());
        assert_eq!(verify(&[], &ticket, 0), Err(BadTicket::UnknownKey("k1".into())));
        assert_eq!(verify(&keys(), "nonsense", 0), Err(BadTicket::Malformed));
    }

    #[test]
    fn the_documented_vector_verifies() {
        let m = Matchmaker { keys: keys(), ..Matchmaker::new(&Config::from_flags(&[]).unwrap()) };
        let ticket = m.sign("11111111-2222-3333-4444-555555555555", "alice", "203.0.113.7:7001", 2_000_000_000);
        assert_eq!(ticket, VECTOR);
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/MATCH_TICKETS.md")).unwrap();
        assert!(doc.contains(VECTOR), "docs/MATCH_TICKETS.md lacks the test vector");
    }
}
