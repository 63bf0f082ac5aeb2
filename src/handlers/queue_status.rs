//! `queue_status`: the account's queue, place and wait so far.

use serde_json::value::RawValue;

use super::Outcome;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{QueueStatus, Reply};
use crate::session::Session;

pub async fn apply(node: &Node, session: &mut Session, _payload: Option<&RawValue>) -> Outcome {
    let account = session.player().username.clone();
    let status = match node.stores.queue.position(&account).await.map_err(|_| Error::ServerError)? {
        Some((ticket, position)) => QueueStatus {
            queued: true,
            queue: Some(ticket.queue),
            position: Some(position),
            waiting_secs: Some(((crate::store::unix_now() * 1000) as u64).saturating_sub(ticket.joined_ms) / 1000),
        },
        None => QueueStatus { queued: false, queue: None, position: None, waiting_secs: None },
    };
    Ok(Some(Reply::QueueStatus(status).to_json()))
}
