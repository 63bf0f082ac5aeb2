//! Wire-format cost per message type: decoding a frame (`parse_envelope` plus the
//! payload shape its handler reads) and serialising each reply (`Reply::to_json`,
//! error replies through `Error::to_json`).
//!
//! `cargo bench --bench protocol`

use criterion::{BenchmarkId, Criterion, Throughput};
use openchampps::error::Error;
use openchampps::protocol::{
    parse_envelope, parse_object, parse_string, ChatLine, Credentials, PrivateMessage, Registration, Reply,
    TokenPayload,
};
use std::hint::black_box;

/// How a handler reads the payload of each message type.
#[derive(Clone, Copy)]
enum Shape {
    Object(fn(Option<&serde_json::value::RawValue>) -> bool),
    Str,
    None,
}

fn incoming() -> Vec<(&'static str, &'static str, Shape)> {
    vec![
        (
            "login",
            r#"{"type":"login","payload":{"username":"jane.doe","password":"securePassword123"}}"#,
            Shape::Object(|p| parse_object::<Credentials>(p).is_some()),
        ),
        (
            "token_auth",
            r#"{"type":"token_auth","payload":{"token":"550e8400-e29b-41d4-a716-446655440000"}}"#,
            Shape::Object(|p| parse_object::<TokenPayload>(p).is_some()),
        ),
        (
            "register",
            r#"{"type":"register","payload":{"username":"john.smith","password":"mySecurePass456","email":"john.smith@example.com"}}"#,
            Shape::Object(|p| parse_object::<Registration>(p).is_some()),
        ),
        ("set_username", r#"{"type":"set_username","payload":"CoolGamer42"}"#, Shape::Str),
        ("global_chat", r#"{"type":"global_chat","payload":"gl hf everyone, see you in the lobby"}"#, Shape::Str),
        (
            "private_chat",
            r#"{"type":"private_chat","payload":{"target":"CoolGamer42","message":"rematch?"}}"#,
            Shape::Object(|p| parse_object::<PrivateMessage>(p).is_some()),
        ),
        ("count", r#"{"type":"count"}"#, Shape::None),
        ("logout", r#"{"type":"logout"}"#, Shape::None),
        ("invalid", r#"["not","an","object"]"#, Shape::None),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, frame, shape) in incoming() {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), frame, |b, frame| {
            b.iter(|| {
                let Some(envelope) = parse_envelope(black_box(frame)) else {
                    return false;
                };
                black_box(&envelope.kind);
                match shape {
                    Shape::Object(decode) => decode(envelope.payload),
                    Shape::Str => parse_string(envelope.payload).is_some(),
                    Shape::None => true,
                }
            })
        });
    }
    group.finish();
}

fn bench_replies(c: &mut Criterion) {
    let token = "550e8400-e29b-41d4-a716-446655440000";
    let replies: Vec<(&str, Reply<'static>)> = vec![
        ("auth_success", Reply::AuthSuccess { username: "jane.doe".into(), token: token.into() }),
        ("auth_error", Reply::AuthError { message: "Invalid username or password".into() }),
        ("error", Reply::Error { message: "Authentication required".into(), code: "AUTH_REQUIRED".into() }),
        ("display_name_updated", Reply::DisplayNameUpdated("CoolGamer42".into())),
        // A name that needs escaping: the serializer must not be the slow path.
        ("display_name_updated_escaped", Reply::DisplayNameUpdated(r#"Cool "Gamer" \ 42"#.into())),
        (
            "register_success",
            Reply::RegisterSuccess {
                success: true,
                message: "Registration successful".into(),
                auto_login: true,
                username: "john.smith".into(),
                token: token.into(),
            },
        ),
        ("logged_out", Reply::LoggedOut),
        ("player_count", Reply::PlayerCount(12_345)),
        (
            "global_chat",
            Reply::GlobalChat(ChatLine {
                username: "CoolGamer42".into(),
                message: "gl hf everyone, see you in the lobby".into(),
                account: "jane.doe".into(),
            }),
        ),
        (
            "private_chat",
            Reply::PrivateChat(ChatLine {
                username: "CoolGamer42".into(),
                message: "rematch?".into(),
                account: "jane.doe".into(),
            }),
        ),
    ];
    let mut group = c.benchmark_group("reply");
    for (name, reply) in &replies {
        group.bench_with_input(BenchmarkId::from_parameter(name), reply, |b, reply| {
            b.iter(|| black_box(reply).to_json())
        });
    }
    group.bench_function("error_to_json/invalid_token", |b| b.iter(|| black_box(Error::InvalidToken).to_json()));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_parse(&mut c);
    bench_replies(&mut c);
    c.final_summary();
}
