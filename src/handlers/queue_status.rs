//! `queue_status`: the account's queue, place and wait so far.

use super::{store_failed, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{QueueStatus, Reply};
use crate::session::{Auth, Session};

pub async fn apply(node: &Node, _session: &mut Session, player: &Auth) -> Outcome {
    let status =
        match node.stores.queue.position(&player.username).await.map_err(|e| store_failed(e, Error::ServerError))? {
            Some((ticket, position)) => QueueStatus {
                queued: true,
                queue: Some(ticket.queue),
                position: Some(position),
                waiting_secs: Some(crate::store::unix_now_ms().saturating_sub(ticket.joined_ms) / 1000),
            },
            None => QueueStatus { queued: false, queue: None, position: None, waiting_secs: None },
        };
    Ok(Some(Reply::QueueStatus(status)))
}
