//! `login`: username and password in, a new token out.
//!
//! The order is what keeps one client from shutting others out: the login first
//! lines up behind its own address's and network's logins in progress (a few at a
//! time), then takes a place in the hash pool if one is free at once (else `Server
//! busy`, before any store work), then every throttle is decided: a refused guess
//! gives its place back before any hash. Known and unknown names take the same steps
//! and get the same replies.

use super::{kicked, start_session, store_failed, store_skipped, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{Credentials, Reply, ResumeRequest};
use crate::ratelimit::Subject;
use crate::registry::Via;
use crate::session::Session;
use crate::store::{unix_now, Resolved};

pub async fn apply(node: &Node, session: &mut Session, request: Option<Credentials>) -> Outcome {
    let Some(Credentials { username, password, resume }) = request else {
        return Err(Error::InvalidLoginFormat);
    };
    if username.chars().count() < crate::names::MIN_USERNAME_CHARS
        || password.chars().count() < crate::accounts::MIN_PASSWORD_CHARS
    {
        return Err(Error::InvalidLoginFormat);
    }

    let turn = node.hasher.line_up(session.client_ip).await;
    let place = node.hasher.admit(&turn).map_err(|_| Error::ServerBusy)?;
    // A name no account can have (PostgreSQL text cannot hold NUL) is an unknown user.
    let (folded, user) = if !username.contains('\0') {
        node.stores.users.find_login(&username).await.map_err(|e| store_failed(e, Error::AuthServerError))?
    } else {
        (username.to_lowercase(), None)
    };
    // Guesses are counted by the account, however its name is typed, or by the name
    // as the lookup folds it, before the hash is checked, so a burst of them cannot
    // slip past the limit.
    let subject = user.as_ref().map_or(Subject::Name(&folded), |u| Subject::Account(u.id));
    let guess = node.logins.admit(subject, session.client_ip).await.ok_or(Error::TooManyAttempts)?;
    // An unknown user is verified against a dummy hash: same time, same reply.
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = node.hasher.verify(place, password.clone(), stored).await;
    let user = match user {
        Some(user) if verified.ok => user,
        _ => {
            node.logins.resolved(guess, Resolved::Wrong).await;
            return Err(Error::InvalidCredentials);
        }
    };
    node.logins.resolved(guess, Resolved::Right).await;
    // Only a correct password learns of a ban.
    if let Some(ban) = user.standing.ban(unix_now()) {
        return Err(Error::banned(&ban.reason, ban.until));
    }

    if verified.needs_rehash {
        // Best effort: a failure here leaves the old, still valid hash in place.
        if let Ok(place) = node.hasher.admit(&turn) {
            let rehashed = node.hasher.hash(place, password).await;
            if let Err(e) = node.stores.users.set_password_hash(user.id, &rehashed).await {
                store_skipped(e, "the old password hash stays");
            }
        }
    }
    drop(turn);
    if user.standing.kick.is_some() && kicked(node, session, user.id).await {
        return Ok(None);
    }

    let token = start_session(
        node,
        session,
        (user.id, &user.username, &user.standing),
        Via::Login,
        ResumeRequest::opted_in(&resume),
    )
    .await
    .map_err(|e| store_failed(e, Error::AuthServerError))?;
    Ok(Some(Reply::AuthSuccess { username: user.username.into(), token: token.as_str().to_owned().into() }))
}
