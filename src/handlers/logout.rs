//! `logout`: the connection forgets who it is; the token stays valid.

use serde_json::value::RawValue;

use super::Outcome;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::Session;

pub async fn apply(node: &Node, session: &mut Session, _payload: Option<&RawValue>) -> Outcome {
    session.end(node);
    Ok(Some(Reply::LoggedOut.to_json()))
}
