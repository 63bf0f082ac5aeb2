//! `global_chat`: every authenticated connection of the cluster, sender included,
//! receives the message through the chat bus, within the sender account's chat rate.

use super::{chat_text, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::session::{Auth, Session};
use crate::store::BusEvent;

pub async fn apply(node: &Node, _session: &mut Session, player: &Auth, request: Option<String>) -> Outcome {
    let message = request.filter(|m| !m.is_empty()).ok_or(Error::BadMessage)?;
    let message = chat_text(node, player, message)?;
    let (from, account) = (player.display_name.to_string(), player.username.clone());
    if !node.cluster.publish_chat(player.user_id, BusEvent::Global { from, account, message, at: None }).await {
        return Err(Error::ChatRateLimited);
    }
    Ok(None)
}
