//! Operator sessions: login (argon2id, throttled as player logins are), the
//! `ocps_admin` cookie (`HttpOnly; SameSite=Strict; Path=/admin`, `Secure` over TLS),
//! the CSRF token every state-changing request carries, and logout. A session is a
//! random token; the store keeps its SHA-256 and ends it after `ADMIN_SESSION_SECS`
//! without a request, or at once when its operator is disabled.

use std::net::IpAddr;

use hyper::header::{HeaderMap, COOKIE};
use sha2::{Digest, Sha256};

use super::{Admin, ApiError, BUSY};
use crate::metrics as m;
use crate::ratelimit::Subject;
use crate::store::admin::{NewAuditEntry, OperatorSession, Outcome};
use crate::store::Resolved;

pub const COOKIE_NAME: &str = "ocps_admin";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const NOT_SIGNED_IN: &str = "Not signed in";
pub const BAD_CREDENTIALS: &str = "Invalid name or password";
pub const TOO_MANY: &str = "Too many attempts, try again later";
pub const BAD_CSRF: &str = "Missing or invalid CSRF token";

/// 32 random bytes, hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The session token in the request's `ocps_admin` cookie, hashed.
pub fn cookie_token(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| token_hash(value.trim()))
}

/// The `Set-Cookie` value that holds a session.
pub fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/admin{secure}")
}

/// The `Set-Cookie` value that drops it.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0{secure}")
}

/// Whether the request carries the session's CSRF token (compared as digests: the
/// time taken says nothing about the token).
pub fn csrf_ok(session: &OperatorSession, headers: &HeaderMap) -> bool {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    !sent.is_empty() && token_hash(sent) == token_hash(&session.csrf)
}

/// A signed-in operator: the session and its token (for the cookie).
pub struct SignedIn {
    pub session: OperatorSession,
    pub token: String,
}

impl Admin {
    /// The session of the request's cookie, or 401 `Not signed in`.
    pub async fn signed_in(&self, headers: &HeaderMap) -> Result<(OperatorSession, [u8; 32]), ApiError> {
        let hash = cookie_token(headers).ok_or_else(|| ApiError::new(401, NOT_SIGNED_IN))?;
        match self.operators.session(&hash, self.session_secs).await? {
            Some(session) => Ok((session, hash)),
            None => Err(ApiError::new(401, NOT_SIGNED_IN)),
        }
    }

    /// Checks an operator's password from `ip`, throttled per (name, client network)
    /// as player logins are, and opens a session. Every attempt is audited.
    pub async fn login(&self, name: &str, password: &str, ip: IpAddr) -> Result<SignedIn, ApiError> {
        let result = self.checked_login(name, password, ip).await;
        let (outcome, metric, detail) = match &result {
            Ok(_) => (Outcome::Ok, m::OperatorLogin::Ok, None),
            Err(e) if e.status == 429 => (Outcome::Failed, m::OperatorLogin::Throttled, Some("{\"throttled\":true}")),
            Err(_) => (Outcome::Failed, m::OperatorLogin::Failed, None),
        };
        m::operator_login(metric);
        let operator = match &result {
            Ok(signed_in) => signed_in.session.operator.clone(),
            Err(_) => name.chars().take(super::MAX_OPERATOR_NAME_CHARS).collect(),
        };
        self.record(NewAuditEntry {
            operator,
            action: "login".into(),
            target: None,
            reason: None,
            outcome,
            address: Some(ip.to_string()),
            detail: detail.map(str::to_owned),
        })
        .await;
        result
    }

    async fn checked_login(&self, name: &str, password: &str, ip: IpAddr) -> Result<SignedIn, ApiError> {
        let refused = || ApiError::new(401, BAD_CREDENTIALS);
        if name.is_empty() || name.chars().count() > super::MAX_OPERATOR_NAME_CHARS || password.len() > 1024 {
            return Err(refused());
        }
        // Operators are throttled apart from players: their own subjects.
        let subject = format!("operator:{}", name.to_lowercase());
        let turn = self.hasher.line_up(ip).await;
        let place = self.hasher.admit(&turn).map_err(|_| ApiError::new(503, BUSY))?;
        let Some(guess) = self.throttle.admit(Subject::Name(&subject), ip).await else {
            return Err(ApiError::new(429, TOO_MANY));
        };
        let operator = match self.operators.find_operator(name).await {
            Ok(found) => found,
            Err(e) => {
                // Not counted: the password was never checked.
                self.throttle.resolved(guess, Resolved::Right).await;
                return Err(e.into());
            }
        };
        let stored = operator.as_ref().map(|o| o.password_hash.clone());
        let verified = self.hasher.verify(place, password.to_owned(), stored).await;
        let operator = match operator {
            Some(o) if verified.ok && !o.disabled => o,
            _ => {
                self.throttle.resolved(guess, Resolved::Wrong).await;
                return Err(refused());
            }
        };
        self.throttle.resolved(guess, Resolved::Right).await;
        let token = random_hex();
        let csrf = random_hex();
        if !self.operators.create_session(&token_hash(&token), &operator.name, &csrf).await? {
            return Err(refused());
        }
        let session = OperatorSession { operator: operator.name, role: operator.role, csrf };
        Ok(SignedIn { session, token })
    }

    /// Ends the session `hash` (logout), audited.
    pub async fn logout(&self, session: &OperatorSession, hash: &[u8; 32], ip: IpAddr) -> Result<(), ApiError> {
        let result = self.operators.end_session(hash).await.map_err(ApiError::from);
        self.record(NewAuditEntry {
            operator: session.operator.clone(),
            action: "logout".into(),
            target: None,
            reason: None,
            outcome: if result.is_ok() { Outcome::Ok } else { Outcome::Failed },
            address: Some(ip.to_string()),
            detail: None,
        })
        .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::Role;

    #[test]
    fn the_cookie_is_found_among_others_and_hashed() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "theme=dark; ocps_admin=abc123 ; other=1".parse().unwrap());
        assert_eq!(cookie_token(&headers), Some(token_hash("abc123")));
        headers.insert(COOKIE, "ocps_admin_x=abc123".parse().unwrap());
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn cookies_are_strict_and_secure_over_tls() {
        assert_eq!(set_cookie("t", false), "ocps_admin=t; HttpOnly; SameSite=Strict; Path=/admin");
        assert!(set_cookie("t", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn the_csrf_token_must_match() {
        let session = OperatorSession { operator: "a".into(), role: Role::Admin, csrf: "k".repeat(64) };
        let mut headers = HeaderMap::new();
        assert!(!csrf_ok(&session, &headers));
        headers.insert(CSRF_HEADER, "wrong".parse().unwrap());
        assert!(!csrf_ok(&session, &headers));
        headers.insert(CSRF_HEADER, "k".repeat(64).parse().unwrap());
        assert!(csrf_ok(&session, &headers));
        let empty = OperatorSession { csrf: String::new(), ..session };
        headers.insert(CSRF_HEADER, "".parse().unwrap());
        assert!(!csrf_ok(&empty, &headers));
    }
}
