//! Hostile frames: whatever a client sends, the parsers do not panic, the node does
//! not crash, every reply is one the contract defines, and the connection keeps
//! working (the contract closes a connection only for oversized or binary frames,
//! which these tests do not send).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::common::*;
use openchampps::handlers::Kind;
use openchampps::names::display_name;
use openchampps::protocol::Credentials;
use openchampps::protocol::{parse_envelope, parse_object, parse_string};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// Every message type of the contract: the node's message table.
fn types() -> Vec<&'static str> {
    Kind::ALL.iter().map(|k| k.name()).collect()
}
/// Payload keys the handlers look for.
const KEYS: [&str; 6] = ["username", "password", "email", "token", "target", "message"];

// ---------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------

/// Strings a handler might care about: empty, short, near the length limits, UUIDs
/// (valid tokens in form), escapes, control characters, non-ASCII, and anything.
fn interesting_string() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{0,8}",
        "[a-zA-Z0-9._-]{3,12}",
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).hyphenated().to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string().to_uppercase()),
        Just(uuid::Uuid::nil().to_string()),
        r#"[\\"'{}\[\]:,\x00-\x1f]{0,12}"#,
        "\\PC{0,40}",
        any::<String>(),
        "[a-z]{200,600}",
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        interesting_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(object),
        ]
    })
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned), 1 => interesting_string()].boxed()
}

fn object(map: BTreeMap<String, Value>) -> Value {
    Value::Object(map.into_iter().collect::<Map<_, _>>())
}

/// A `type`: mostly real ones, else near misses and anything at all.
fn message_type() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(types()).prop_map(str::to_owned),
        1 => prop::sample::select(types()).prop_map(|t| t.to_uppercase()),
        1 => prop::sample::select(types()).prop_map(|t| format!(" {t}")),
        1 => interesting_string(),
    ]
    .boxed()
}

/// A payload: anything; an object with the keys handlers read and values of any type;
/// or one well-formed for some message, with hostile strings in it, so cases get past
/// the format checks into hashing, the stores and the chat bus.
fn payload() -> BoxedStrategy<Option<Value>> {
    let field = prop_oneof![2 => interesting_string().prop_map(Value::from), 1 => json_value()];
    let targeted = prop::collection::btree_map(key(), field, 0..5).prop_map(object).boxed();
    let s = interesting_string;
    let well_formed: BoxedStrategy<Value> = prop_oneof![
        (s(), s()).prop_map(|(u, p)| json!({"username": u, "password": p})),
        (s(), s(), prop::option::of(s())).prop_map(|(u, p, e)| json!({"username": u, "password": p, "email": e})),
        s().prop_map(|t| json!({"token": t})),
        (s(), s()).prop_map(|(t, m)| json!({"target": t, "message": m})),
        s().prop_map(Value::from),
    ]
    .boxed();
    prop_oneof![
        1 => Just(None),
        2 => json_value().prop_map(Some),
        3 => targeted.prop_map(Some),
        4 => well_formed.prop_map(Some),
    ]
    .boxed()
}

/// A JSON object with a `type`, maybe a `payload`, maybe more.
fn message() -> BoxedStrategy<Value> {
    (message_type(), payload(), prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..2))
        .prop_map(|(kind, payload, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.insert("type".into(), Value::from(kind));
            if let Some(p) = payload {
                m.insert("payload".into(), p);
            }
            Value::Object(m)
        })
        .boxed()
}

