//! `private_chat`: a target that is an account's name reaches that account's
//! sessions only (a display name never captures another account's messages); any
//! other target reaches the sessions with that display name. The sender gets no
//! reply either way, unless past its account's chat rate.

use serde_json::value::RawValue;

use super::{chat_text, longer_than, Outcome};
use crate::error::Error;
use crate::names::MAX_TARGET_CHARS;
use crate::node::Node;
use crate::protocol::{parse_object, PrivateMessage};
use crate::session::Session;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let PrivateMessage { target, message } = parse_object(payload).ok_or(Error::BadMessage)?;
    // A target longer than any name names nobody: refused before it reaches a store
    // (as key names, cached answers, bus events).
    if longer_than(&target, MAX_TARGET_CHARS) {
        return Err(Error::BadMessage);
    }
    let message = chat_text(node, message)?;
    let player = session.player();
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    if !node.cluster.send_private(player.user_id, from, account, target, message).await {
        return Err(Error::ChatRateLimited);
    }
    Ok(None)
}
