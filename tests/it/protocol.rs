//! The rest of the contract: envelope errors, registration, logout, lobby messages,
//! transport rules and the HTTP endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use openchampps::handlers::{Access, Kind, Request};
use openchampps::protocol::{
    parse_envelope, ChatLine, Credentials, PrivateMessage, QueueChoice, Registration, Reply, TokenPayload,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const BAD_MESSAGE: (&str, &str) = ("Invalid message format", "BAD_MESSAGE");

#[tokio::test]
async fn frames_that_are_not_typed_json_objects_are_bad_messages() {
    let node = inproc_node(&[]).await;
    let mut anonymous = node.client().await;
    let mut signed_in = node.player("jane").await;
    for text in [
        "not json",
        "[]",
        r#"["login"]"#,
        "42",
        r#""login""#,
        "{}",
        r#"{"type":5}"#,
        r#"{"type":null}"#,
        r#"{"payload":{}}"#,
        "{",
    ] {
        for client in [&mut anonymous, &mut signed_in] {
            client.send_text(text).await;
            assert_eq!(client.recv().await, error(BAD_MESSAGE.0, BAD_MESSAGE.1), "{text}");
        }
    }
}

#[tokio::test]
async fn unauthenticated_connections_may_only_authenticate() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let players = Kind::ALL.iter().filter(|k| k.access() == Access::Player).map(|k| k.name());
    for kind in players.chain(["no_such_type"]) {
        for payload in [json!("x"), json!({}), Value::Null] {
            let reply = client.request(json!({"type": kind, "payload": payload})).await;
            assert_eq!(reply, error("Authentication required", "AUTH_REQUIRED"), "{kind} {payload}");
        }
    }
}

/// A request of `kind` that succeeds, with what `client` needs done first.
async fn succeeding(kind: Kind, node: &InProcNode, client: &mut Client) -> Request {
    match kind {
        Kind::Login => {
            let username = unique_name("trip.login");
            node.client().await.signed_up(&username).await;
            Request::Login(Credentials { username, password: PASSWORD.into(), resume: None })
        }
        Kind::TokenAuth => {
            let token = node.client().await.signed_up(&unique_name("trip.token")).await;
            Request::TokenAuth(TokenPayload { token, resume: None })
        }
        Kind::Register => Request::Register(Registration {
            username: unique_name("trip.new"),
            password: PASSWORD.into(),
            email: None,
            resume: None,
        }),
        Kind::SetUsername => Request::SetUsername("Round Trip".into()),
        Kind::Logout => Request::Logout,
        Kind::Count => Request::Count,
        Kind::GlobalChat => Request::GlobalChat("hello".into()),
        Kind::PrivateChat => Request::PrivateChat(PrivateMessage { target: "nobody".into(), message: "hi".into() }),
        Kind::JoinQueue => Request::JoinQueue(QueueChoice::default()),
        Kind::LeaveQueue => {
            assert_eq!(client.ask(Request::JoinQueue(QueueChoice::default())).await, json!({"type": "queued"}));
            Request::LeaveQueue
        }
        Kind::QueueStatus => Request::QueueStatus,
    }
}

/// `docs/PROTOCOL.md`'s message table: type => (needs authentication, reply cell).
fn documented_messages() -> BTreeMap<String, (bool, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let section = doc.split("## Message types").nth(1).expect("docs/PROTOCOL.md has a '## Message types' section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), (cells[2] == "yes", cells[3].to_owned()))
        })
        .collect()
}

