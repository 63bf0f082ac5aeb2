//! `leave_queue`: removes the account's ticket, whichever node holds it.

use super::{store_failed, Outcome};
use crate::error::Error;
use crate::metrics::{self as m, TicketOutcome};
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::{Auth, Session};
use crate::store::Left;

pub async fn apply(node: &Node, session: &mut Session, player: &Auth) -> Outcome {
    match node.stores.queue.leave(&player.username, None).await.map_err(|e| store_failed(e, Error::ServerError))? {
        Left::Removed(_) => {
            m::ticket_ended(TicketOutcome::Left, 1);
            session.set_queued(false);
            Ok(Some(Reply::Dequeued))
        }
        // As the original: no ticket, no reply.
        Left::NoTicket => Ok(None),
        Left::MatchPending => Err(Error::MatchPending),
    }
}
