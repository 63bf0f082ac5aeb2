//! One file per message type, and the one table that names them all. `dispatch`
//! decodes the envelope, enforces authentication and hands the payload to the
//! handler, which answers with at most one reply (chat arrives separately, through
//! the cluster bus).
//!
//! Adding a message: a handler file with `pub async fn apply(node, session,
//! payload) -> Outcome`, a line in [`messages!`] below, its reply variant in
//! `protocol::Reply`, and its line in `docs/PROTOCOL.md`'s message table (a test
//! checks that the doc and this table agree).

mod count;
mod global_chat;
mod join_queue;
mod leave_queue;
mod login;
mod logout;
mod private_chat;
mod queue_status;
pub mod register;
mod set_username;
mod token_auth;

use std::sync::LazyLock;
use std::time::Instant;

use serde_json::value::RawValue;

use crate::auth::Token;
use crate::error::{Error, StoreError};
use crate::metrics::{AuthResult, MessageMetrics};
use crate::node::Node;
use crate::protocol::parse_envelope;
use crate::session::{Auth, Session};
use crate::store::{unix_now, TokenRecord};

/// A handler's answer: a serialized reply, nothing, or an error reply.
pub type Outcome = Result<Option<String>, Error>;

/// Who may send a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, and it is an authentication attempt (counted by method and result).
    Authenticates,
    /// Authenticated connections only; others get `AUTH_REQUIRED`.
    Player,
}

macro_rules! messages {
    ($($name:literal => $kind:ident, $access:ident, $handler:path;)*) => {
        /// Every message type a client may send.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind { $($kind,)* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            pub fn from_type(name: &str) -> Option<Kind> {
                match name { $($name => Some(Kind::$kind),)* _ => None }
            }

            /// The wire `type`, also the metric label.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => $name,)* }
            }

            pub fn access(self) -> Access {
                match self { $(Kind::$kind => Access::$access,)* }
            }
        }

        async fn run(kind: Kind, node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
            match kind { $(Kind::$kind => $handler(node, session, payload).await,)* }
        }
    };
}

messages! {
    // type         => kind,        access,         handler;
    "login"         => Login,       Authenticates,  login::apply;
    "token_auth"    => TokenAuth,   Authenticates,  token_auth::apply;
    "register"      => Register,    Authenticates,  register::apply;
    "set_username"  => SetUsername, Player,         set_username::apply;
    "logout"        => Logout,      Player,         logout::apply;
    "count"         => Count,       Player,         count::apply;
    "global_chat"   => GlobalChat,  Player,         global_chat::apply;
    "private_chat"  => PrivateChat, Player,         private_chat::apply;
    "join_queue"    => JoinQueue,   Player,         join_queue::apply;
    "leave_queue"   => LeaveQueue,  Player,         leave_queue::apply;
    "queue_status"  => QueueStatus, Player,         queue_status::apply;
}

/// Per-type metrics, in [`Kind::ALL`] order, then frames of unknown type and
/// frames that are no message at all.
static METRICS: LazyLock<Vec<MessageMetrics>> = LazyLock::new(|| {
    let known = Kind::ALL.iter().map(|k| MessageMetrics::new(k.name(), k.access() == Access::Authenticates));
    known.chain(["unknown", "invalid"].map(|label| MessageMetrics::new(label, false))).collect()
});
const UNKNOWN: usize = Kind::ALL.len();
const INVALID: usize = Kind::ALL.len() + 1;

/// Exports every message type's metrics at 0 from the start.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// Handles one text frame and returns the reply to send, if any.
pub async fn dispatch(node: &Node, session: &mut Session, text: &str) -> Option<String> {
    let Some(envelope) = parse_envelope(text) else {
        METRICS[INVALID].received();
        return Some(Error::BadMessage.to_json());
    };
    let kind = Kind::from_type(&envelope.kind);
    let metrics = &METRICS[kind.map_or(UNKNOWN, |k| k as usize)];
    metrics.received();
    let access = kind.map_or(Access::Player, Kind::access);
    if access == Access::Player && !session.is_authenticated() {
        return Some(Error::AuthRequired.to_json());
    }
    let Some(kind) = kind else {
        return Some(Error::UnknownType.to_json());
    };
    let started = Instant::now();
    let outcome = run(kind, node, session, envelope.payload).await;
    if access == Access::Authenticates {
        let result = outcome.as_ref().map_or_else(|e| e.auth_result(), |_| AuthResult::Success);
        metrics.auth_attempt(result, started.elapsed());
    }
    outcome.unwrap_or_else(|e| Some(e.to_json()))
}

/// Issues a new token for an account that just proved who it is, and authenticates
/// the connection with a fresh session whose display name is the account name.
async fn start_session(node: &Node, session: &mut Session, user_id: i64, username: &str) -> Result<Token, StoreError> {
    let token = Token::generate();
    let hash = token.hash();
    let expires_at = unix_now() + node.config.token_ttl_secs as i64;
    let max_live = node.config.max_tokens_per_account;
    let ip = session.ip_string();
    let revoked = node.stores.users.insert_token(user_id, &hash, Some(&ip), expires_at, max_live).await?;
    // Tokens beyond the account's cap stop working at once on every node.
    if !revoked.is_empty() {
        let _ = node.stores.tokens.forget(&revoked).await;
    }
    let record = TokenRecord { user_id, username: username.to_owned(), expires_at };
    // The cache only saves a PostgreSQL query on the next token_auth; without Redis
    // the token still works everywhere.
    let _ = node.stores.tokens.cache(&hash, &record, node.cache_ttl(expires_at), Some(username)).await;
    let auth =
        Auth { user_id, username: username.to_owned(), token_hash: hash, expires_at, display_name: username.into() };
    session.begin(node, auth);
    Ok(token)
}

/// A chat message's text, if it is not longer than `CHAT_MAX_CHARS`.
fn chat_text(node: &Node, message: String) -> Result<String, Error> {
    if longer_than(&message, node.config.chat_max_chars as usize) {
        return Err(Error::BadMessage);
    }
    Ok(message)
}

/// Whether `text` is longer than `max` characters (bytes first: most text is short).
fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// Logs a store failure behind an error reply.
fn store_failed(error: StoreError, reply: Error) -> Error {
    tracing::warn!(%error, "store unavailable");
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/PROTOCOL.md` lists every message type with its access; it must say
    /// what the table says.
    #[test]
    fn the_protocol_doc_lists_exactly_the_message_table() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
        let section = doc.split("## Message types").nth(1).expect("docs/PROTOCOL.md has a '## Message types' section");
        let mut documented: Vec<(String, bool)> = section
            .lines()
            .skip_while(|l| !l.starts_with("| `"))
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[2] == "no")
            })
            .collect();
        let mut table: Vec<(String, bool)> =
            Kind::ALL.iter().map(|k| (k.name().to_owned(), k.access() == Access::Authenticates)).collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table, "docs/PROTOCOL.md's message table and handlers::messages! disagree");
    }

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_type(kind.name()), Some(*kind));
        }
    }
}
