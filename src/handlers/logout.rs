//! `logout`: the connection forgets who it is; the token stays valid.

use super::Outcome;
use crate::node::Node;
use crate::protocol::Reply;
use crate::session::{Auth, Session};

pub async fn apply(node: &Node, session: &mut Session, _player: &Auth) -> Outcome {
    session.end(node);
    Ok(Some(Reply::LoggedOut))
}
