//! `global_chat`: every authenticated connection of the cluster, sender included,
//! receives the message through the chat bus.

use serde_json::value::RawValue;

use super::{chat_allowed, chat_text, Outcome};
use crate::cluster;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::parse_string;
use crate::session::Session;
use crate::store::BusEvent;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let message = parse_string(payload).filter(|m| !m.is_empty()).ok_or(Error::BadMessage)?;
    let message = chat_text(node, message)?;
    let player = chat_allowed(node, session)?;
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    cluster::publish(node, BusEvent::Global { from, account, message }).await;
    Ok(None)
}
