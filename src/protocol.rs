//! The wire format: incoming frames are `{"type": "...", "payload": ...}` JSON objects,
//! replies are built from [`Reply`] by serde so every text is escaped correctly.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A decoded frame. `payload` stays raw JSON: each handler decodes its own shape.
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

/// Every message the node sends, with its exact `type` and `payload` shape.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Reply<'a> {
    Error {
        message: &'a str,
        code: &'a str,
    },
    AuthError {
        message: &'a str,
    },
    AuthSuccess {
        username: &'a str,
        token: &'a str,
    },
    DisplayNameUpdated(&'a str),
    RegisterSuccess {
        success: bool,
        message: &'a str,
        #[serde(rename = "autoLogin")]
        auto_login: bool,
        username: &'a str,
        token: &'a str,
    },
    LoggedOut,
    PlayerCount(u64),
    GlobalChat {
        username: &'a str,
        message: &'a str,
    },
    PrivateChat {
        username: &'a str,
        message: &'a str,
    },
}

impl Reply<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("replies always serialize")
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
    fn replies_match_the_contract() {
        assert_eq!(Reply::LoggedOut.to_json(), r#"{"type":"logged_out"}"#);
        assert_eq!(Reply::PlayerCount(3).to_json(), r#"{"type":"player_count","payload":3}"#);
        assert_eq!(
            Reply::DisplayNameUpdated(r#"a"b\c"#).to_json(),
            r#"{"type":"display_name_updated","payload":"a\"b\\c"}"#
        );
        assert_eq!(
            Reply::RegisterSuccess {
                success: true,
                message: "Registration successful",
                auto_login: true,
                username: "u",
                token: "t"
            }
            .to_json(),
            r#"{"type":"register_success","payload":{"success":true,"message":"Registration successful","autoLogin":true,"username":"u","token":"t"}}"#
        );
    }
}