/// Every line of the message table, through a node and the doc: the request a client
/// builds carries the line's wire type and a payload the line's type decodes (the
/// node answers it with success), the reply is the line's, and `docs/PROTOCOL.md`
/// has the line's row (type, authentication, reply), and no other.
#[tokio::test]
async fn every_message_kind_round_trips_through_the_table_the_node_and_the_doc() {
    let node = inproc_node(&[]).await;
    let documented = documented_messages();
    let table: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(documented.keys().map(String::as_str).collect::<BTreeSet<_>>(), table, "docs/PROTOCOL.md's rows");
    for &kind in Kind::ALL {
        let name = kind.name();
        let player = kind.access() == Access::Player;
        let mut client = if player { node.player("trip").await } else { node.client().await };
        let request = succeeding(kind, &node, &mut client).await;

        // The request as a client builds it.
        let text = request.to_json();
        assert_eq!(request.kind(), kind);
        let envelope = parse_envelope(&text).expect("a typed object");
        assert_eq!((envelope.kind.as_ref(), Kind::from_type(&envelope.kind)), (name, Some(kind)), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).expect(&text).kind(), kind);

        // The node's answer, up to a marker frame: pushed chat aside, at most one reply.
        client.send_text(&text).await;
        client.send_text("not json").await;
        let mut replies = Vec::new();
        loop {
            let frame = client.recv().await;
            if frame == error(BAD_MESSAGE.0, BAD_MESSAGE.1) {
                break;
            }
            let reply = Reply::parse(&frame.to_string()).unwrap_or_else(|| panic!("{name}: not a reply: {frame}"));
            if !matches!(reply, Reply::GlobalChat(_) | Reply::PrivateChat(_)) {
                replies.push((frame["type"].as_str().unwrap().to_owned(), reply));
            }
        }
        assert!(replies.len() <= 1, "{name}: {replies:?}");
        let reply = replies.first();
        assert!(kind.answers_with(reply.map(|(_, r)| r)), "{name} answered {reply:?}");

        // Its row in the doc.
        let (needs_auth, replies_cell) = &documented[name];
        assert_eq!(*needs_auth, player, "docs/PROTOCOL.md: does {name} need authentication?");
        let first = reply.map_or("nothing".to_owned(), |(wire, _)| format!("`{wire}`"));
        assert!(replies_cell.starts_with(&first), "docs/PROTOCOL.md: {name} replies {replies_cell:?}, not {first}");

        // A player's message on a connection that is not authenticated.
        if player {
            let mut anonymous = node.client().await;
            anonymous.send_request(&request).await;
            assert_eq!(anonymous.recv().await, error("Authentication required", "AUTH_REQUIRED"), "{name}");
        }
    }
}

#[tokio::test]
async fn unknown_types_are_named_once_authenticated() {
    let node = inproc_node(&[]).await;
    let mut client = node.player("jane").await;
    let reply = client.request(json!({"type": "no_such_type"})).await;
    assert_eq!(reply, error("Unknown message type", "UNKNOWN_TYPE"));
}

#[tokio::test]
async fn register_logs_the_connection_in() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let name = unique_name("john.smith");
    let reply = client
        .request(json!({"type": "register", "payload": {"username": name, "password": "mySecurePass456", "email": format!("{name}@example.com")}}))
        .await;
    let token = reply["payload"]["token"].as_str().expect("token").to_owned();
    assert_eq!(
        reply,
        json!({"type": "register_success", "payload": {"success": true, "message": "Registration successful", "autoLogin": true, "username": name, "token": token}})
    );
    assert_eq!(client.request(json!({"type": "count"})).await["type"], "player_count");
    // The account works for login and the token for token_auth.
    assert_eq!(node.client().await.login(&name, "mySecurePass456").await["type"], "auth_success");
    assert_eq!(node.client().await.token_auth(&token).await["type"], "auth_success");
}

#[tokio::test]
async fn register_errors_match_the_contract() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let reg = |m: &str| error(m, "REGISTRATION_ERROR");
    for payload in [
        json!(null),
        json!("x"),
        json!(["a", "b"]),
        json!({"username": "abc"}),
        json!({"username": 1, "password": "secret1"}),
        json!({"username": "abcd", "password": "secret1", "email": 5}),
    ] {
        let reply = client.request(json!({"type": "register", "payload": payload})).await;
        assert_eq!(reply, reg("Invalid registration format"), "{payload}");
    }
    assert_eq!(client.request(json!({"type": "register"})).await, reg("Invalid registration format"));
    assert_eq!(client.register("ab", "secret1").await, reg("Username must be at least 3 characters"));
    assert_eq!(client.register("abc", "12345").await, reg("Password must be at least 6 characters"));
    let name = unique_name("taken");
    client.signed_up(&name).await;
    assert_eq!(node.client().await.register(&name, "secret1").await, reg("Username already exists"));
    assert_eq!(node.client().await.register(&name.to_uppercase(), "secret1").await, reg("Username already exists"));
}

#[tokio::test]
async fn duplicate_emails_are_refused_when_email_validation_is_on() {
    let node = inproc_node(&["--email-validation", "true"]).await;
    let email = format!("{}@example.com", unique_name("mail"));
    let first =
        json!({"type": "register", "payload": {"username": unique_name("a"), "password": "secret1", "email": email}});
    assert_eq!(node.client().await.request(first).await["type"], "register_success");
    let second =
        json!({"type": "register", "payload": {"username": unique_name("b"), "password": "secret1", "email": email}});
    assert_eq!(node.client().await.request(second).await, error("Email already registered", "REGISTRATION_ERROR"));
}

