//! The wire format, one set of serde types for both ends: the node decodes request
//! payloads and serializes replies with them, and the load generator and the tests
//! build requests and decode replies with the same types. Every frame is
//! `{"type": "...", "payload": ...}`. The `Request` enum, which names each request's
//! payload type, is generated with the message table (`handlers::Request`), so the
//! two cannot disagree.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A decoded frame, either way. `payload` stays raw JSON until the message table
/// decodes it into the message's [`Payload`] type.
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

/// A request's payload type, as the message table names it. Decoding gives `None`
/// for a payload of another shape: each handler answers that as its contract says
/// (`Invalid login format`, `BAD_MESSAGE`, or nothing at all).
pub trait Payload: DeserializeOwned {
    /// By default a payload is a JSON object of this shape.
    fn decode(payload: Option<&RawValue>) -> Option<Self> {
        parse_object(payload)
    }
}

/// `set_username` and `global_chat` payload.
impl Payload for String {
    fn decode(payload: Option<&RawValue>) -> Option<Self> {
        parse_string(payload)
    }
}

impl Payload for Credentials {}
impl Payload for TokenPayload {}
impl Payload for Registration {}
impl Payload for PrivateMessage {}

/// Absent and `null` are the default queue.
impl Payload for QueueChoice {
    fn decode(payload: Option<&RawValue>) -> Option<Self> {
        match payload.map(RawValue::get) {
            None | Some("null") => Some(QueueChoice::default()),
            Some(_) => parse_object(payload),
        }
    }
}

/// `login` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Opts the connection into resume (RESUME.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeRequest>,
}

/// `token_auth` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenPayload {
    pub token: String,
    /// Opts the connection into resume, and resumes from the positions it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeRequest>,
}

/// `"resume": true`, or the positions to resume from (RESUME.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResumeRequest {
    On(bool),
    From(ResumeFrom),
}

impl ResumeRequest {
    pub fn opted_in(req: &Option<ResumeRequest>) -> bool {
        matches!(req, Some(ResumeRequest::On(true) | ResumeRequest::From(_)))
    }
}

/// The last position a client processed of each stream (either may be left out: that
/// stream is not replayed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<String>,
}

/// `register` payload (and the body of `POST /register`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Opts the connection into resume (RESUME.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeRequest>,
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

/// A chat line as delivered: the sender's display name, the text, and the sender's
/// account name (display names are free text; the account says who really wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine<'a> {
    pub username: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub account: Cow<'a, str>,
}

