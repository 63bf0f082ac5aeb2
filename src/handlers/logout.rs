//! `logout`: the connection forgets who it is; the token stays valid.

use super::Outcome;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::Session;

pub async fn apply(node: &Node, session: &mut Session) -> Outcome {
    session.logout(node);
    Ok(Some(Reply::LoggedOut.to_json()))
}