/// A text frame: anything, any JSON value, or a message-shaped object.
fn frame() -> BoxedStrategy<String> {
    prop_oneof![
        1 => any::<String>(),
        1 => r#"[{}\[\]":,a-z0-9 \\]{0,40}"#,
        2 => json_value().prop_map(|v| v.to_string()),
        12 => message().prop_map(|v| v.to_string()),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------
// The parsers, directly
// ---------------------------------------------------------------------------------

proptest! {
    // Integration tests have no lib.rs next to them for proptest's regression files.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(text in frame()) {
        if let Some(envelope) = parse_envelope(&text) {
            let _ = parse_object::<Credentials>(envelope.payload);
            let _ = parse_object::<Value>(envelope.payload);
            let _ = parse_string(envelope.payload);
        }
    }

    #[test]
    fn envelope_is_any_object_with_a_string_type(value in prop_oneof![json_value(), message()]) {
        let expected = value.as_object().and_then(|o| o.get("type")).and_then(Value::as_str);
        let text = value.to_string();
        let parsed = parse_envelope(&text);
        prop_assert_eq!(parsed.as_ref().map(|e| e.kind.as_ref()), expected);
        // The payload reaches the handler as written (compared as text: floats do not
        // survive a parse and print exactly).
        let payload = value.get("payload").filter(|p| !p.is_null()).map(Value::to_string);
        if let Some(envelope) = parsed {
            prop_assert_eq!(envelope.payload.map(|p| p.get().to_owned()), payload);
        }
    }

    #[test]
    fn payload_parsers_take_exactly_strings_and_objects(value in json_value()) {
        let raw = serde_json::value::to_raw_value(&value).unwrap();
        prop_assert_eq!(parse_string(Some(&raw)), value.as_str().map(str::to_owned));
        prop_assert_eq!(parse_object::<Value>(Some(&raw)).is_some(), value.is_object());
        prop_assert_eq!(parse_string(None), None);
    }
}

// ---------------------------------------------------------------------------------
// A live node
// ---------------------------------------------------------------------------------

const REGISTRATION_ERRORS: [&str; 6] = [
    "Invalid registration format",
    "Username must be at least 3 characters",
    "Password must be at least 6 characters",
    "Username already exists",
    "Email already registered",
    "Registration failed due to a server error",
];
const LOGIN_ERRORS: [&str; 5] = [
    "Invalid login format",
    "Invalid username or password",
    "Too many attempts, try again later",
    "Server busy, try again later",
    "Server error, try again later",
];
const TOKEN_ERRORS: [&str; 4] = [
    "Invalid token format",
    "Invalid or expired token",
    "Too many attempts, try again later",
    "Server error, try again later",
];

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    k.sort_unstable();
    k
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 36 && uuid::Uuid::parse_str(s).is_ok())
}

