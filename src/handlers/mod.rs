//! One file per message type, and the one table that names them all. A line of
//! [`messages!`] gives a message's wire `type`, its request (the [`Request`] variant
//! and its payload type), who may send it, its handler, and the reply the handler
//! answers with when it succeeds.
//!
//! `dispatch` decodes the envelope and finds the line; `run` decodes the payload into
//! the line's type (`None` when it has another shape: each handler answers that as
//! its contract says) and hands a player's message the authenticated player. The
//! handler answers with at most one [`Reply`] or an [`Error`] (chat arrives
//! separately, through the cluster bus). Handlers change their connection's state
//! only through `Session` methods.
//!
//! A handler is one of
//!
//! ```text
//! apply(node: &Node, session: &mut Session, request: Option<P>) -> Outcome                 // Authenticates
//! apply(node: &Node, session: &mut Session, player: &Auth, request: Option<P>) -> Outcome  // Player
//! apply(node: &Node, session: &mut Session, player: &Auth) -> Outcome                      // Player, no payload
//! ```
//!
//! Adding a message: a handler file, one line in [`messages!`], its payload type
//! (`protocol::Payload`) and reply variant in `protocol.rs`, and its row in
//! `docs/PROTOCOL.md`. `tests/it/protocol.rs` round-trips every line: the request as a
//! client builds it, the node's reply, and the doc's row.

mod count;
mod global_chat;
mod join_queue;
mod leave_queue;
mod login;
mod logout;
mod private_chat;
mod queue_status;
mod register;
mod set_username;
mod token_auth;

use std::sync::LazyLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth::Token;
use crate::error::{store_failed, store_skipped, Error, StoreError};
use crate::metrics::{AuthResult, MessageMetrics};
use crate::node::Node;
use crate::outbox::Moderated;
use crate::protocol::{
    parse_envelope, Credentials, Payload, PrivateMessage, QueueChoice, Registration, Reply, TokenPayload,
};
use crate::registry::Via;
use crate::session::{Auth, Session};
use crate::store::{unix_now, Standing, TokenRecord};

/// A handler's answer: one reply, nothing, or an error (which maps to one reply).
pub type Outcome = Result<Option<Reply<'static>>, Error>;

/// Who may send a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, and it is an authentication attempt (counted by method and result).
    Authenticates,
    /// Authenticated connections only; others get `AUTH_REQUIRED`. The handler
    /// receives the player.
    Player,
}

macro_rules! messages {
    // How `run` calls a handler, by access and by whether the message has a payload.
    (@call Authenticates, $handler:path, $node:ident, $session:ident, $payload:ident $(, $request:ty)?) => {
        $handler($node, $session $(, <$request as Payload>::decode($payload))?).await
    };
    (@call Player, $handler:path, $node:ident, $session:ident, $payload:ident $(, $request:ty)?) => {{
        // A copy, so that the handler may still change the session.
        let Some(player) = $session.auth().cloned() else {
            return Err(Error::AuthRequired);
        };
        $handler($node, $session, &player $(, <$request as Payload>::decode($payload))?).await
    }};
    (@answers nothing, $reply:ident) => { $reply.is_none() };
    (@answers $variant:ident, $reply:ident) => { matches!($reply, Some(Reply::$variant { .. })) };

    ($($name:literal => $kind:ident $(($request:ty))?, $access:ident, $handler:path, $reply:ident;)*) => {
        /// Every message type a client may send.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind { $($kind,)* }

        /// Every request a client sends, as a client builds it (the load generator,
        /// the tests): one variant per line of the table, carrying its payload type,
        /// so a request cannot be named differently from its wire type.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "type", content = "payload")]
        pub enum Request { $(#[serde(rename = $name)] $kind $(($request))?,)* }

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

            /// Whether `reply` is what this message's handler answers with when it
            /// succeeds (`None` for a message answered by nothing).
            pub fn answers_with(self, reply: Option<&Reply>) -> bool {
                match self { $(Kind::$kind => messages!(@answers $reply, reply),)* }
            }
        }

        impl Request {
            pub fn kind(&self) -> Kind {
                match self { $(Request::$kind { .. } => Kind::$kind,)* }
            }
        }

        async fn run(kind: Kind, node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
            match kind {
                $(Kind::$kind => messages!(@call $access, $handler, node, session, payload $(, $request)?),)*
            }
        }
    };
}

messages! {
    // type         => request,                     access,         handler,             reply;
    "login"         => Login(Credentials),          Authenticates,  login::apply,        AuthSuccess;
    "token_auth"    => TokenAuth(TokenPayload),     Authenticates,  token_auth::apply,   AuthSuccess;
    "register"      => Register(Registration),      Authenticates,  register::apply,     RegisterSuccess;
    "set_username"  => SetUsername(String),         Player,         set_username::apply, DisplayNameUpdated;
    "logout"        => Logout,                      Player,         logout::apply,       LoggedOut;
    "count"         => Count,                       Player,         count::apply,        PlayerCount;
    "global_chat"   => GlobalChat(String),          Player,         global_chat::apply,  nothing;
    "private_chat"  => PrivateChat(PrivateMessage), Player,         private_chat::apply, nothing;
    "join_queue"    => JoinQueue(QueueChoice),      Player,         join_queue::apply,   Queued;
    "leave_queue"   => LeaveQueue,                  Player,         leave_queue::apply,  Dequeued;
    "queue_status"  => QueueStatus,                 Player,         queue_status::apply, QueueStatus;
}

impl Request {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("requests always serialize")
    }
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
    let Some(kind) = Kind::from_type(&envelope.kind) else {
        METRICS[UNKNOWN].received();
        // An unauthenticated connection learns nothing about which types exist.
        let error = if session.is_authenticated() { Error::UnknownType } else { Error::AuthRequired };
        return Some(error.to_json());
    };
    let metrics = &METRICS[kind as usize];
    metrics.received();
    let started = Instant::now();
    let outcome = run(kind, node, session, envelope.payload).await;
    if kind.access() == Access::Authenticates {
        let result = outcome.as_ref().map_or_else(|e| e.auth_result(), |_| AuthResult::Success);
        metrics.auth_attempt(result, started.elapsed());
    }
    // An opted-in authentication's reply carries where the streams end (RESUME.md).
    let positions = session.take_positions();
    match outcome {
        Ok(Some(reply @ (Reply::AuthSuccess { .. } | Reply::RegisterSuccess { .. }))) => {
            let json = reply.to_json();
            Some(match positions {
                Some(ends) => crate::resume::with_positions(&json, &ends),
                None => json,
            })
        }
        Ok(reply) => reply.map(|r| r.to_json()),
        Err(e) => Some(e.to_json()),
    }
}

