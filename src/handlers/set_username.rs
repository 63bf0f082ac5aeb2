//! `set_username`: renames the session (not the account), cluster-wide.

use std::sync::Arc;

use super::{store_skipped, Outcome};
use crate::names;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::{Auth, Session};
use crate::store::seconds_until;

pub async fn apply(node: &Node, session: &mut Session, player: &Auth, request: Option<String>) -> Outcome {
    // The seed document: a payload that is not a string, or not a display name
    // (`names::display_name`), is silently ignored: no reply, nothing stored.
    let Some(name) = request.and_then(|raw| names::display_name(&raw)) else {
        return Ok(None);
    };
    session.rename(node, Arc::from(name.as_str()));
    // Stored with the session so a reconnect to any node restores it. Without Redis
    // the rename still holds for this connection.
    let ttl = seconds_until(player.expires_at);
    if let Err(e) = node.stores.sessions.set_display_name(&player.token_hash, &name, ttl).await {
        store_skipped(e, "display name kept on this connection only");
    }
    Ok(Some(Reply::DisplayNameUpdated(name.into())))
}
