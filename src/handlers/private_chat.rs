//! `private_chat`: every connection in the cluster whose display name is `target`
//! receives the message; the sender gets no reply either way.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Outcome;
use crate::cluster;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::parse_object;
use crate::session::Session;
use crate::store::ChatEvent;

#[derive(Deserialize)]
struct PrivateMessage {
    target: String,
    message: String,
}

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let PrivateMessage { target, message } = parse_object(payload).ok_or(Error::BadMessage)?;
    let from = session.auth.as_ref().expect("dispatch checked authentication").display_name.to_string();
    cluster::publish(node, ChatEvent::Private { from, target, message }).await;
    Ok(None)
}
