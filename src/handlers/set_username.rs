//! `set_username`: renames the session (not the account), cluster-wide.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::Outcome;
use crate::node::Node;
use crate::protocol::{parse_string, Reply};
use crate::session::Session;
use crate::store::seconds_until;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    // The seed document: a payload that is not a string is silently ignored.
    let Some(name) = parse_string(payload) else {
        return Ok(None);
    };
    let auth = session.auth.as_mut().expect("dispatch checked authentication");
    let display_name: Arc<str> = name.as_str().into();
    auth.display_name = display_name.clone();
    node.registry.rename(session.id, display_name);
    // Stored with the session so a reconnect to any node restores it. Without Redis
    // the rename still holds for this connection.
    if let Err(e) = node.shared.set_display_name(&auth.token, &name, seconds_until(auth.expires_at)).await {
        tracing::warn!(error = %e, "display name not stored in Redis; kept on this connection only");
    }
    Ok(Some(Reply::DisplayNameUpdated(&name).to_json()))
}
