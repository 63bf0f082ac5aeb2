//! `leave_queue`: removes the account's ticket, whichever node holds it.

use serde_json::value::RawValue;

use super::Outcome;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::Session;
use crate::store::Left;

pub async fn apply(node: &Node, session: &mut Session, _payload: Option<&RawValue>) -> Outcome {
    let account = session.player().username.clone();
    match node.stores.queue.leave(&account, None).await.map_err(|_| Error::ServerError)? {
        Left::Removed(_) => {
            crate::metrics::ticket_ended("left", 1);
            session.queued = false;
            Ok(Some(Reply::Dequeued.to_json()))
        }
        // As the original: no ticket, no reply.
        Left::NoTicket => Ok(None),
        Left::MatchPending => Err(Error::MatchPending),
    }
}
