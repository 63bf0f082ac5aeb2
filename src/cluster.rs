//! What makes many nodes one server: presence (the cluster-wide `count`), the
//! directory of who is where, and the chat bus. While Redis is unreachable all three
//! degrade to this node alone.
//!
//! Costs, whatever the number of nodes: `count` asks no store (each node keeps a
//! view of the others, refreshed by its heartbeat once a second); `global_chat` is
//! one publish that every node receives once; `private_chat` is one directory lookup
//! and one publish per node holding the target, none when nobody holds it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::node::Node;
use crate::protocol::{ChatLine, Reply};
use crate::registry::RouteChange;
use crate::store::{BusEvent, FrameTarget, Route};

/// How often a node writes its heartbeat and refreshes its view of the others.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// This node's view of the other live nodes, as of its last heartbeat.
#[derive(Default)]
pub struct ClusterView {
    others_total: AtomicU64,
    nodes: RwLock<Nodes>,
}

#[derive(Default)]
struct Nodes {
    live: HashSet<String>,
    /// Seen alive once and gone since: dead (a node too new to have been seen yet
    /// is not among them).
    gone: HashSet<String>,
}

impl ClusterView {
    fn update(&self, others: Vec<(String, u64)>) {
        self.others_total.store(others.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
        let live: HashSet<String> = others.into_iter().map(|(node, _)| node).collect();
        let mut nodes = self.nodes.write().unwrap();
        let gone: Vec<String> = nodes.live.difference(&live).cloned().collect();
        nodes.gone.extend(gone);
        nodes.gone.retain(|node| !live.contains(node));
        nodes.live = live;
    }

    fn is_gone(&self, node_id: &str) -> bool {
        self.nodes.read().unwrap().gone.contains(node_id)
    }

    /// The nodes seen alive once and gone since.
    pub fn gone_nodes(&self) -> Vec<String> {
        self.nodes.read().unwrap().gone.iter().cloned().collect()
    }
}

/// Sends a chat message to the whole cluster; to this node only while Redis is down.
pub async fn publish(node: &Node, event: BusEvent) {
    if node.stores.bus.publish(&event).await.is_err() {
        deliver_local(node, &event);
    }
}

/// Sends a private message to the sessions of account `target`, or, when no account
/// has that name, to the sessions with that display name: only to the nodes that
/// hold them.
pub async fn send_private(node: &Node, from: String, account: String, target: String, message: String) {
    let lower = target.to_lowercase();
    let (known, account_nodes) = node.stores.directory.account_route(&lower).await.unwrap_or_default();
    let is_account = match known {
        Some(is_account) => is_account,
        None => match node.stores.users.find_user(&target).await {
            Ok(user) => {
                let _ = node.stores.directory.remember_account(&lower, user.is_some()).await;
                user.is_some()
            }
            // Nobody can tell whether `target` is an account: treat it as one, so a
            // look-alike display name never gets the message.
            Err(_) => true,
        },
    };
    let (to, nodes) = if is_account {
        (Route::Account(lower), account_nodes)
    } else {
        let route = Route::DisplayName(target);
        let nodes = node.stores.directory.nodes(&route).await.unwrap_or_default();
        (route, nodes)
    };
    let event = BusEvent::Private { from, account, to: to.clone(), message };
    // This node's own sessions are always looked at: the directory may be unreachable.
    deliver_local(node, &event);
    for holder in nodes.iter().filter(|n| **n != node.node_id) {
        if node.view.is_gone(holder) {
            // A node that died holding the route: drop it from the directory.
            let _ = node.stores.directory.leave(&to, holder).await;
        } else {
            let _ = node.stores.bus.publish_to(holder, &event).await;
        }
    }
}

/// Hands a chat event to the matching sessions of this node.
pub fn deliver_local(node: &Node, event: &BusEvent) {
    match event {
        BusEvent::Global { from, account, message } => {
            let text = Reply::GlobalChat(chat_line(from, account, message)).to_json();
            m::chat_relayed("global", node.registry.deliver_all(&Message::text(text)));
        }
        BusEvent::Private { from, account, to, message } => {
            let text = Reply::PrivateChat(chat_line(from, account, message)).to_json();
            m::chat_relayed("private", node.registry.deliver_to(to, &Message::text(text)));
        }
        BusEvent::Frame { to: FrameTarget::Account(lower), text } => {
            node.registry.deliver_to(&Route::Account(lower.clone()), &Message::text(text.as_str()));
        }
        BusEvent::Frame { to: FrameTarget::Connection(id), text } => {
            node.registry.deliver_to_connection(*id, &Message::text(text.as_str()));
        }
    }
}

/// Sends `event` to node `node_id`: delivered here when that is this node.
pub async fn send_to_node(node: &Node, node_id: &str, event: &BusEvent) {
    if node_id == node.node_id {
        deliver_local(node, event);
    } else {
        let _ = node.stores.bus.publish_to(node_id, event).await;
    }
}

fn chat_line<'a>(from: &'a str, account: &'a str, message: &'a str) -> ChatLine<'a> {
    ChatLine { username: from.into(), message: message.into(), account: account.into() }
}

