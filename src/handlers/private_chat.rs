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
use crate::store::{ChatEvent, Recipient};

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let PrivateMessage { target, message } = parse_object(payload).ok_or(Error::BadMessage)?;
    let message = chat_text(node, message)?;
    let player = chat_allowed(node, session)?;
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    let to = match node.stores.users.find_user(&target).await {
        Ok(Some(user)) => Recipient::Account(user.username),
        Ok(None) => Recipient::DisplayName(target),
        // Without PostgreSQL nobody can tell whether `target` is an account: deliver
        // to an account of that name only, never to a look-alike display name.
        Err(_) => Recipient::Account(target),
    };
    cluster::publish(node, ChatEvent::Private { from, account, to, message }).await;
    Ok(None)
}