#[tokio::test]
async fn http_register_matches_the_contract() {
    let node = inproc_node(&[]).await;
    let name = unique_name("http.user");
    let body = json!({"username": name, "password": "mySecurePass456"}).to_string();
    let (status, headers, text) = http_full(node.public, "POST", "/register", Some(&body), &[]).await.unwrap();
    assert_eq!(status, 201);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"status": "success", "message": "User registered successfully"})
    );
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/json")));

    let cases = [
        ("POST", Some("not json"), 400, "Invalid request body"),
        ("POST", Some("[1]"), 400, "Invalid request body"),
        (
            "POST",
            Some(r#"{"username":"ab","password":"secret1"}"#),
            400,
            "Username must be at least 3 characters and password at least 6 characters",
        ),
        (
            "POST",
            Some(r#"{"username":"abcd","password":"123"}"#),
            400,
            "Username must be at least 3 characters and password at least 6 characters",
        ),
        ("POST", Some(body.as_str()), 409, "Username or email already exists"),
        ("GET", None, 405, "Method not allowed"),
        ("PUT", Some(body.as_str()), 405, "Method not allowed"),
    ];
    for (method, body, status, message) in cases {
        let (got, headers, text) = http_full(node.public, method, "/register", body, &[]).await.unwrap();
        assert_eq!((got, text.as_str()), (status, message), "{method} {body:?}");
        assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/plain")));
    }
    assert_eq!(node.client().await.login(&name, "mySecurePass456").await["type"], "auth_success");
}

#[tokio::test]
async fn logout_keeps_the_token_valid() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let token = client.signed_up(&unique_name("jane")).await;
    assert_eq!(client.request(json!({"type": "logout"})).await, json!({"type": "logged_out"}));
    assert_eq!(client.request(json!({"type": "count"})).await, error("Authentication required", "AUTH_REQUIRED"));
    assert_eq!(client.request(json!({"type": "logout"})).await, error("Authentication required", "AUTH_REQUIRED"));
    assert_eq!(client.token_auth(&token).await["type"], "auth_success");
}

#[tokio::test]
async fn count_follows_authenticated_connections() {
    let node = inproc_node(&[]).await;
    let mut first = node.player("a").await;
    let _anonymous = node.client().await;
    let mut second = node.player("b").await;
    assert!(count_becomes(&mut first, 2).await);
    second.request(json!({"type": "logout"})).await;
    assert!(count_becomes(&mut first, 1).await);
}

