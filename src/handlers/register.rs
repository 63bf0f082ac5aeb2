//! `register` over WebSocket: a new account (`accounts::create_account`, shared with
//! `POST /register`), and a session for it.

use super::{start_session, store_failed, Outcome};
use crate::accounts::create_account;
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{Registration, Reply, ResumeRequest};
use crate::registry::Via;
use crate::session::Session;
use crate::store::Standing;

pub async fn apply(node: &Node, session: &mut Session, request: Option<Registration>) -> Outcome {
    let Some(registration) = request else {
        return Err(Error::InvalidRegistrationFormat);
    };
    let resume = ResumeRequest::opted_in(&registration.resume);
    let (user_id, username) = create_account(node, registration, session.client_ip).await?;
    let token = start_session(node, session, (user_id, &username, &Standing::default()), Via::Register, resume)
        .await
        .map_err(|e| store_failed(e, Error::RegistrationFailed))?;
    Ok(Some(Reply::RegisterSuccess {
        success: true,
        message: "Registration successful".into(),
        auto_login: true,
        username: username.into(),
        token: token.as_str().to_owned().into(),
    }))
}
