//! Creating an account: what `register` (over WebSocket) and `POST /register` share.
//! The minimum lengths of a username and a password are here, each one constant that
//! `login` checks too.

use std::net::IpAddr;

use crate::error::{store_failed, store_skipped, Error};
use crate::names::{canonical_username, MAX_USERNAME_CHARS, MIN_USERNAME_CHARS};
use crate::node::Node;
use crate::protocol::Registration;
use crate::ratelimit;
use crate::store::Conflict;

/// Shortest password `register` accepts and `login` checks (a shorter one cannot be
/// any account's: `Invalid login format`).
pub const MIN_PASSWORD_CHARS: usize = 6;

const MAX_EMAIL_CHARS: usize = 254;

/// Text PostgreSQL can store in an indexed column: no NUL, not too long.
fn storable(text: &str, max_chars: usize) -> bool {
    !text.contains('\0') && text.chars().count() <= max_chars
}

/// Validates and stores a new account for a player at `client_ip`; returns its id
/// and name.
pub async fn create_account(
    node: &Node,
    registration: Registration,
    client_ip: IpAddr,
) -> Result<(i64, String), Error> {
    let Registration { username, password, email, .. } = registration;
    if username.chars().count() < MIN_USERNAME_CHARS {
        return Err(Error::UsernameTooShort);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::PasswordTooShort);
    }
    // A blank email is no email: it must not collide with other blank ones.
    let email = email.filter(|e| !e.trim().is_empty());
    // What PostgreSQL cannot store (NUL) or index (more than ~2.7 KB) is bad input,
    // not a server error.
    if !storable(&username, MAX_USERNAME_CHARS) || !email.as_deref().is_none_or(|e| storable(e, MAX_EMAIL_CHARS)) {
        return Err(Error::InvalidRegistrationFormat);
    }
    let username = canonical_username(&username).ok_or(Error::InvalidRegistrationFormat)?;
    if !ratelimit::registration_allowed(node.stores.limits.as_ref(), client_ip, &node.config).await {
        return Err(Error::RegistrationRateLimited);
    }
    let failed = |e| store_failed(e, Error::RegistrationFailed);
    // Registrations line up with the address's logins, and have their own share of
    // the hash pool, so they never starve logins. The contract has no busy text for
    // registration: a server error.
    let turn = node.hasher.line_up(client_ip).await;
    let place = node.hasher.admit_registration(&turn).map_err(|_| Error::RegistrationFailed)?;

    // Refuse a taken name before spending a hash on it; the unique index still
    // decides races between nodes.
    if node.stores.users.find_user(&username).await.map_err(failed)?.is_some() {
        return Err(Error::UsernameTaken);
    }
    if let Some(email) = email.as_deref().filter(|_| node.config.email_validation) {
        if node.stores.users.email_taken(email).await.map_err(failed)? {
            return Err(Error::EmailTaken);
        }
    }
    let password_hash = node.hasher.hash(place, password).await;
    match node.stores.users.create_user(&username, &password_hash, email.as_deref()).await.map_err(failed)? {
        Ok(id) => {
            // Private messages to this name now go to the account, never to a
            // look-alike display name.
            if let Err(e) = node.stores.directory.remember_account(&username, Some(&username)).await {
                store_skipped(e, "the directory's entry for the name left as it was");
            }
            Ok((id, username))
        }
        Err(Conflict::Username) => Err(Error::UsernameTaken),
        // Emails are unique in the schema; saying so beats a misleading server error.
        Err(Conflict::Email) => Err(Error::EmailTaken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replies name the limits the checks use.
    #[test]
    fn the_too_short_replies_name_the_minimums() {
        assert!(Error::UsernameTooShort.to_string().ends_with(&format!("at least {MIN_USERNAME_CHARS} characters")));
        assert!(Error::PasswordTooShort.to_string().ends_with(&format!("at least {MIN_PASSWORD_CHARS} characters")));
    }
}