async fn count_becomes(client: &mut Client, expected: u64) -> bool {
    for _ in 0..50 {
        let reply = client.request(json!({"type": "count"})).await;
        if reply == json!({"type": "player_count", "payload": expected}) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn global_chat_reaches_every_authenticated_connection() {
    let node = inproc_node(&[]).await;
    let mut alice = node.client().await;
    let alice_name = unique_name("alice");
    alice.signed_up(&alice_name).await;
    let mut bob = node.player("bob").await;
    let mut anonymous = node.client().await;

    alice.send(json!({"type": "global_chat", "payload": "hello \"all\""})).await;
    let line = ChatLine {
        username: alice_name.as_str().into(),
        message: "hello \"all\"".into(),
        account: alice_name.as_str().into(),
    };
    let expected = reply(Reply::GlobalChat(line));
    assert_eq!(alice.recv().await, expected);
    assert_eq!(bob.recv().await, expected);
    anonymous.expect_silence(Duration::from_millis(300)).await;

    for payload in [json!(""), json!(null), json!(5), json!({"message": "x"})] {
        let reply = alice.request(json!({"type": "global_chat", "payload": payload})).await;
        assert_eq!(reply, error(BAD_MESSAGE.0, BAD_MESSAGE.1), "{payload}");
    }
    assert_eq!(alice.request(json!({"type": "global_chat"})).await, error(BAD_MESSAGE.0, BAD_MESSAGE.1));
}

#[tokio::test]
async fn private_chat_reaches_only_the_target() {
    let node = inproc_node(&[]).await;
    let mut alice = node.client().await;
    let alice_name = unique_name("alice");
    alice.signed_up(&alice_name).await;
    let mut bob = node.player("bob").await;
    bob.request(json!({"type": "set_username", "payload": "Bobby"})).await;
    let mut carol = node.player("carol").await;

    alice.send(json!({"type": "private_chat", "payload": {"target": "Bobby", "message": "psst"}})).await;
    assert_eq!(
        bob.recv().await,
        reply(Reply::PrivateChat(ChatLine {
            username: alice_name.as_str().into(),
            message: "psst".into(),
            account: alice_name.as_str().into()
        }))
    );
    alice.send(json!({"type": "private_chat", "payload": {"target": "nobody-online", "message": "hello?"}})).await;
    alice.expect_silence(Duration::from_millis(300)).await;
    carol.expect_silence(Duration::from_millis(10)).await;

    for payload in [
        json!("Bobby"),
        json!(null),
        json!({"target": "Bobby"}),
        json!({"message": "x"}),
        json!({"target": 1, "message": "x"}),
    ] {
        let reply = alice.request(json!({"type": "private_chat", "payload": payload})).await;
        assert_eq!(reply, error(BAD_MESSAGE.0, BAD_MESSAGE.1), "{payload}");
    }
}

#[tokio::test]
async fn replies_come_in_the_order_messages_were_sent() {
    let node = inproc_node(&[]).await;
    let name = unique_name("jane");
    node.client().await.signed_up(&name).await;
    let mut client = node.client().await;
    // A slow login followed at once by fast messages: their replies must wait their turn.
    client.send(json!({"type": "count"})).await;
    client.send(json!({"type": "login", "payload": {"username": name, "password": PASSWORD}})).await;
    for i in 0..20 {
        client.send(json!({"type": "set_username", "payload": format!("n{i}")})).await;
    }
    client.send(json!({"type": "count"})).await;
    assert_eq!(client.recv().await, error("Authentication required", "AUTH_REQUIRED"));
    assert_eq!(client.recv().await["type"], "auth_success");
    for i in 0..20 {
        assert_eq!(client.recv().await, json!({"type": "display_name_updated", "payload": format!("n{i}")}));
    }
    assert_eq!(client.recv().await["type"], "player_count");
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    let big = format!(r#"{{"type":"set_username","payload":"{}"}}"#, "x".repeat(17 * 1024));
    let _ = client.send_message(Message::text(big)).await;
    assert_eq!(client.expect_close().await, Some(CloseCode::Size));

    // Just under the limit is read (the name is too long to be one: ignored).
    let mut client = node.player("jane").await;
    let name = "y".repeat(16 * 1024 - 64);
    client.send(json!({"type": "set_username", "payload": name})).await;
    assert_eq!(client.request(json!({"type": "count"})).await["type"], "player_count");
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let node = inproc_node(&[]).await;
    let mut client = node.client().await;
    client.send_message(Message::binary(br#"{"type":"count"}"#.to_vec())).await.unwrap();
    assert_eq!(client.expect_close().await, Some(CloseCode::Unsupported));
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed() {
    let node = inproc_node(&["--ping-interval-secs", "1", "--ping-timeout-secs", "2"]).await;
    // A client that reads (and so answers pings) stays connected past the timeout.
    let mut lively = node.player("lively").await;
    lively.expect_silence(Duration::from_secs(3)).await;
    assert_eq!(lively.request(json!({"type": "count"})).await["type"], "player_count");

    // One that never answers is closed.
    let (stream, _) = tokio_tungstenite::connect_async(node.ws_url()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut silent = stream;
    use futures_util::StreamExt;
    let mut saw_ping = false;
    let mut closed = false;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(2), silent.next()).await {
        match frame {
            Ok(Message::Ping(_)) => saw_ping = true,
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(saw_ping, "no ping from the server");
    assert!(closed, "silent connection was not closed");
}

#[tokio::test]
async fn connections_that_never_authenticate_are_closed() {
    let node = inproc_node(&["--auth-timeout-secs", "1"]).await;
    let mut client = node.client().await;
    assert_eq!(client.expect_close().await, Some(CloseCode::Policy));
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_503() {
    let node = inproc_node(&["--max-connections", "2"]).await;
    let _a = node.client().await;
    let _b = node.client().await;
    let refused = tokio_tungstenite::connect_async(node.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503, got {other:?}"),
    }
}

#[tokio::test]
async fn health_ready_and_metrics_endpoints() {
    // A node process of its own: metrics are per process, and in-process nodes share one recorder.
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let (status, headers, body) = http_full(node.public, "GET", "/health", None, &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "OK"));
    assert!(headers.contains(&("content-type".into(), "text/plain; charset=utf-8".into())));

    let (status, body) = http(node.public, "GET", "/ready", None, &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ready", "postgres": "up", "redis": "up"})
    );

    // Metrics live on the side port only.
    assert_eq!(http(node.public, "GET", "/metrics", None, &[]).await.unwrap().0, 404);
    let mut client = node.player("jane").await;
    client.login("nobody-here", "wrongPassword").await;
    let text = node.metrics_text().await;
    assert!(text.contains(r#"openchampps_auth_attempts_total{method="register",result="success"} 1"#), "{text}");
    assert!(
        text.contains(r#"openchampps_auth_attempts_total{method="login",result="invalid_credentials"} 1"#),
        "{text}"
    );
    assert!(text.contains("openchampps_connections_open 1"), "{text}");
}

#[tokio::test]
async fn plain_http_on_the_websocket_path_is_told_to_upgrade() {
    let node = inproc_node(&[]).await;
    assert_eq!(http(node.public, "GET", "/ws", None, &[]).await.unwrap().0, 426);
    assert_eq!(http(node.public, "GET", "/nope", None, &[]).await.unwrap().0, 404);
}
