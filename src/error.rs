//! One domain error whose variants each map to exactly one wire reply.

use crate::protocol::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    // `error` replies, any message.
    BadMessage,
    AuthRequired,
    UnknownType,
    ServerError,

    // `auth_error` replies for `login` and `token_auth`.
    InvalidLoginFormat,
    InvalidCredentials,
    TooManyAttempts,
    ServerBusy,
    InvalidTokenFormat,
    InvalidToken,
    AuthServerError,

    // `error` replies with code REGISTRATION_ERROR.
    InvalidRegistrationFormat,
    UsernameTooShort,
    PasswordTooShort,
    UsernameTaken,
    EmailTaken,
    RegistrationFailed,
}

impl Error {
    /// The reply a client receives for this error.
    pub fn to_json(self) -> String {
        let message = self.message();
        let reply = match self {
            Error::BadMessage => Reply::Error { message, code: "BAD_MESSAGE" },
            Error::AuthRequired => Reply::Error { message, code: "AUTH_REQUIRED" },
            Error::UnknownType => Reply::Error { message, code: "UNKNOWN_TYPE" },
            Error::ServerError => Reply::Error { message, code: "SERVER_ERROR" },
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
            | Error::RegistrationFailed => Reply::Error { message, code: "REGISTRATION_ERROR" },
        };
        reply.to_json()
    }

    fn message(self) -> &'static str {
        match self {
            Error::BadMessage => "Invalid message format",
            Error::AuthRequired => "Authentication required",
            Error::UnknownType => "Unknown message type",
            Error::ServerError | Error::AuthServerError => "Server error, try again later",
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
    pub fn auth_result(self) -> &'static str {
        match self {
            Error::InvalidLoginFormat
            | Error::InvalidTokenFormat
            | Error::InvalidRegistrationFormat
            | Error::UsernameTooShort
            | Error::PasswordTooShort => "invalid_format",
            Error::InvalidCredentials | Error::InvalidToken | Error::UsernameTaken | Error::EmailTaken => {
                "invalid_credentials"
            }
            Error::TooManyAttempts => "rate_limited",
            Error::ServerBusy => "busy",
            _ => "server_error",
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
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    PostgresPool(#[from] deadpool_postgres::PoolError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    RedisPool(#[from] deadpool_redis::PoolError),
    #[error("{0}")]
    Other(String),
}
