//! One file per message type. `dispatch` decodes the envelope, enforces
//! authentication and hands the payload to the handler, which answers with at most
//! one reply (chat arrives separately, through the cluster bus).

mod count;
mod global_chat;
mod login;
mod logout;
mod private_chat;
pub mod register;
mod set_username;
mod token_auth;

use std::time::Instant;

use crate::auth::Token;
use crate::error::{Error, StoreError};
use crate::metrics as m;
use crate::node::Node;
use crate::protocol::parse_envelope;
use crate::session::{Auth, Session};
use crate::store::{unix_now, TokenRecord};

/// A handler's answer: a serialized reply, nothing, or an error reply.
pub type Outcome = Result<Option<String>, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Login,
    TokenAuth,
    Register,
    SetUsername,
    Logout,
    Count,
    GlobalChat,
    PrivateChat,
    Unknown,
}

impl Command {
    fn from_type(kind: &str) -> Command {
        match kind {
            "login" => Command::Login,
            "token_auth" => Command::TokenAuth,
            "register" => Command::Register,
            "set_username" => Command::SetUsername,
            "logout" => Command::Logout,
            "count" => Command::Count,
            "global_chat" => Command::GlobalChat,
            "private_chat" => Command::PrivateChat,
            _ => Command::Unknown,
        }
    }

    /// Metric label; unknown types share one label to bound cardinality.
    fn label(self) -> &'static str {
        match self {
            Command::Login => "login",
            Command::TokenAuth => "token_auth",
            Command::Register => "register",
            Command::SetUsername => "set_username",
            Command::Logout => "logout",
            Command::Count => "count",
            Command::GlobalChat => "global_chat",
            Command::PrivateChat => "private_chat",
            Command::Unknown => "unknown",
        }
    }

    fn allowed_unauthenticated(self) -> bool {
        matches!(self, Command::Login | Command::TokenAuth | Command::Register)
    }
}

/// Handles one text frame and returns the reply to send, if any.
pub async fn dispatch(node: &Node, session: &mut Session, text: &str) -> Option<String> {
    let Some(envelope) = parse_envelope(text) else {
        m::message_received("invalid");
        return Some(Error::BadMessage.to_json());
    };
    let command = Command::from_type(&envelope.kind);
    m::message_received(command.label());
    if !command.allowed_unauthenticated() && !session.is_authenticated() {
        return Some(Error::AuthRequired.to_json());
    }
    let payload = envelope.payload;
    let started = Instant::now();
    let outcome = match command {
        Command::Login => login::apply(node, session, payload).await,
        Command::TokenAuth => token_auth::apply(node, session, payload).await,
        Command::Register => register::apply(node, session, payload).await,
        Command::SetUsername => set_username::apply(node, session, payload).await,
        Command::Logout => logout::apply(node, session).await,
        Command::Count => count::apply(node).await,
        Command::GlobalChat => global_chat::apply(node, session, payload).await,
        Command::PrivateChat => private_chat::apply(node, session, payload).await,
        Command::Unknown => Err(Error::UnknownType),
    };
    if command.allowed_unauthenticated() {
        let result = outcome.as_ref().map_or_else(|e| e.auth_result(), |_| "success");
        m::auth_attempt(command.label(), result, started.elapsed());
    }
    outcome.unwrap_or_else(|e| Some(e.to_json()))
}

/// Issues a new token for an account that just proved who it is, and authenticates
/// the connection with a fresh session whose display name is the account name.
async fn start_session(node: &Node, session: &mut Session, user_id: i64, username: &str) -> Result<Token, StoreError> {
    let token = Token::generate();
    let hash = token.hash();
    let expires_at = unix_now() + node.config.token_ttl_secs as i64;
    node.users.insert_token(user_id, &hash, Some(&session.ip_string()), expires_at).await?;
    let record = TokenRecord { user_id, username: username.to_owned(), expires_at };
    // The cache only saves a PostgreSQL query on the next token_auth; without Redis
    // the token still works everywhere.
    let _ = node.shared.cache_token(&hash, &record, node.cache_ttl(expires_at), Some(username)).await;
    session.authenticate(
        node,
        Auth { user_id, username: username.to_owned(), token: hash, expires_at, display_name: username.into() },
    );
    Ok(token)
}

/// Logs a store failure behind an error reply.
fn store_failed(error: StoreError, reply: Error) -> Error {
    tracing::warn!(%error, "store unavailable");
    reply
}
