//! `count`: authenticated connections across the cluster.

use super::Outcome;
use crate::cluster;
use crate::node::Node;
use crate::protocol::Reply;

pub async fn apply(node: &Node) -> Outcome {
    Ok(Some(Reply::PlayerCount(cluster::player_count(node).await).to_json()))
}
