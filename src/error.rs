//! One domain error whose variants each map to exactly one wire reply.

use crate::metrics::AuthResult;
use crate::protocol::{rfc3339, Reply};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    // `error` replies, any message.
    BadMessage,
    AuthRequired,
    UnknownType,
    /// A store the message needs is unreachable, and no fallback is right.
    ServerError,
    /// Past the per-account chat rate.
    ChatRateLimited,
    /// `join_queue` names a queue that is not configured.
    UnknownQueue,
    /// `leave_queue` after a match was formed for the player.
    MatchPending,
    /// `join_queue` past `MAX_MATCHES_PER_HOUR`.
    MatchRateLimited,
    /// Chat from a muted account, until the unix second given.
    Muted(i64),

    // `auth_error` replies for `login` and `token_auth`.
    InvalidLoginFormat,
    InvalidCredentials,
    TooManyAttempts,
    ServerBusy,
    InvalidTokenFormat,
    InvalidToken,
    AuthServerError,
    /// A correct credential of a banned account.
    Banned(Box<BanNotice>),

    // `error` replies with code REGISTRATION_ERROR.
    InvalidRegistrationFormat,
    UsernameTooShort,
    PasswordTooShort,
    UsernameTaken,
    EmailTaken,
    RegistrationFailed,
    /// Past the per-address registration rate.
    RegistrationRateLimited,
}

/// What a banned account's credential is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanNotice {
    pub reason: String,
    /// Unix seconds; `None`: permanent.
    pub until: Option<i64>,
}

impl Error {
    pub fn banned(reason: &str, until: Option<i64>) -> Error {
        Error::Banned(Box::new(BanNotice { reason: reason.to_owned(), until }))
    }

    /// The reply a client receives for this error.
    pub fn to_json(&self) -> String {
        let message = self.message().into();
        let error = |code: &'static str| Reply::Error { message: self.message().into(), code: code.into() };
        let reply = match self {
            Error::Muted(until) => {
                return Reply::Muted { message, code: "MUTED".into(), until: rfc3339(*until) }.to_json()
            }
            Error::Banned(ban) => {
                let (reason, until) = (ban.reason.as_str().into(), ban.until.map(rfc3339));
                return Reply::Banned { message, reason, until }.to_json();
            }
            Error::BadMessage => error("BAD_MESSAGE"),
            Error::AuthRequired => error("AUTH_REQUIRED"),
            Error::UnknownType => error("UNKNOWN_TYPE"),
            Error::ServerError => error("SERVER_ERROR"),
            Error::UnknownQueue => error("BAD_QUEUE"),
            Error::MatchPending => error("MATCH_PENDING"),
            Error::ChatRateLimited | Error::RegistrationRateLimited | Error::MatchRateLimited => error("RATE_LIMITED"),
            Error::InvalidLoginFormat
            | Error::InvalidCredentials
            | Error::TooManyAttempts
            | Error::ServerBusy
            | Error::InvalidTokenFormat
            | Error::InvalidToken
            | Error::AuthServerError => Reply::AuthError { message },
            Error::InvalidRegistrationFormat
            | Error::UsernameTooShort
            | Error::PasswordTooShort
            | Error::UsernameTaken
            | Error::EmailTaken
            | Error::RegistrationFailed => error("REGISTRATION_ERROR"),
        };
        reply.to_json()
    }

    fn message(&self) -> &'static str {
        match self {
            Error::Muted(_) => "You are muted",
            Error::Banned(_) => "Account banned",
            Error::BadMessage => "Invalid message format",
            Error::AuthRequired => "Authentication required",
            Error::UnknownType => "Unknown message type",
            Error::ChatRateLimited => "Too many messages, slow down",
            Error::RegistrationRateLimited => "Too many registrations, try again later",
            Error::ServerError | Error::AuthServerError => "Server error, try again later",
            Error::UnknownQueue => "Unknown queue",
            Error::MatchPending => "Match already found",
            Error::MatchRateLimited => "Too many matches, try again later",
            Error::InvalidLoginFormat => "Invalid login format",
            Error::InvalidCredentials => "Invalid username or password",
            Error::TooManyAttempts => "Too many attempts, try again later",
            Error::ServerBusy => "Server busy, try again later",
            Error::InvalidTokenFormat => "Invalid token format",
            Error::InvalidToken => "Invalid or expired token",
            Error::InvalidRegistrationFormat => "Invalid registration format",
            Error::UsernameTooShort => "Username must be at least 3 characters",
            Error::PasswordTooShort => "Password must be at least 6 characters",
            Error::UsernameTaken => "Username already exists",
            Error::EmailTaken => "Email already registered",
            Error::RegistrationFailed => "Registration failed due to a server error",
        }
    }

    /// The `result` label of the auth-attempt metric for this error.
    pub fn auth_result(&self) -> AuthResult {
        match self {
            Error::InvalidLoginFormat
            | Error::InvalidTokenFormat
            | Error::InvalidRegistrationFormat
            | Error::UsernameTooShort
            | Error::PasswordTooShort => AuthResult::InvalidFormat,
            Error::InvalidCredentials | Error::InvalidToken | Error::UsernameTaken | Error::EmailTaken => {
                AuthResult::InvalidCredentials
            }
            Error::TooManyAttempts | Error::RegistrationRateLimited => AuthResult::RateLimited,
            Error::ServerBusy => AuthResult::Busy,
            Error::Banned(_) => AuthResult::Banned,
            _ => AuthResult::ServerError,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// A failure of a shared store (PostgreSQL or Redis): the caller picks the reply.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {}", pg_error(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {}", pg_pool_error(.0))]
    PostgresPool(#[from] deadpool_postgres::PoolError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    RedisPool(#[from] deadpool_redis::PoolError),
    /// Redis is known to be unreachable: the call was not even tried (see
    /// `RedisStore`'s probe), so the caller falls back at once.
    #[error("redis: unreachable")]
    RedisUnreachable,
    /// The database is in a state the node must not change as it is (a Go server's
    /// database it cannot take over): retrying cannot help, so the node stops with
    /// this one-line reason.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

/// Logs a store failure that ends the message in `reply`, and returns the reply.
pub fn store_failed(error: StoreError, reply: Error) -> Error {
    log_store_failure(&error, &reply.to_string());
    reply
}

/// Logs a store failure the handler carries on after, saying what it does instead.
pub fn store_skipped(error: StoreError, instead: &str) {
    log_store_failure(&error, instead);
}

/// Every store failure a handler, the account creation they share with
/// `POST /register`, or a subsystem that carries on (cluster, matchmaking, the
/// revocation check) meets is logged here, one way: the cause and what came of it. A call that was not even tried because Redis is known to be down is
/// only a debug line: the Redis store logs the outage once, when it starts.
fn log_store_failure(error: &StoreError, then: &str) {
    if matches!(error, StoreError::RedisUnreachable) {
        tracing::debug!(%error, then, "store unavailable");
    } else {
        tracing::warn!(%error, then, "store unavailable");
    }
}

/// A PostgreSQL client error with its cause ("error performing TLS handshake" alone
/// does not say that the certificate was refused). A server's error is left as it
/// was: its detail may quote the row (a username, an email).
fn pg_error(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (None, Some(cause)) => format!("{e}: {cause}"),
        _ => e.to_string(),
    }
}

fn pg_pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => other.to_string(),
    }
}