/// Every message the node sends, with its exact `type` and `payload` shape. Each
/// wire name is spelled out (renaming a variant must not rename a message), and a
/// test pins every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum Reply<'a> {
    #[serde(rename = "error")]
    Error { message: Cow<'a, str>, code: Cow<'a, str> },
    #[serde(rename = "auth_error")]
    AuthError { message: Cow<'a, str> },
    /// An `auth_error` of a banned account (`until`: RFC 3339 UTC, `null` permanent).
    #[serde(rename = "auth_error", skip_deserializing)]
    Banned { message: Cow<'a, str>, reason: Cow<'a, str>, until: Option<String> },
    /// An `error` to a muted account's chat.
    #[serde(rename = "error", skip_deserializing)]
    Muted { message: Cow<'a, str>, code: Cow<'a, str>, until: String },
    #[serde(rename = "kicked")]
    Kicked { reason: Cow<'a, str> },
    #[serde(rename = "auth_success")]
    AuthSuccess { username: Cow<'a, str>, token: Cow<'a, str> },
    #[serde(rename = "display_name_updated")]
    DisplayNameUpdated(Cow<'a, str>),
    #[serde(rename = "register_success")]
    RegisterSuccess {
        success: bool,
        message: Cow<'a, str>,
        #[serde(rename = "autoLogin")]
        auto_login: bool,
        username: Cow<'a, str>,
        token: Cow<'a, str>,
    },
    #[serde(rename = "logged_out")]
    LoggedOut,
    #[serde(rename = "player_count")]
    PlayerCount(u64),
    #[serde(rename = "global_chat")]
    GlobalChat(ChatLine<'a>),
    #[serde(rename = "private_chat")]
    PrivateChat(ChatLine<'a>),
    #[serde(rename = "queued")]
    Queued,
    #[serde(rename = "dequeued")]
    Dequeued,
    #[serde(rename = "queue_status")]
    QueueStatus(QueueStatus),
    #[serde(rename = "match_found")]
    MatchFound(MatchFound),
    #[serde(rename = "match_error")]
    MatchError { message: Cow<'a, str> },
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

/// Unix seconds as RFC 3339 UTC with whole seconds (`2026-12-06T07:40:00Z`).
pub fn rfc3339(unix_secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
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

    /// Every reply's wire name, spelled out once more: the match is exhaustive, so a
    /// new reply cannot be added without naming it here.
    fn wire_name(reply: &Reply) -> &'static str {
        match reply {
            Reply::Error { .. } => "error",
            Reply::AuthError { .. } => "auth_error",
            Reply::AuthSuccess { .. } => "auth_success",
            Reply::DisplayNameUpdated(_) => "display_name_updated",
            Reply::RegisterSuccess { .. } => "register_success",
            Reply::LoggedOut => "logged_out",
            Reply::PlayerCount(_) => "player_count",
            Reply::GlobalChat(_) => "global_chat",
            Reply::PrivateChat(_) => "private_chat",
            Reply::Queued => "queued",
            Reply::Dequeued => "dequeued",
            Reply::QueueStatus(_) => "queue_status",
            Reply::MatchFound(_) => "match_found",
            Reply::MatchError { .. } => "match_error",
            Reply::Banned { .. } => "auth_error",
            Reply::Muted { .. } => "error",
            Reply::Kicked { .. } => "kicked",
        }
    }

    /// Each reply carries its wire name, decodes back to itself, and is written out
    /// in `docs/PROTOCOL.md`.
    #[test]
    fn every_reply_has_its_documented_wire_name() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
        let line = || ChatLine { username: "n".into(), message: "m".into(), account: "a".into() };
        let status = QueueStatus { queued: false, queue: None, position: None, waiting_secs: None };
        let found = MatchFound {
            match_id: "m".into(),
            players: vec!["a".into()],
            host: "h".into(),
            port: 1,
            container_id: "c".into(),
            ticket: "t".into(),
        };
        let every = [
            Reply::Error { message: "m".into(), code: "c".into() },
            Reply::AuthError { message: "m".into() },
            Reply::AuthSuccess { username: "u".into(), token: "t".into() },
            Reply::DisplayNameUpdated("n".into()),
            Reply::RegisterSuccess {
                success: true,
                message: "m".into(),
                auto_login: true,
                username: "u".into(),
                token: "t".into(),
            },
            Reply::LoggedOut,
            Reply::PlayerCount(1),
            Reply::GlobalChat(line()),
            Reply::PrivateChat(line()),
            Reply::Queued,
            Reply::Dequeued,
            Reply::QueueStatus(status),
            Reply::MatchFound(found),
            Reply::MatchError { message: "m".into() },
            Reply::Kicked { reason: "r".into() },
        ];
        let only_sent = [
            Reply::Banned { message: "m".into(), reason: "r".into(), until: None },
            Reply::Muted { message: "m".into(), code: "c".into(), until: "u".into() },
        ];
        for reply in every.iter().chain(&only_sent) {
            let json = reply.to_json();
            let name = wire_name(reply);
            assert!(json.starts_with(&format!(r#"{{"type":"{name}""#)), "{json}");
            assert!(doc.contains(&format!(r#"{{"type":"{name}""#)), "docs/PROTOCOL.md never shows a {name} frame");
        }
        for reply in every {
            assert_eq!(Reply::parse(&reply.to_json()).as_ref(), Some(&reply));
        }
    }

    /// MODERATION.md's frames, exactly.
    #[test]
    fn moderation_frames_match_the_contract() {
        let banned = Reply::Banned { message: "Account banned".into(), reason: "spam".into(), until: None };
        assert_eq!(
            banned.to_json(),
            r#"{"type":"auth_error","payload":{"message":"Account banned","reason":"spam","until":null}}"#
        );
        let until = "2026-12-06T07:40:00Z".to_owned();
        let muted = Reply::Muted { message: "You are muted".into(), code: "MUTED".into(), until };
        assert_eq!(
            muted.to_json(),
            r#"{"type":"error","payload":{"message":"You are muted","code":"MUTED","until":"2026-12-06T07:40:00Z"}}"#
        );
        let kicked = Reply::Kicked { reason: "afk".into() };
        assert_eq!(kicked.to_json(), r#"{"type":"kicked","payload":{"reason":"afk"}}"#);
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