/// Authenticated connections across every live node, from this node's view (no
/// store is asked); this node's own while Redis is down. This node's part is
/// counted live, so a player always counts itself.
pub fn player_count(node: &Node) -> u64 {
    node.view.others_total.load(Ordering::Relaxed) + node.registry.authenticated_count() as u64
}

/// Writes this node's heartbeat once a second and refreshes its view of the others.
/// Removes it on shutdown, so the count drops at once.
pub async fn run_presence(node: Arc<Node>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut last_beat = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let count = node.registry.authenticated_count();
        match node.stores.presence.beat(&node.node_id, count).await {
            Ok(others) => {
                node.view.update(others);
                last_beat = Instant::now();
            }
            Err(_) => node.view.update(Vec::new()),
        }
        m::heartbeat_age(last_beat.elapsed());
    }
    if let Err(e) = node.stores.presence.remove(&node.node_id).await {
        tracing::warn!(error = %e, "could not remove presence at shutdown; it expires by itself");
    }
}

/// Keeps the directory told which routes this node holds, in the order they change.
/// After a failure (Redis down) it announces every route held again once Redis
/// answers; at shutdown it withdraws them all.
pub async fn run_directory(node: Arc<Node>, shutdown: CancellationToken) {
    let Some(mut changes) = node.registry.take_route_changes() else {
        return;
    };
    let (directory, node_id) = (&node.stores.directory, node.node_id.as_str());
    let mut missed = false;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            change = changes.recv() => match change { Some(change) => change, None => break },
        };
        if missed {
            let routes = node.registry.routes();
            let resent = futures_util::future::join_all(routes.iter().map(|route| directory.join(route, node_id)));
            missed = resent.await.iter().any(Result::is_err);
        }
        for change in coalesce(first, &mut changes) {
            let applied = match &change {
                RouteChange::Join(route) => directory.join(route, node_id).await,
                RouteChange::Leave(route) => directory.leave(route, node_id).await,
            };
            missed |= applied.is_err();
        }
    }
    for route in node.registry.routes() {
        let _ = directory.leave(&route, node_id).await;
    }
}

/// The net effect of `first` and every change already waiting: a route joined and
/// left again (a player renaming through many names) costs Redis nothing. A route's
/// changes alternate, so an even number of them cancels out.
fn coalesce(first: RouteChange, waiting: &mut tokio::sync::mpsc::UnboundedReceiver<RouteChange>) -> Vec<RouteChange> {
    let mut net: Vec<(RouteChange, usize)> = Vec::new();
    let mut index: std::collections::HashMap<Route, usize> = std::collections::HashMap::new();
    let mut add = |change: RouteChange| {
        let route = match &change {
            RouteChange::Join(route) | RouteChange::Leave(route) => route.clone(),
        };
        match index.get(&route) {
            Some(&i) => net[i].1 += 1,
            None => {
                index.insert(route, net.len());
                net.push((change, 1));
            }
        }
    };
    add(first);
    while let Ok(change) = waiting.try_recv() {
        add(change);
    }
    net.into_iter().filter(|(_, n)| n % 2 == 1).map(|(change, _)| change).collect()
}
/// Listens to the chat bus, subscribing again after any loss.
pub async fn run_chat_subscriber(node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        let session = async {
            let mut events = node.stores.bus.subscribe(&node.node_id).await?;
            while let Some(event) = events.next().await {
                deliver_local(&node, &event);
            }
            Ok::<(), crate::error::StoreError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session => match result {
                Ok(()) => tracing::warn!("chat bus subscription ended; resubscribing"),
                Err(e) => {
                    m::store_error("redis");
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
}
