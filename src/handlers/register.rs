//! `register` over WebSocket (and the account creation shared with `POST /register`).

use std::net::IpAddr;

use serde_json::value::RawValue;
use unicode_normalization::UnicodeNormalization;

use super::{start_session, store_failed, Outcome};
use crate::error::Error;
use crate::node::Node;
use crate::protocol::{parse_object, Registration, Reply};
use crate::ratelimit;
use crate::session::Session;
use crate::store::Conflict;

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let Some(registration) = parse_object::<Registration>(payload) else {
        return Err(Error::InvalidRegistrationFormat);
    };
    let (user_id, username) = create_account(node, registration, session.client_ip).await?;
    let token = start_session(node, session, user_id, &username)
        .await
        .map_err(|e| store_failed(e, Error::RegistrationFailed))?;
    Ok(Some(
        Reply::RegisterSuccess {
            success: true,
            message: "Registration successful".into(),
            auto_login: true,
            username: username.into(),
            token: token.as_str().into(),
        }
        .to_json(),
    ))
}

const MAX_USERNAME_CHARS: usize = 64;
const MAX_EMAIL_CHARS: usize = 254;

/// Text PostgreSQL can store in an indexed column: no NUL, not too long.
fn storable(text: &str, max_chars: usize) -> bool {
    !text.contains('\0') && text.chars().count() <= max_chars
}

/// A username that is a stable identifier: in NFC (so one name has one spelling),
/// without control or invisible format characters (bidi overrides, zero-width
/// joiners, …), without leading or trailing whitespace. `None` when it cannot be one.
fn canonical_username(raw: &str) -> Option<String> {
    let name: String = raw.nfc().collect();
    let invisible = |c: char| c.is_control() || is_format_char(c);
    if name.trim() != name || name.chars().any(invisible) {
        return None;
    }
    Some(name)
}

/// Why a stored username is not a stable identifier (registration would have refused
/// it, or stored it in another spelling), if it is not.
pub fn unstable_username(name: &str) -> Option<&'static str> {
    match canonical_username(name) {
        None => Some("control or format characters, or leading/trailing whitespace"),
        Some(canonical) if canonical != name => Some("not in Unicode NFC"),
        Some(_) => None,
    }
}

/// Unicode general category Cf (format characters), as of Unicode 15.
fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// Validates and stores a new account for a player at `client_ip`; returns its id
/// and name.
pub async fn create_account(
    node: &Node,
    registration: Registration,
    client_ip: IpAddr,
) -> Result<(i64, String), Error> {
    let Registration { username, password, email } = registration;
    if username.chars().count() < 3 {
        return Err(Error::UsernameTooShort);
    }
    if password.chars().count() < 6 {
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
    // Registrations have their own share of the hash pool, so they never starve
    // logins. The contract has no busy text for registration: a server error.
    let place = node.hasher.admit_registration().map_err(|_| Error::RegistrationFailed)?;

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
            let _ = node.stores.directory.remember_account(&username, Some(&username)).await;
            Ok((id, username))
        }
        Err(Conflict::Username) => Err(Error::UsernameTaken),
        // Emails are unique in the schema; saying so beats a misleading server error.
        Err(Conflict::Email) => Err(Error::EmailTaken),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_username;

    #[test]
    fn usernames_must_be_stable_identifiers() {
        assert_eq!(canonical_username("Jane Doe").as_deref(), Some("Jane Doe"));
        // e + combining acute becomes the precomposed é.
        assert_eq!(canonical_username("Re\u{301}my").as_deref(), Some("R\u{e9}my"));
        for bad in [" jane", "jane ", "   ", "ja\u{202e}ne", "ja\u{200b}ne", "ja\u{feff}ne", "ja\nne", "ja\u{7}ne"] {
            assert_eq!(canonical_username(bad), None, "{bad:?}");
        }
    }
}
