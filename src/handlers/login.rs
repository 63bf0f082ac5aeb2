//! `login`: username and password in, a new token out.

use serde_json::value::RawValue;

use super::{start_session, store_failed, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{parse_object, Credentials, Reply};
use crate::session::Session;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let Some(Credentials { username, password }) = parse_object(payload) else {
        return Err(Error::InvalidLoginFormat);
    };
    if username.chars().count() < 3 || password.chars().count() < 6 {
        return Err(Error::InvalidLoginFormat);
    }

    // A place in the hash pool first: past the queue, `Server busy` at once, before
    // any Redis or PostgreSQL work.
    let place = node.hasher.admit().map_err(|_| Error::ServerBusy)?;

    // A name no account can have (PostgreSQL text cannot hold NUL) is an unknown user.
    let user = if !username.contains('\0') {
        node.stores.users.find_user(&username).await.map_err(|e| store_failed(e, Error::AuthServerError))?
    } else {
        None
    };
    // Guesses at an account are counted by its id, before the hash is checked, so a
    // burst of them cannot slip past the limit.
    let guess = match &user {
        Some(user) => Some(node.logins.admit(user.id, session.client_ip).await.ok_or(Error::TooManyAttempts)?),
        None => None,
    };
    // An unknown user is verified against a dummy hash: same time, same reply.
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = node.hasher.verify(place, password.clone(), stored).await;
    let (user, guess) = match (user, guess) {
        (Some(user), Some(guess)) if verified.ok => (user, guess),
        (_, guess) => {
            if let Some(guess) = guess {
                node.logins.failed(guess).await;
            }
            return Err(Error::InvalidCredentials);
        }
    };
    node.logins.succeeded(guess).await;

    if verified.needs_rehash {
        // Best effort: a failure here leaves the old, still valid hash in place.
        if let Ok(place) = node.hasher.admit() {
            let rehashed = node.hasher.hash(place, password).await;
            if let Err(e) = node.stores.users.set_password_hash(user.id, &rehashed).await {
                tracing::warn!(error = %e, "could not store rehashed password");
            }
        }
    }

    let token = start_session(node, session, user.id, &user.username)
        .await
        .map_err(|e| store_failed(e, Error::AuthServerError))?;
    Ok(Some(Reply::AuthSuccess { username: user.username.into(), token: token.as_str().into() }.to_json()))
}
