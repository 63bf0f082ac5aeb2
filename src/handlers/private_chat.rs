//! `private_chat`: a target that is an account's name reaches that account's
//! sessions only (a display name never captures another account's messages); any
//! other target reaches the sessions with that display name. The sender gets no
//! reply either way, unless past its account's chat rate.

use super::{chat_text, longer_than, Outcome};
use crate::error::Error;
use crate::names::MAX_TARGET_CHARS;
use crate::node::Node;
use crate::protocol::PrivateMessage;
use crate::session::{Auth, Session};

pub async fn apply(node: &Node, _session: &mut Session, player: &Auth, request: Option<PrivateMessage>) -> Outcome {
    let PrivateMessage { target, message } = request.ok_or(Error::BadMessage)?;
    // A target longer than any name names nobody: refused before it reaches a store
    // (as key names, cached answers, bus events).
    if longer_than(&target, MAX_TARGET_CHARS) {
        return Err(Error::BadMessage);
    }
    let message = chat_text(node, player, message)?;
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    if !node.cluster.send_private(player.user_id, from, account, target, message).await {
        return Err(Error::ChatRateLimited);
    }
    Ok(None)
}
