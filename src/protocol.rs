//! The wire format, one set of serde types for both ends: the node decodes requests
//! and serializes replies with them, and the load generator and the tests build
//! requests and decode replies with the same types. Every frame is
//! `{"type": "...", "payload": ...}`.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A decoded frame, either way. `payload` stays raw JSON: each handler decodes its
/// own shape, because a payload of the wrong shape gets a message-specific reply.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub payload: Option<&'a RawValue>,
}

/// Decodes a text frame; `None` when it is not a JSON object with a string `type`.
pub fn parse_envelope(text: &str) -> Option<Envelope<'_>> {
    // serde also maps a JSON array onto a struct; the contract wants an object.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// Decodes a payload that must be a JSON object of shape `T`.
pub fn parse_object<T: DeserializeOwned>(payload: Option<&RawValue>) -> Option<T> {
    let raw = payload?.get();
    if !raw.starts_with('{') {
        return None;
    }
    serde_json::from_str(raw).ok()
}

/// Decodes a payload that must be a JSON string.
pub fn parse_string(payload: Option<&RawValue>) -> Option<String> {
    let raw = payload?.get();
    if !raw.starts_with('"') {
        return None;
    }
    serde_json::from_str(raw).ok()
}

/// `login` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// `token_auth` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenPayload {
    pub token: String,
}

/// `register` payload (and the body of `POST /register`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `private_chat` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivateMessage {
    pub target: String,
    pub message: String,
}

/// `join_queue` payload (absent, `null` and `{}` mean the default queue).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueChoice {
    /// Absent: the default queue. `null` or any other non-string is a bad message.
    #[serde(default, deserialize_with = "present_string", skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// A field that, when present, must be a string (`null` included in what is refused).
fn present_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// Every request a client sends, as a client builds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Request {
    Login(Credentials),
    TokenAuth(TokenPayload),
    Register(Registration),
    SetUsername(String),
    Logout,
    Count,
    GlobalChat(String),
    PrivateChat(PrivateMessage),
    JoinQueue(QueueChoice),
    LeaveQueue,
    QueueStatus,
}

impl Request {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("requests always serialize")
    }
}

/// A chat line as delivered: the sender's display name, the text, and the sender's
/// account name (display names are free text; the account says who really wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine<'a> {
    pub username: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub account: Cow<'a, str>,
}

/// Every message the node sends, with its exact `type` and `payload` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Reply<'a> {
    Error {
        message: Cow<'a, str>,
        code: Cow<'a, str>,
    },
    AuthError {
        message: Cow<'a, str>,
    },
    AuthSuccess {
        username: Cow<'a, str>,
        token: Cow<'a, str>,
    },
    DisplayNameUpdated(Cow<'a, str>),
    RegisterSuccess {
        success: bool,
        message: Cow<'a, str>,
        #[serde(rename = "autoLogin")]
        auto_login: bool,
        username: Cow<'a, str>,
        token: Cow<'a, str>,
    },
    LoggedOut,
    PlayerCount(u64),
    GlobalChat(ChatLine<'a>),
    PrivateChat(ChatLine<'a>),
    Queued,
    Dequeued,
    QueueStatus(QueueStatus),
    MatchFound(MatchFound),
    MatchError {
        message: Cow<'a, str>,
    },
}

/// A player's place in a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub queued: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// 1 for the next player out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_secs: Option<u64>,
}

/// A match and where to play it; the same for every player but `ticket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchFound {
    pub match_id: String,
    /// Account usernames, in queue order.
    pub players: Vec<String>,
    pub host: String,
    pub port: u16,
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The player's signed join ticket.
    pub ticket: String,
}

impl Reply<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("replies always serialize")
    }

    /// Decodes a frame the node sent.
    pub fn parse(text: &str) -> Option<Reply<'static>> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_requires_object_with_string_type() {
        assert!(parse_envelope(r#"{"type":"count"}"#).is_some());
        assert!(parse_envelope(r#"  {"type":"lo\u0067in","payload":{}}"#).unwrap().kind == "login");
        assert!(parse_envelope(r#"["count"]"#).is_none());
        assert!(parse_envelope(r#"{"type":5}"#).is_none());
        assert!(parse_envelope(r#"{"payload":1}"#).is_none());
        assert!(parse_envelope("not json").is_none());
        assert!(parse_envelope(r#""count""#).is_none());
    }

    #[test]
    fn requests_match_the_contract() {
        assert_eq!(Request::Logout.to_json(), r#"{"type":"logout"}"#);
        assert_eq!(Request::SetUsername("x".into()).to_json(), r#"{"type":"set_username","payload":"x"}"#);
        let login = Request::Login(Credentials { username: "jane.doe".into(), password: "pw".into() });
        assert_eq!(login.to_json(), r#"{"type":"login","payload":{"username":"jane.doe","password":"pw"}}"#);
        let register = Request::Register(Registration { username: "u".into(), password: "p".into(), email: None });
        assert_eq!(register.to_json(), r#"{"type":"register","payload":{"username":"u","password":"p"}}"#);
    }

    #[test]
    fn replies_match_the_contract() {
        assert_eq!(Reply::LoggedOut.to_json(), r#"{"type":"logged_out"}"#);
        assert_eq!(Reply::PlayerCount(3).to_json(), r#"{"type":"player_count","payload":3}"#);
        assert_eq!(
            Reply::DisplayNameUpdated(r#"a"b\c"#.into()).to_json(),
            r#"{"type":"display_name_updated","payload":"a\"b\\c"}"#
        );
        let success = Reply::RegisterSuccess {
            success: true,
            message: "Registration successful".into(),
            auto_login: true,
            username: "u".into(),
            token: "t".into(),
        };
        let json = success.to_json();
        assert_eq!(
            json,
            r#"{"type":"register_success","payload":{"success":true,"message":"Registration successful","autoLogin":true,"username":"u","token":"t"}}"#
        );
        assert_eq!(Reply::parse(&json), Some(success));
        let chat = Reply::GlobalChat(ChatLine { username: "n".into(), message: "m".into(), account: "a".into() });
        assert_eq!(chat.to_json(), r#"{"type":"global_chat","payload":{"username":"n","message":"m","account":"a"}}"#);
    }
}