/// Whether `reply` is one of the contract's messages, exactly: its type, its keys,
/// and for errors the exact message (and code) text.
fn contract_shape(reply: &Value) -> Result<(), String> {
    let p = &reply["payload"];
    let s = |v: &Value| v.is_string();
    let ok = match reply["type"].as_str() {
        Some("error") => {
            keys(reply) == ["payload", "type"]
                && keys(p) == ["code", "message"]
                && match (p["code"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or("")) {
                    ("BAD_MESSAGE", m) => m == "Invalid message format",
                    ("AUTH_REQUIRED", m) => m == "Authentication required",
                    ("UNKNOWN_TYPE", m) => m == "Unknown message type",
                    ("SERVER_ERROR", m) => m == "Server error, try again later",
                    ("BAD_QUEUE", m) => m == "Unknown queue",
                    ("MATCH_PENDING", m) => m == "Match already found",
                    ("RATE_LIMITED", m) => {
                        m == "Too many messages, slow down" || m == "Too many matches, try again later"
                    }
                    ("REGISTRATION_ERROR", m) => REGISTRATION_ERRORS.contains(&m),
                    _ => false,
                }
        }
        Some("auth_error") => {
            let m = p["message"].as_str().unwrap_or("");
            keys(reply) == ["payload", "type"]
                && keys(p) == ["message"]
                && (LOGIN_ERRORS.contains(&m) || TOKEN_ERRORS.contains(&m))
        }
        Some("auth_success") => {
            keys(reply) == ["payload", "type"]
                && keys(p) == ["token", "username"]
                && s(&p["username"])
                && is_uuid(&p["token"])
        }
        Some("register_success") => {
            keys(reply) == ["payload", "type"]
                && keys(p) == ["autoLogin", "message", "success", "token", "username"]
                && p["success"] == true
                && p["autoLogin"] == true
                && p["message"] == "Registration successful"
                && s(&p["username"])
                && is_uuid(&p["token"])
        }
        Some("display_name_updated") => keys(reply) == ["payload", "type"] && s(p),
        Some("logged_out") => keys(reply) == ["type"],
        Some("player_count") => keys(reply) == ["payload", "type"] && p.is_u64(),
        Some("queued" | "dequeued") => keys(reply) == ["type"],
        Some("queue_status") => {
            keys(reply) == ["payload", "type"]
                && match p["queued"].as_bool() {
                    Some(true) => {
                        keys(p) == ["position", "queue", "queued", "waiting_secs"]
                            && s(&p["queue"])
                            && p["position"].is_u64()
                            && p["waiting_secs"].is_u64()
                    }
                    Some(false) => keys(p) == ["queued"],
                    None => false,
                }
        }
        Some("global_chat" | "private_chat") => {
            keys(reply) == ["payload", "type"]
                && keys(p) == ["account", "message", "username"]
                && s(&p["username"])
                && s(&p["message"])
                && s(&p["account"])
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("not a contract reply: {reply}"))
    }
}

/// The direct reply (if any) the contract allows for `frame` on a connection that is
/// or is not authenticated. Chat pushes are checked separately.
fn allowed_reply(frame: &str, authenticated: bool, reply: Option<&Value>) -> Result<(), String> {
    let error_code = |r: &Value| r["payload"]["code"].as_str().map(str::to_owned);
    let is_error = |r: &Value, code: &str| r["type"] == "error" && error_code(r).as_deref() == Some(code);
    // Classified with the node's own envelope parser: serde_json's Value stops at 128
    // levels of nesting, the envelope (payload kept raw) does not, and
    // `envelope_is_any_object_with_a_string_type` pins the parser to serde_json's view
    // of everything else.
    let envelope = parse_envelope(frame);
    let kind = envelope.as_ref().map(|e| e.kind.as_ref());
    let payload_string = envelope.as_ref().and_then(|e| parse_string(e.payload));
    let Some(kind) = kind else {
        return match reply {
            Some(r) if is_error(r, "BAD_MESSAGE") => Ok(()),
            other => Err(format!("a frame that is not a typed object got {other:?}, not BAD_MESSAGE")),
        };
    };
    let ok = match (kind, reply) {
        // Anything may fail for want of a store.
        (_, Some(r)) if is_error(r, "SERVER_ERROR") => true,
        ("login", Some(r)) => {
            r["type"] == "auth_success"
                || (r["type"] == "auth_error" && LOGIN_ERRORS.contains(&r["payload"]["message"].as_str().unwrap_or("")))
        }
        ("token_auth", Some(r)) => {
            r["type"] == "auth_success"
                || (r["type"] == "auth_error" && TOKEN_ERRORS.contains(&r["payload"]["message"].as_str().unwrap_or("")))
        }
        ("register", Some(r)) => r["type"] == "register_success" || is_error(r, "REGISTRATION_ERROR"),
        (_, Some(r)) if !authenticated => is_error(r, "AUTH_REQUIRED"),
        ("set_username", r) => match payload_string.as_deref().and_then(display_name) {
            // The seed document: the reply echoes the name (in its one spelling); a
            // non-string, or a string that is no display name, is ignored.
            Some(name) => r == Some(&json!({"type": "display_name_updated", "payload": name})),
            None => r.is_none(),
        },
        ("logout", Some(r)) => r == &json!({"type": "logged_out"}),
        ("count", Some(r)) => r["type"] == "player_count",
        ("global_chat" | "private_chat", None) => true,
        ("global_chat" | "private_chat", Some(r)) => is_error(r, "BAD_MESSAGE"),
        ("join_queue", Some(r)) => {
            *r == json!({"type": "queued"})
                || ["BAD_MESSAGE", "BAD_QUEUE", "MATCH_PENDING", "RATE_LIMITED"].iter().any(|c| is_error(r, c))
        }
        ("leave_queue", Some(r)) => *r == json!({"type": "dequeued"}) || is_error(r, "MATCH_PENDING"),
        ("leave_queue", None) => true,
        ("queue_status", Some(r)) => r["type"] == "queue_status",
        (_, Some(r)) => !types().contains(&kind) && is_error(r, "UNKNOWN_TYPE"),
        (_, None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{kind:?} (authenticated: {authenticated}) got {reply:?}"))
    }
}

/// Two frames whose replies are known whatever state the connection is in: a frame
/// that is not JSON (BAD_MESSAGE) then a login without payload (Invalid login format).
/// Since a node answers in order and at most once per frame, the frame under test's
/// reply is whatever comes before this pair.
const MARK_BAD: &str = "\u{1}not json";
const MARK_LOGIN: &str = r#"{"type":"login"}"#;

fn is_mark_bad(v: &Value) -> bool {
    *v == error("Invalid message format", "BAD_MESSAGE")
}

fn is_mark_login(v: &Value) -> bool {
    *v == auth_error("Invalid login format")
}

fn is_push(v: &Value) -> bool {
    v["type"] == "global_chat" || v["type"] == "private_chat"
}

/// One connection the property drives, and whether it is authenticated.
struct Conn {
    client: Client,
    authenticated: bool,
}

/// How often each kind of direct reply came back (to see what the cases reached).
fn tally(seen: &mut BTreeMap<String, usize>, reply: Option<&Value>) {
    let key = match reply {
        None => "(no reply)".to_owned(),
        Some(r) => match r["payload"]["message"].as_str() {
            Some(m) if r["type"] == "error" || r["type"] == "auth_error" => {
                format!("{} {m}", r["type"].as_str().unwrap_or(""))
            }
            _ => r["type"].as_str().unwrap_or("?").to_owned(),
        },
    };
    *seen.entry(key).or_default() += 1;
}

impl Conn {
    /// Sends `frame`, then the marks; returns the frame's direct reply, having checked
    /// every message on the way against the contract.
    async fn exchange(&mut self, frame: &str) -> Result<Option<Value>, String> {
        self.client.send_text(frame).await;
        self.client.send_text(MARK_BAD).await;
        self.client.send_text(MARK_LOGIN).await;
        let mut direct = Vec::new();
        loop {
            let message = self.client.next_text(REPLY_TIMEOUT).await.ok_or("no reply within the timeout")?;
            contract_shape(&message)?;
            if is_push(&message) {
                continue;
            }
            direct.push(message);
            let n = direct.len();
            if n >= 2 && is_mark_bad(&direct[n - 2]) && is_mark_login(&direct[n - 1]) {
                break;
            }
            if n > 3 {
                return Err(format!("more than one reply to one frame: {direct:?}"));
            }
        }
        direct.truncate(direct.len() - 2);
        Ok(direct.pop())
    }

    /// [`exchange`](Self::exchange), checks the reply is one the contract allows for
    /// this frame, and follows the connection's authentication.
    async fn step(&mut self, frame: &str) -> Result<Option<Value>, String> {
        let reply = self.exchange(frame).await?;
        allowed_reply(frame, self.authenticated, reply.as_ref()).map_err(|e| format!("{e}\nframe: {frame}"))?;
        match reply.as_ref().and_then(|r| r["type"].as_str()) {
            Some("auth_success" | "register_success") => self.authenticated = true,
            Some("logged_out") => self.authenticated = false,
            _ => {}
        }
        Ok(reply)
    }
}

struct Live {
    /// Starts unauthenticated; replaced by a fresh one when a frame logs it in.
    anonymous: Conn,
    /// Starts authenticated; re-authenticated with `token` when a frame logs it out.
    signed_in: Conn,
    token: String,
    seen: BTreeMap<String, usize>,
    /// Set while a case runs: a case that panicked leaves the connections in an
    /// unknown state, so the next one (a shrink step) starts afresh.
    dirty: bool,
}

impl Live {
    async fn connect(node: &Endpoint) -> Live {
        let anonymous = Conn { client: node.client().await, authenticated: false };
        let mut client = node.client().await;
        let token = client.signed_up(&unique_name("fuzzer")).await;
        Live { anonymous, signed_in: Conn { client, authenticated: true }, token, seen: BTreeMap::new(), dirty: false }
    }

    async fn case(&mut self, node: &Endpoint, frame: &str) -> Result<(), String> {
        if self.dirty {
            let seen = std::mem::take(&mut self.seen);
            *self = Live::connect(node).await;
            self.seen = seen;
        }
        self.dirty = true;
        for conn in [&mut self.anonymous, &mut self.signed_in] {
            let reply = conn.step(frame).await?;
            tally(&mut self.seen, reply.as_ref());
        }
        // Back to one anonymous and one signed-in connection, which must still work.
        if self.anonymous.authenticated {
            self.anonymous = Conn { client: node.client().await, authenticated: false };
        }
        if !self.signed_in.authenticated {
            let reply = self
                .signed_in
                .exchange(&json!({"type": "token_auth", "payload": {"token": self.token}}).to_string())
                .await?;
            if reply.as_ref().map(|r| &r["type"]) != Some(&json!("auth_success")) {
                return Err(format!("could not sign in again after {frame}: {reply:?}"));
            }
            self.signed_in.authenticated = true;
        }
        match self.signed_in.exchange(r#"{"type":"count"}"#).await? {
            Some(r) if r["type"] == "player_count" => {}
            other => return Err(format!("count after {frame} answered {other:?}")),
        }
        self.dirty = false;
        Ok(())
    }
}

#[test]
fn a_live_node_answers_hostile_frames_within_the_contract() {
    // Debug builds of the nested strategies and connection futures need more than a
    // test thread's 2 MiB of stack.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(live_node_answers_hostile_frames)
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn live_node_answers_hostile_frames() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Limits out of the way so random frames reach the handlers and beyond.
    let node = rt.block_on(inproc_node(&[
        "--login-free-failures",
        "30",
        "--login-max-failures-per-account",
        "1000000",
        "--max-messages-per-sec",
        "0",
        "--chat-messages-per-sec",
        "0",
        // No match ever forms between the fuzzer's few connections.
        "--match-queues",
        "default:100",
    ]));
    let live = RefCell::new(rt.block_on(Live::connect(&node)));

    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    let result =
        runner.run(&frame(), |text| rt.block_on(live.borrow_mut().case(&node, &text)).map_err(TestCaseError::fail));
    eprintln!("replies to {} hostile frames on two connections: {:#?}", 200, live.borrow().seen);
    if let Err(e) = result {
        panic!("{e}");
    }

    // The node is still there and still serves new connections.
    let (status, _) = rt.block_on(http(node.public, "GET", "/health", None, &[])).unwrap();
    assert_eq!(status, 200);
    rt.block_on(async {
        let mut client = node.player("after").await;
        assert_eq!(client.request(json!({"type": "count"})).await["type"], "player_count");
    });
}

// ---------------------------------------------------------------------------------
// Hand-picked frames
// ---------------------------------------------------------------------------------

/// Nesting deeper than any JSON parser's recursion limit, inside the payload and at
/// the top, must neither overflow a stack nor close the connection.
#[tokio::test]
async fn deeply_nested_json_is_answered_not_crashed_on() {
    let node = inproc_node(&["--max-messages-per-sec", "0"]).await;
    let client = node.player("nester").await;
    let depth = 7000; // two bytes per level: just under the 16 KiB frame limit
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}{}", r#"{"a":"#.repeat(depth / 3), "}".repeat(depth / 3));
    let mut conn = Conn { client, authenticated: true };
    for kind in types().iter().chain(&["nope"]) {
        for payload in [&nested, &objects] {
            let frame = format!(r#"{{"type":"{kind}","payload":{payload}}}"#);
            conn.step(&frame).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }
    for frame in [&nested, &objects] {
        assert_eq!(conn.step(frame).await.unwrap(), Some(error("Invalid message format", "BAD_MESSAGE")));
    }
    // Still usable: `logout` above signed it out, so sign up again and count.
    conn.client.signed_up(&unique_name("nester")).await;
    assert_eq!(conn.client.request(json!({"type": "count"})).await["type"], "player_count");
}

/// A NUL character cannot be stored in PostgreSQL text. A name containing one is just
/// a name nobody has: the contract's reply for an unknown user, not a server error.
#[tokio::test]
async fn a_nul_in_a_name_is_an_unknown_user_not_a_server_error() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let mut client = node.client().await;
    assert_eq!(client.login("jane\u{0}doe", PASSWORD).await, auth_error("Invalid username or password"));
    let reply = client.register("jane\u{0}doe", PASSWORD).await;
    assert_ne!(reply, error("Registration failed due to a server error", "REGISTRATION_ERROR"), "{reply}");
    let metrics = node.metrics_text().await;
    assert!(
        metrics.lines().any(|l| l == r#"openchampps_store_errors_total{store="postgres"} 0"#),
        "client input counted as PostgreSQL errors:\n{}",
        metrics.lines().filter(|l| l.contains("store_errors")).collect::<Vec<_>>().join("\n")
    );
}

/// A name or email of 12 KB fits in a frame but not in a PostgreSQL index entry (at
/// most ~2.7 KB). That is the client's fault: the contract's format error, not a
/// server error (which counts as a PostgreSQL failure and costs a password hash first).
#[tokio::test]
async fn oversized_names_are_refused_as_input_not_as_server_errors() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    // Incompressible, so PostgreSQL cannot squeeze it into an index entry.
    let huge: String = (0..375).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let server_error = error("Registration failed due to a server error", "REGISTRATION_ERROR");
    let mut client = node.client().await;
    let reply = client.register(&huge, PASSWORD).await;
    assert_ne!(reply, server_error, "12 KB username");
    let reply = client
        .request(json!({"type": "register", "payload": {"username": unique_name("jane"), "password": PASSWORD, "email": huge}}))
        .await;
    assert_ne!(reply, server_error, "12 KB email");
    let body = json!({"username": huge, "password": PASSWORD}).to_string();
    let (status, _) = http(node.public, "POST", "/register", Some(&body), &[]).await.unwrap();
    assert_ne!(status, 500, "POST /register with a 12 KB username");
    let metrics = node.metrics_text().await;
    assert!(
        metrics.lines().any(|l| l == r#"openchampps_store_errors_total{store="postgres"} 0"#),
        "client input counted as PostgreSQL errors"
    );
}
