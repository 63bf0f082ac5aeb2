//! `private_chat`: every connection in the cluster whose display name is `target`
//! receives the message; the sender gets no reply either way.

use serde_json::value::RawValue;

use super::Outcome;
use crate::cluster;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{parse_object, PrivateMessage};
use crate::session::Session;
use crate::store::ChatEvent;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let PrivateMessage { target, message } = parse_object(payload).ok_or(Error::BadMessage)?;
    let player = session.player();
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    cluster::publish(node, ChatEvent::Private { from, account, target, message }).await;
    Ok(None)
}
