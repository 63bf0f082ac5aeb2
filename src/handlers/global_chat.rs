//! `global_chat`: every authenticated connection of the cluster, sender included,
//! receives the message through the chat bus, within the sender account's chat rate.

use serde_json::value::RawValue;

use super::{chat_text, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::parse_string;
use crate::session::Session;
use crate::store::BusEvent;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let message = parse_string(payload).filter(|m| !m.is_empty()).ok_or(Error::BadMessage)?;
    let message = chat_text(node, message)?;
    let player = session.player();
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    if !node.cluster.publish_chat(player.user_id, BusEvent::Global { from, account, message }).await {
        return Err(Error::ChatRateLimited);
    }
    Ok(None)
}
