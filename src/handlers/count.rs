//! `count`: authenticated connections across the cluster.

use super::Outcome;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::{Auth, Session};

pub async fn apply(node: &Node, _session: &mut Session, _player: &Auth) -> Outcome {
    Ok(Some(Reply::PlayerCount(node.cluster.player_count())))
}
