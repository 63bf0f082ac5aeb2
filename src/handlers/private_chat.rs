//! `private_chat`: a target that is an account's name reaches that account's
//! sessions only (a display name never captures another account's messages); any
//! other target reaches the sessions with that display name. The sender gets no
//! reply either way.

use serde_json::value::RawValue;

use super::{chat_allowed, chat_text, Outcome};
use crate::cluster;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{parse_object, PrivateMessage};
use crate::session::Session;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let PrivateMessage { target, message } = parse_object(payload).ok_or(Error::BadMessage)?;
    let message = chat_text(node, message)?;
    let player = chat_allowed(node, session)?;
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    cluster::send_private(node, from, account, target, message).await;
    Ok(None)
}
