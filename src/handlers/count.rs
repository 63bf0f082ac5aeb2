//! `count`: authenticated connections across the cluster.

use serde_json::value::RawValue;

use super::Outcome;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::Session;

pub async fn apply(node: &Node, _session: &mut Session, _payload: Option<&RawValue>) -> Outcome {
    Ok(Some(Reply::PlayerCount(node.cluster.player_count()).to_json()))
}