/// Issues a new token for an account that just proved who it is, and authenticates
/// the connection with a fresh session whose display name is the account name.
async fn start_session(
    node: &Node,
    session: &mut Session,
    user: (i64, &str, &Standing),
    via: Via,
    resume: bool,
) -> Result<Token, StoreError> {
    let (user_id, username, standing) = user;
    let token = Token::generate();
    let hash = token.hash();
    let expires_at = unix_now() + node.config.token_ttl_secs as i64;
    let max_live = node.config.max_tokens_per_account;
    let ip = session.ip_string();
    let revoked = node.stores.users.insert_token(user_id, &hash, Some(&ip), expires_at, max_live).await?;
    // Tokens beyond the account's cap stop working at once on every node.
    if !revoked.is_empty() {
        if let Err(e) = node.stores.tokens.forget(&revoked).await {
            store_skipped(e, "revoked tokens stay cached until the session check ends them");
        }
    }
    let record = TokenRecord { user_id, username: username.to_owned(), expires_at, standing: standing.clone() };
    // The cache only saves a PostgreSQL query on the next token_auth; without Redis
    // the token still works everywhere.
    if let Err(e) = node.stores.tokens.cache(&hash, &record, node.cache_ttl(expires_at), Some(username)).await {
        store_skipped(e, "token not cached");
    }
    let auth = Auth {
        user_id,
        username: username.to_owned(),
        token_hash: hash,
        expires_at,
        display_name: username.into(),
        muted_until: standing.mute(unix_now()).and_then(|m| m.until),
        via,
        resume,
    };
    session.begin(node, auth);
    if resume {
        crate::resume::open(node, session, None).await;
    }
    Ok(token)
}

/// Delivers the kick that waited for this account's next session, if it is still
/// waiting (exactly one session gets it): `kicked`, then the connection closes.
async fn kicked(node: &Node, session: &Session, user_id: i64) -> bool {
    match node.stores.moderation.take_kick(user_id).await {
        Ok(Some(reason)) => {
            session.moderate(Moderated::Kicked { reason });
            true
        }
        Ok(None) => false,
        Err(e) => {
            store_skipped(e, "the waiting kick stays for the next session");
            false
        }
    }
}

/// A chat message's text, if it is not longer than `CHAT_MAX_CHARS` and `player` is
/// not muted.
fn chat_text(node: &Node, player: &Auth, message: String) -> Result<String, Error> {
    if longer_than(&message, node.config.chat_max_chars as usize) {
        return Err(Error::BadMessage);
    }
    if let Some(until) = player.muted(unix_now()) {
        return Err(Error::Muted(until));
    }
    Ok(message)
}

/// Whether `text` is longer than `max` characters (bytes first: most text is short).
fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_built_as_the_contract_spells_them() {
        assert_eq!(Request::Logout.to_json(), r#"{"type":"logout"}"#);
        assert_eq!(Request::SetUsername("x".into()).to_json(), r#"{"type":"set_username","payload":"x"}"#);
        let login = Request::Login(Credentials { username: "jane.doe".into(), password: "pw".into(), resume: None });
        assert_eq!(login.to_json(), r#"{"type":"login","payload":{"username":"jane.doe","password":"pw"}}"#);
        let register =
            Request::Register(Registration { username: "u".into(), password: "p".into(), email: None, resume: None });
        assert_eq!(register.to_json(), r#"{"type":"register","payload":{"username":"u","password":"p"}}"#);
        assert_eq!(Request::JoinQueue(QueueChoice::default()).to_json(), r#"{"type":"join_queue","payload":{}}"#);
    }
}
