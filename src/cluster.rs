//! What makes many nodes one server: presence (the cluster-wide `count`) and the chat
//! bus over Redis pub/sub. While Redis is unreachable both degrade to this node alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::node::Node;
use crate::protocol::{ChatLine, Reply};
use crate::store::{ChatEvent, Recipient};

/// How often a node rewrites its presence even when nothing changed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Sends a chat message to the whole cluster; to this node only while Redis is down.
pub async fn publish(node: &Node, event: ChatEvent) {
    if node.stores.bus.publish(&event).await.is_err() {
        deliver_local(node, &event);
    }
}

/// Hands a chat event to the matching authenticated connections of this node.
pub fn deliver_local(node: &Node, event: &ChatEvent) {
    match event {
        ChatEvent::Global { from, account, message } => {
            let text = Reply::GlobalChat(chat_line(from, account, message)).to_json();
            let n = node.registry.deliver(&Message::text(text), |_| true);
            m::chat_relayed("global", n);
        }
        ChatEvent::Private { from, account, to, message } => {
            let text = Reply::PrivateChat(chat_line(from, account, message)).to_json();
            let n = match to {
                Recipient::Account(name) => {
                    let name = name.to_lowercase();
                    node.registry.deliver(&Message::text(text), |p| p.account.to_lowercase() == name)
                }
                Recipient::DisplayName(name) => {
                    node.registry.deliver(&Message::text(text), |p| &*p.display_name == name.as_str())
                }
            };
            m::chat_relayed("private", n);
        }
    }
}

fn chat_line<'a>(from: &'a str, account: &'a str, message: &'a str) -> ChatLine<'a> {
    ChatLine { username: from.into(), message: message.into(), account: account.into() }
}

/// Authenticated connections across every live node; this node's own while Redis is
/// down. This node's part is counted live, so a player always counts itself.
pub async fn player_count(node: &Node) -> u64 {
    let others = node.stores.presence.cluster_count(&node.node_id).await.unwrap_or(0);
    others + node.registry.authenticated_count() as u64
}

/// Keeps this node's presence fresh: on every change of its authenticated count and
/// every [`HEARTBEAT_EVERY`]. Removes it on shutdown, so the count drops at once.
pub async fn run_presence(node: Arc<Node>, shutdown: CancellationToken) {
    let mut count = node.registry.watch_len();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut last_beat = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            changed = count.changed() => if changed.is_err() { break },
        }
        let n = *count.borrow_and_update();
        if node.stores.presence.heartbeat(&node.node_id, n).await.is_ok() {
            last_beat = Instant::now();
        }
        m::heartbeat_age(last_beat.elapsed());
    }
    if let Err(e) = node.stores.presence.remove(&node.node_id).await {
        tracing::warn!(error = %e, "could not remove presence at shutdown; it expires by itself");
    }
}

/// Listens to the chat bus, subscribing again after any loss.
pub async fn run_chat_subscriber(node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        let session = async {
            let mut events = node.stores.bus.subscribe().await?;
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
