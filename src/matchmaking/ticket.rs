//! Join tickets (docs/MATCH_TICKETS.md): `v1.<kid>.<claims>.<signature>`, the claims
//! base64url JSON `{"mid","sub","srv","exp"}`, the signature base64url HMAC-SHA256 of
//! `v1.<kid>.<claims>` with the key `kid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::store::unix_now;

/// The join ticket of `username` for a match, signed with `(kid, key)`.
pub fn sign(
    (kid, key): &(String, Vec<u8>),
    match_id: &str,
    username: &str,
    server_id: &str,
    expires_at: i64,
) -> String {
    let claims = serde_json::json!({"mid": match_id, "sub": username, "srv": server_id, "exp": expires_at});
    let signed = format!("v1.{kid}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac(key, &signed).finalize().into_bytes()))
}

fn mac(key: &[u8], signed: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    mac
}

/// Why a join ticket is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadTicket {
    Malformed,
    UnknownKey(String),
    BadSignature,
    Expired,
}

impl std::fmt::Display for BadTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTicket::Malformed => f.write_str("not a join ticket (v1.<kid>.<claims>.<signature>)"),
            BadTicket::UnknownKey(kid) => write!(f, "signed with key '{kid}', which is not in MATCH_TICKET_KEYS"),
            BadTicket::BadSignature => f.write_str("the signature does not match: forged or altered"),
            BadTicket::Expired => f.write_str("expired"),
        }
    }
}

/// Checks a join ticket against `keys` at `now` (Unix seconds); returns its claims.
pub fn verify(keys: &[(String, Vec<u8>)], ticket: &str, now: i64) -> Result<serde_json::Value, BadTicket> {
    let (signed, signature) = ticket.rsplit_once('.').ok_or(BadTicket::Malformed)?;
    let mut parts = signed.splitn(3, '.');
    let (Some("v1"), Some(kid), Some(claims)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BadTicket::Malformed);
    };
    let key = keys.iter().find(|(k, _)| k == kid).ok_or_else(|| BadTicket::UnknownKey(kid.to_owned()))?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| BadTicket::Malformed)?;
    // Constant-time comparison.
    mac(&key.1, signed).verify_slice(&signature).map_err(|_| BadTicket::BadSignature)?;
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or(BadTicket::Malformed)?;
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Err(BadTicket::Expired);
    }
    Ok(claims)
}

#[derive(Debug, clap::Args)]
pub struct TicketArgs {
    /// `verify`
    #[arg(value_parser = ["verify"])]
    pub action: String,
    /// The ticket, as `match_found` carried it.
    pub ticket: String,
}

/// `openchampps ticket verify TICKET`: prints the claims of a valid ticket, or why not.
pub fn ticket_command(config: &Config, args: TicketArgs) -> Result<(), String> {
    let claims =
        verify(&config.match_ticket_keys.0, &args.ticket, unix_now()).map_err(|e| format!("ticket refused: {e}"))?;
    println!("valid: {claims}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<(String, Vec<u8>)> {
        vec![("k1".into(), b"0123456789abcdef0123456789abcdef".to_vec())]
    }

    /// The test vector of docs/MATCH_TICKETS.md, computed with Python's `hmac`.
    const VECTOR: &str = "v1.k1.eyJleHAiOjIwMDAwMDAwMDAsIm1pZCI6IjExMTExMTExLTIyMjItMzMzMy00NDQ0LTU1NTU1NTU1NTU1NSIsInNydiI6IjIwMy4wLjExMy43OjcwMDEiLCJzdWIiOiJhbGljZSJ9.T-rVoER0dqRmt2YGLqWBvBkA_kCQ7zTVb9RvzH2nrO0";

    #[test]
    fn signs_what_it_verifies_and_refuses_the_rest() {
        let ticket = sign(&keys()[0], "m-1", "alice", "203.0.113.7:7001", 2_000_000_000);
        let claims = verify(&keys(), &ticket, 1_900_000_000).unwrap();
        assert_eq!((claims["mid"].as_str(), claims["sub"].as_str()), (Some("m-1"), Some("alice")));
        assert_eq!(verify(&keys(), &ticket, 2_000_000_000), Err(BadTicket::Expired));
        let other = vec![("k1".to_owned(), b"another key, same id, 32 bytes!!".to_vec())];
        assert_eq!(verify(&other, &ticket, 0), Err(BadTicket::BadSignature));
        let tampered = ticket.replacen("v1.k1.", "v1.k1.e", 1);
        assert!(verify(&keys(), &tampered, 0).is_err());
        assert_eq!(verify(&[], &ticket, 0), Err(BadTicket::UnknownKey("k1".into())));
        assert_eq!(verify(&keys(), "nonsense", 0), Err(BadTicket::Malformed));
    }

    #[test]
    fn the_documented_vector_verifies() {
        let ticket =
            sign(&keys()[0], "11111111-2222-3333-4444-555555555555", "alice", "203.0.113.7:7001", 2_000_000_000);
        assert_eq!(ticket, VECTOR);
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/MATCH_TICKETS.md")).unwrap();
        assert!(doc.contains(VECTOR), "docs/MATCH_TICKETS.md lacks the test vector");
    }
}
