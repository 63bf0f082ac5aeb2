//! `set_username`: renames the session (not the account), cluster-wide.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::Outcome;
use crate::names;
use crate::node::Node;
use crate::protocol::{parse_string, Reply};
use crate::session::Session;
use crate::store::seconds_until;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    // The seed document: a payload that is not a string, or not a display name
    // (`names::display_name`), is silently ignored: no reply, nothing stored.
    let Some(name) = parse_string(payload).and_then(|raw| names::display_name(&raw)) else {
        return Ok(None);
    };
    session.rename(node, Arc::from(name.as_str()));
    // Stored with the session so a reconnect to any node restores it. Without Redis
    // the rename still holds for this connection.
    let player = session.player();
    let ttl = seconds_until(player.expires_at);
    if let Err(e) = node.stores.sessions.set_display_name(&player.token_hash, &name, ttl).await {
        tracing::warn!(error = %e, "display name not stored in Redis; kept on this connection only");
    }
    Ok(Some(Reply::DisplayNameUpdated(name.into()).to_json()))
}
