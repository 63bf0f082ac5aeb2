//! Join tickets (docs/MATCH_TICKETS.md): `v1.<kid>.<claims>.<signature>`, the claims
//! base64url JSON `{"mid","sub","srv","exp"}`, the signature base64url HMAC-SHA256 of
//! `v1.<kid>.<claims>` with the key `kid`. Also the game servers' credentials:
//! base64url HMAC-SHA256 of `match:<match id>` (confirms and ends that match) or
//! `server:<server id>` (tells a static server its match) under GAME_SERVER_TOKEN.

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

/// A game server's credential for `scope` (`match` or `server`) `id`, keyed with
/// GAME_SERVER_TOKEN: one match's (or server's) credential says nothing of another's.
pub fn credential(key: &str, scope: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(key.as_bytes(), &format!("{scope}:{id}")).finalize().into_bytes())
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
    /// The ticket is for another game server (`srv`, expected).
    OtherServer(String, String),
    /// The ticket is for another match than the server's current one (`mid`, expected).
    OtherMatch(String, String),
}

impl std::fmt::Display for BadTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTicket::Malformed => f.write_str("not a join ticket (v1.<kid>.<claims>.<signature>)"),
            BadTicket::UnknownKey(kid) => write!(f, "signed with key '{kid}', which is not in MATCH_TICKET_KEYS"),
            BadTicket::BadSignature => f.write_str("the signature does not match: forged or altered"),
            BadTicket::Expired => f.write_str("expired"),
            BadTicket::OtherServer(srv, me) => write!(f, "for game server '{srv}', not '{me}'"),
            BadTicket::OtherMatch(mid, current) => {
                write!(f, "for match '{mid}', not the server's current match '{current}' (ended or replaced)")
            }
        }
    }
}

/// Where a ticket is presented: the game server's id and its current match, each
/// checked when given.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expected<'a> {
    pub server: Option<&'a str>,
    pub match_id: Option<&'a str>,
}

/// Checks a join ticket against `keys` at `now` (Unix seconds) and what is expected of
/// it; returns its claims.
pub fn verify(
    keys: &[(String, Vec<u8>)],
    ticket: &str,
    now: i64,
    expected: Expected,
) -> Result<serde_json::Value, BadTicket> {
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
    let claim = |name: &str| claims[name].as_str().unwrap_or_default().to_owned();
    if let Some(me) = expected.server.filter(|me| claim("srv") != *me) {
        return Err(BadTicket::OtherServer(claim("srv"), me.to_owned()));
    }
    if let Some(current) = expected.match_id.filter(|current| claim("mid") != *current) {
        return Err(BadTicket::OtherMatch(claim("mid"), current.to_owned()));
    }
    Ok(claims)
}

crate::config::choice! {
    /// What `openchampps ticket` does.
    pub enum TicketAction {
        Verify = "verify",
        Credential = "credential",
    }
}

#[derive(Debug, clap::Args)]
pub struct TicketArgs {
    /// `verify` a join ticket, or print a game server's `credential` for
    /// `match:<match id>` or `server:<server id>` (from GAME_SERVER_TOKEN).
    pub action: TicketAction,
    /// The ticket, as `match_found` carried it; or `match:<id>` / `server:<id>`.
    pub ticket: String,
    /// verify (required): the game server it is presented to (its `containerID`).
    #[arg(long)]
    pub server: Option<String>,
    /// verify (required): that server's current match (what the allocation told it).
    #[arg(long = "match")]
    pub match_id: Option<String>,
}

/// `openchampps ticket verify TICKET --server ID --match ID`: prints the claims of
/// a valid ticket, or why not; `openchampps ticket credential SCOPE:ID`.
pub fn ticket_command(config: &Config, args: TicketArgs) -> Result<(), String> {
    if args.action == TicketAction::Credential {
        let key = &config.game_server_token;
        let (scope, id) = args
            .ticket
            .split_once(':')
            .filter(|(scope, _)| matches!(*scope, "match" | "server"))
            .ok_or("credential: name match:<match id> or server:<server id>")?;
        if key.is_empty() {
            return Err("credential: GAME_SERVER_TOKEN is not set".into());
        }
        println!("{}", credential(key, scope, id));
        return Ok(());
    }
    // A game server must check both: a ticket of another server, or of a match this
    // server hosted before, must seat nobody.
    let (Some(server), Some(match_id)) = (args.server.as_deref(), args.match_id.as_deref()) else {
        return Err("verify: give --server (the game server's id) and --match (its current match), \
                    as a game server must check both"
            .into());
    };
    let expected = Expected { server: Some(server), match_id: Some(match_id) };
    let claims = verify(&config.match_ticket_keys.0, &args.ticket, unix_now(), expected)
        .map_err(|e| format!("ticket refused: {e}"))?;
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
        let any = Expected::default();
        let claims = verify(&keys(), &ticket, 1_900_000_000, any).unwrap();
        assert_eq!((claims["mid"].as_str(), claims["sub"].as_str()), (Some("m-1"), Some("alice")));
        assert_eq!(verify(&keys(), &ticket, 2_000_000_000, any), Err(BadTicket::Expired));
        let other = vec![("k1".to_owned(), b"another key, same id, 32 bytes!!".to_vec())];
        assert_eq!(verify(&other, &ticket, 0, any), Err(BadTicket::BadSignature));
        let tampered = ticket.replacen("v1.k1.", "v1.k1.e", 1);
        assert!(verify(&keys(), &tampered, 0, any).is_err());
        assert_eq!(verify(&[], &ticket, 0, any), Err(BadTicket::UnknownKey("k1".into())));
        assert_eq!(verify(&keys(), "nonsense", 0, any), Err(BadTicket::Malformed));
        // Bound to its server and its match.
        let here = Expected { server: Some("203.0.113.7:7001"), match_id: Some("m-1") };
        assert!(verify(&keys(), &ticket, 0, here).is_ok());
        let next = Expected { match_id: Some("m-2"), ..here };
        assert_eq!(verify(&keys(), &ticket, 0, next), Err(BadTicket::OtherMatch("m-1".into(), "m-2".into())));
        let elsewhere = Expected { server: Some("203.0.113.7:7002"), ..here };
        assert!(matches!(verify(&keys(), &ticket, 0, elsewhere), Err(BadTicket::OtherServer(..))));
    }

    #[test]
    fn credentials_are_per_match_and_per_server() {
        let key = "s3cret-game-server-token";
        assert_ne!(credential(key, "match", "m-1"), credential(key, "match", "m-2"));
        assert_ne!(credential(key, "match", "x"), credential(key, "server", "x"));
        assert_ne!(credential(key, "match", "m-1"), credential("another-game-server-token", "match", "m-1"));
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
