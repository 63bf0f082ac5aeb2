//! `join_queue`: one ticket per account, cluster-wide. Joining again keeps the
//! account's place; joining from another connection moves the ticket there and tells
//! the earlier connection `dequeued` (a targeted entry of the account's personal
//! stream: `Cluster::send_only`).

use super::{store_failed, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{QueueChoice, Reply};
use crate::session::{Auth, Session};
use crate::store::{Joined, Ticket};

pub async fn apply(node: &Node, session: &mut Session, player: &Auth, request: Option<QueueChoice>) -> Outcome {
    let choice = request.ok_or(Error::BadMessage)?;
    let queue = node.matchmaker.queue(choice.queue.as_deref()).ok_or(Error::UnknownQueue)?;
    let ticket = Ticket {
        account: player.username.clone(),
        username: player.username.clone(),
        queue: queue.to_owned(),
        node: node.node_id.clone(),
        conn: session.id,
        seq: 0,
        joined_ms: crate::store::unix_now_ms(),
        tries: 0,
        left: false,
        // A player who opted into resume keeps its place through a disconnect.
        grace_secs: if player.resume { node.matchmaker.grace_secs() } else { 0 },
        away_until_ms: None,
    };
    // Never a queue in one node's memory: that would split the players.
    let cap = node.config.max_matches_per_hour;
    match node.stores.queue.join(&ticket, cap).await.map_err(|e| store_failed(e, Error::ServerError))? {
        Joined::MatchPending => return Err(Error::MatchPending),
        Joined::Limited => return Err(Error::MatchRateLimited),
        Joined::Kept { node: holder, conn } if (holder.as_str(), conn) != (node.node_id.as_str(), session.id) => {
            // Kept in the personal stream for that connection alone: the account's other
            // opted-in connections (this one too) only move past it.
            node.cluster.send_only(&holder, conn, &player.username, Reply::Dequeued.to_json()).await;
        }
        Joined::Kept { .. } | Joined::New => {}
    }
    session.set_queued(true);
    Ok(Some(Reply::Queued))
}
