//! Hostile players: each test performs one attack against real nodes, PostgreSQL
//! and Redis, and shows it fails. A valid credential from an innocent player is never
//! refused because of what someone else did.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOO_MANY: &str = "Too many attempts, try again later";
const BAD_CREDENTIALS: &str = "Invalid username or password";
const INVALID_TOKEN: &str = "Invalid or expired token";

/// Players behind one load balancer: the node trusts loopback as the proxy.
const BEHIND_PROXY: (&str, &str) = ("TRUSTED_PROXIES", "127.0.0.0/8");

async fn from(node: &NodeProc, address: &str) -> Client {
    Client::connect_with_headers(&node.ws_url(), &[("X-Forwarded-For", address)]).await
}

fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

// 1. No lock-out through a shared address -------------------------------------------

/// Bogus tokens and other accounts' wrong passwords from one address (every player's,
/// behind an ingress without trusted proxies) never refuse a neighbour's valid token
/// or correct password.
#[tokio::test]
async fn a_flood_of_failures_from_a_shared_address_locks_nobody_out() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let jane = unique_name("jane");
    let token = node.client().await.signed_up(&jane).await;

    let mut attacker = node.client().await;
    for _ in 0..60 {
        let reply = attacker.token_auth(&uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(reply, auth_error(INVALID_TOKEN));
        tokio::time::sleep(Duration::from_millis(60)).await; // within the message rate
    }
    let mut attacker = node.client().await;
    for _ in 0..20 {
        assert_eq!(attacker.login(&unique_name("victim"), "wrongPassword").await, auth_error(BAD_CREDENTIALS));
        let other = unique_name("other");
        node.client().await.signed_up(&other).await;
        assert_eq!(attacker.login(&other, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Same address, innocent player: the valid token and the right password work.
    assert_eq!(node.client().await.token_auth(&token).await["type"], "auth_success");
    assert_eq!(node.client().await.login(&jane, PASSWORD).await["type"], "auth_success");
}

// 2. No lock-out of a victim's account ------------------------------------------------

/// Ten attacker addresses keep guessing Jane's password; Jane, from her own address,
/// still gets in.
#[tokio::test]
async fn attackers_on_ten_addresses_do_not_lock_out_the_account() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[BEHIND_PROXY, ("LOGIN_BACKOFF_MAX_SECS", "1")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;

    let mut refused = 0;
    for round in 0..4 {
        for attacker in 0..10 {
            let mut client = from(&node, &format!("203.0.113.{attacker}")).await;
            let reply = client.login(&jane, "wrongPassword").await;
            if reply == auth_error(TOO_MANY) {
                refused += 1;
            } else {
                assert_eq!(reply, auth_error(BAD_CREDENTIALS), "round {round}");
            }
        }
    }
    eprintln!("40 guesses from 10 addresses: {refused} throttled");
    assert_eq!(from(&node, "198.51.100.1").await.login(&jane, PASSWORD).await["type"], "auth_success");
}

/// 120 concurrent wrong logins from one address against one account: the guesses are
/// counted before the hash, so only the free ones are checked, and a correct password
/// inside the burst is not let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_is_counted_before_the_hash() {
    let cluster = Cluster::new().await;
    // A queue long enough that no guess is turned away as busy: only the throttle acts.
    let node = cluster.node_with(&[("LOGIN_FREE_FAILURES", "5"), ("HASH_QUEUE", "200")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    let hashes = r#"openchampps_hash_duration_seconds_count"#;
    let redis_errors = r#"openchampps_store_errors_total{store="redis"}"#;
    let scrape = node.metrics_text().await;
    let (before, errors_before) = (metric(&scrape, hashes), metric(&scrape, redis_errors));

    let go = std::sync::Arc::new(tokio::sync::Barrier::new(121));
    let mut tasks = Vec::new();
    for i in 0..121 {
        let (url, go, jane) = (node.ws_url(), go.clone(), jane.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await;
            go.wait().await;
            let password = if i == 60 { PASSWORD } else { "wrongPassword" };
            client.login(&jane, password).await
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let scrape = node.metrics_text().await;
    let checked = metric(&scrape, hashes) - before;
    // A Redis reply later than its timeout (a busy machine) sends the node to its own
    // counters (`WithLocalFallback`), which went on counting this node's guesses: the
    // bound holds either way.
    let fell_back = metric(&scrape, redis_errors) > errors_before;
    // The burst's correct password, when it is checked, clears its pair as any
    // successful login does: the wrong guesses still waiting get the free ones once more
    // (no attacker can do that without the password).
    let succeeded = replies[60]["type"] == "auth_success";
    let free = 5 * (1 + usize::from(succeeded));
    let count = |text: &str| replies.iter().filter(|r| **r == auth_error(text)).count();
    let (wrong, throttled, busy) = (count(BAD_CREDENTIALS), count(TOO_MANY), count("Server busy, try again later"));
    eprintln!(
        "121 concurrent guesses: {checked} password checks, {wrong} wrong, {throttled} throttled, {busy} busy \
         (Redis errors meanwhile: {fell_back})"
    );
    assert!(checked <= (free + usize::from(succeeded)) as f64, "{checked} passwords were checked");
    assert!(wrong <= free, "{wrong} guesses were checked");
    assert_eq!(busy, 0);
    assert_eq!(wrong + throttled + usize::from(replies[60]["type"] == "auth_success"), 121);
    assert!(
        replies[60] == auth_error(TOO_MANY) || replies[60]["type"] == "auth_success",
        "the burst's correct password: {}",
        replies[60]
    );
}

/// The throttle counts the stored account, however its name is typed.
#[tokio::test]
async fn guesses_count_against_the_account_whatever_the_spelling() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("LOGIN_FREE_FAILURES", "3")]).await;
    let jane = unique_name("İzmir_jane");
    node.client().await.signed_up(&jane).await;
    let mut client = node.client().await;
    let spellings = [jane.to_uppercase(), jane.clone(), jane.replace("jane", "JANE")];
    for spelling in &spellings {
        assert_eq!(client.login(spelling, "wrongPassword").await, auth_error(BAD_CREDENTIALS), "{spelling}");
    }
    assert_eq!(client.login(&jane.replace("jane", "Jane"), PASSWORD).await, auth_error(TOO_MANY));
}

// 3. No interception or impersonation by display name ------------------------------

/// Bob takes Jane's account name as his display name: private messages to "jane"
/// still reach only Jane, on any node, and his chat shows his own account.
#[tokio::test]
async fn a_display_name_cannot_capture_another_accounts_messages() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let mut jane = a.client().await;
    let jane_name = unique_name("jane");
    jane.signed_up(&jane_name).await;
    let mut bob = b.client().await;
    let bob_name = unique_name("bob");
    bob.signed_up(&bob_name).await;
    assert_eq!(
        bob.request(json!({"type": "set_username", "payload": jane_name})).await["type"],
        "display_name_updated"
    );
    let mut carol = b.player("carol").await;

    carol.send(json!({"type": "private_chat", "payload": {"target": jane_name, "message": "for jane"}})).await;
    let got = jane.recv().await;
    assert_eq!(got["payload"]["message"], "for jane");
    bob.expect_silence(Duration::from_millis(500)).await;

    // A display name that is nobody's account name still works as a target.
    assert_eq!(
        jane.request(json!({"type": "set_username", "payload": "JaneTheGreat"})).await["type"],
        "display_name_updated"
    );
    carol.send(json!({"type": "private_chat", "payload": {"target": "JaneTheGreat", "message": "hi"}})).await;
    assert_eq!(jane.recv().await["payload"]["message"], "hi");

    // Global chat says who really wrote it.
    bob.send(json!({"type": "global_chat", "payload": "I am jane"})).await;
    let line = carol.recv().await;
    assert_eq!(line, chat("global_chat", &jane_name, &bob_name, "I am jane"));
}

// 4. Chat has limits -------------------------------------------------------------------

#[tokio::test]
async fn chat_past_the_rate_or_the_length_is_refused() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("CHAT_MESSAGES_PER_SEC", "5"), ("CHAT_BURST", "10")]).await;
    let mut player = node.player("chatty").await;
    let rate_limited = error("Too many messages, slow down", "RATE_LIMITED");
    let mut refused = 0;
    for i in 0..15 {
        player.send(json!({"type": "global_chat", "payload": format!("m{i}")})).await;
    }
    for _ in 0..15 {
        let reply = player.recv().await;
        if reply == rate_limited {
            refused += 1;
        } else {
            assert_eq!(reply["type"], "global_chat");
        }
    }
    assert!((4..=5).contains(&refused), "{refused} of 15 refused with a burst of 10");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let long = "x".repeat(501);
    assert_eq!(
        player.request(json!({"type": "global_chat", "payload": long})).await,
        error("Invalid message format", "BAD_MESSAGE")
    );
    let private = json!({"type": "private_chat", "payload": {"target": "someone", "message": long}});
    assert_eq!(player.request(private).await, error("Invalid message format", "BAD_MESSAGE"));
    // 500 characters (not bytes) is fine.
    player.send(json!({"type": "global_chat", "payload": "é".repeat(500)})).await;
    assert_eq!(player.recv().await["type"], "global_chat");
}

/// One account floods chat from many connections at full speed; a player reading
/// 100 messages a second is not cut off as too slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_flood_from_one_account_does_not_cut_off_readers() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let spammer = unique_name("spammer");
    let token = node.client().await.signed_up(&spammer).await;
    let mut reader = node.player("reader").await;

    let text = "x".repeat(500);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let mut conn = node.client().await;
        conn.token_auth(&token).await;
        let text = text.clone();
        floods.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if conn.send_message(json!({"type": "global_chat", "payload": text}).to_string().into()).await.is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await; // within the connection's message rate
            }
        }));
    }
    let started = Instant::now();
    let mut read = 0;
    while started.elapsed() < Duration::from_secs(5) {
        match reader.next_frame(Duration::from_millis(10)).await {
            Frame::Text(_) => read += 1,
            Frame::Closed(code) => panic!("reader cut off after {read} messages: {code:?}"),
            Frame::Nothing => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // about 100 a second
    }
    for flood in floods {
        flood.await.unwrap();
    }
    eprintln!("reader read {read} chat messages in 5 s");
    // The account's 5 a second (plus its burst) is all that went out.
    assert!(read <= 5 * 6 + 10, "{read} messages from one account in 5 s");
    // Still served (a chat line still on its way may come first).
    reader.send(json!({"type": "count"})).await;
    assert_eq!(reader.next_of("player_count").await["type"], "player_count");
}

// 5. A session ends with its token -----------------------------------------------------

async fn expect_session_ended(client: &mut Client, within: Duration) {
    let started = Instant::now();
    loop {
        match client.next_frame(within.saturating_sub(started.elapsed())).await {
            Frame::Text(v) if v == auth_error(INVALID_TOKEN) => break,
            Frame::Text(_) => continue,
            other => panic!("no auth_error within {within:?}: {other:?}"),
        }
    }
    eprintln!("session ended {:?} after the token did", started.elapsed());
    let reply = client.request(json!({"type": "count"})).await;
    assert_eq!(reply, error("Authentication required", "AUTH_REQUIRED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_ends_its_live_sessions_on_every_node() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let jane = unique_name("jane");
    let token = a.client().await.signed_up(&jane).await;
    let mut on_a = a.client().await;
    on_a.token_auth(&token).await;
    let mut on_b = b.client().await;
    on_b.login(&jane, PASSWORD).await;
    let mut bystander = b.player("bystander").await;

    let out = cluster.revoke(&["--user", &jane]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    expect_session_ended(&mut on_a, Duration::from_secs(5)).await;
    expect_session_ended(&mut on_b, Duration::from_secs(5)).await;
    // It may log in again, and others were never touched.
    let again = on_a.login(&jane, PASSWORD).await;
    assert_eq!(again["type"], "auth_success");
    assert_eq!(bystander.request(json!({"type": "count"})).await["type"], "player_count");

    // The other form: one token.
    let token = again["payload"]["token"].as_str().unwrap().to_owned();
    let out = cluster.revoke(&["--token", &token]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    expect_session_ended(&mut on_a, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_expiring_token_ends_its_session() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("TOKEN_TTL_SECS", "2")]).await;
    let mut jane = node.client().await;
    jane.signed_up(&unique_name("jane")).await;
    expect_session_ended(&mut jane, Duration::from_secs(7)).await;
}

#[tokio::test]
async fn deleting_a_user_ends_its_sessions() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let name = unique_name("jane");
    let mut jane = node.client().await;
    jane.signed_up(&name).await;
    let db = cluster.psql().await;
    db.execute("DELETE FROM users WHERE username = $1", &[&name]).await.unwrap();
    expect_session_ended(&mut jane, Duration::from_secs(5)).await;
}

// 6. Every connection and request is bounded in time and rate ----------------------

/// A client that stops reading while chat piles up in its socket is closed within the
/// ping timeout, even though its queue never fills: by the write that waited that long
/// once its socket is full ("client too slow"), or, when the socket has room for
/// everything sent so far, by the pongs it never sends ("ping timeout"). Which comes
/// first depends on how fast the machine fills the socket; both end the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_within_the_ping_timeout() {
    let cluster = Cluster::new().await;
    let node = cluster
        .node_with(&[
            ("PING_INTERVAL_SECS", "1"),
            ("PING_TIMEOUT_SECS", "2"),
            ("OUTGOING_QUEUE", "1000000"),
            ("MAX_MESSAGES_PER_SEC", "0"),
            ("CHAT_MESSAGES_PER_SEC", "0"),
            ("CHAT_MAX_CHARS", "16000"),
        ])
        .await;
    let _sleeper = node.player("sleeper").await; // never reads again
    let mut talker = node.player("talker").await;
    let closed_for = |text: &str| {
        ["client too slow", "ping timeout"]
            .map(|reason| metric(text, &format!(r#"openchampps_connections_closed_total{{reason="{reason}"}}"#)))
            .iter()
            .sum::<f64>()
    };
    let text = "z".repeat(15_000);
    let started = Instant::now();
    // The talker reads its own echoes; the sleeper's socket buffers fill up.
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(20) {
        for _ in 0..20 {
            talker.send(json!({"type": "global_chat", "payload": text})).await;
        }
        for _ in 0..20 {
            talker.recv().await;
        }
        if closed_for(&node.metrics_text().await) >= 1.0 {
            closed = true;
            break;
        }
    }
    eprintln!("sleeper closed after {:?}", started.elapsed());
    assert!(closed, "a client that does not read was never closed");
}

/// A `POST /register` body trickled byte by byte is cut off after the body timeout.
#[tokio::test]
async fn a_trickled_request_body_is_cut_off() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let mut stream = tokio::net::TcpStream::connect(node.public).await.unwrap();
    let head = "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answered = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(b" ").await.is_err() {
            answered = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await
        {
            if n > 0 {
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
                answered = true;
                break;
            }
        }
    }
    assert!(answered, "the trickled body was still being read after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "cut off after {:?}", started.elapsed());
}

#[tokio::test]
async fn registrations_per_address_are_limited() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[BEHIND_PROXY, ("REGISTRATIONS_PER_ADDRESS", "3")]).await;
    let mut client = from(&node, "203.0.113.5").await;
    for _ in 0..3 {
        assert_eq!(client.register(&unique_name("bot"), PASSWORD).await["type"], "register_success");
    }
    let reply = client.register(&unique_name("bot"), PASSWORD).await;
    assert_eq!(reply, error("Too many registrations, try again later", "RATE_LIMITED"));
    let body = json!({"username": unique_name("bot"), "password": PASSWORD}).to_string();
    let (status, text) =
        http(node.public, "POST", "/register", Some(&body), &[("X-Forwarded-For", "203.0.113.5")]).await.unwrap();
    assert_eq!((status, text.as_str()), (429, "Too many registrations, try again later"));
    // Another address registers as usual.
    assert_eq!(
        from(&node, "203.0.113.6").await.register(&unique_name("player"), PASSWORD).await["type"],
        "register_success"
    );
}

/// 80 parallel registrations (real argon2 cost) do not starve logins: registrations
/// have a quarter of the hash pool, logins the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_does_not_starve_logins() {
    let cluster = Cluster::new().await;
    let node =
        cluster.node_with(&[("ARGON2_MEMORY_KIB", "19456"), ("ARGON2_ITERATIONS", "2"), ("HASH_QUEUE", "40")]).await;
    let mut players = Vec::new();
    for _ in 0..10 {
        let name = unique_name("player");
        node.client().await.signed_up(&name).await;
        players.push(name);
    }
    let mut registrations = Vec::new();
    for _ in 0..80 {
        let url = node.ws_url();
        registrations.push(tokio::spawn(async move {
            Client::connect(&url).await.register(&unique_name("flood"), PASSWORD).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut logins = Vec::new();
    for name in players {
        let url = node.ws_url();
        logins.push(tokio::spawn(async move { Client::connect(&url).await.login(&name, PASSWORD).await }));
    }
    for login in logins {
        assert_eq!(login.await.unwrap()["type"], "auth_success");
    }
    for registration in registrations {
        let reply = registration.await.unwrap();
        assert!(
            reply["type"] == "register_success"
                || reply == error("Registration failed due to a server error", "REGISTRATION_ERROR"),
            "{reply}"
        );
    }
}

// 7. Bounded storage ----------------------------------------------------------------

#[tokio::test]
async fn live_tokens_per_account_are_capped_and_old_tokens_pruned() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("MAX_TOKENS_PER_ACCOUNT", "3")]).await;
    let jane = unique_name("jane");
    let mut tokens = vec![node.client().await.signed_up(&jane).await];
    for _ in 0..4 {
        let reply = node.client().await.login(&jane, PASSWORD).await;
        tokens.push(reply["payload"]["token"].as_str().unwrap().to_owned());
    }
    for (i, token) in tokens.iter().enumerate() {
        let reply = node.client().await.token_auth(token).await;
        let expected = if i < 2 { "auth_error" } else { "auth_success" };
        assert_eq!(reply["type"], expected, "token {i} of 5");
    }
    let db = cluster.psql().await;
    let live: i64 = db
        .query_one(
            "SELECT count(*) FROM auth_tokens t JOIN users u ON u.id = t.user_id \
             WHERE u.username = $1 AND t.revoked_at IS NULL",
            &[&jane],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 3);

    // Expired tokens and long-revoked ones are pruned (a node prunes at start).
    db.batch_execute(
        "INSERT INTO auth_tokens (user_id, token_hash, expires_at, revoked_at) \
         SELECT (SELECT min(id) FROM users), decode(md5(g::text), 'hex'), now() - interval '1 hour', NULL \
         FROM generate_series(1, 12000) g; \
         INSERT INTO auth_tokens (user_id, token_hash, expires_at, revoked_at) \
         SELECT (SELECT min(id) FROM users), decode(md5('r' || g::text), 'hex'), now() + interval '1 day', now() - interval '2 days' \
         FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let _second = cluster.node().await;
    let pruned = eventually(Duration::from_secs(10), || {
        let db = &db;
        async move {
            let left: i64 = db
                .query_one("SELECT count(*) FROM auth_tokens WHERE expires_at < now() OR revoked_at < now() - interval '1 day'", &[])
                .await
                .unwrap()
                .get(0);
            left == 0
        }
    })
    .await;
    assert!(pruned, "expired and old revoked tokens are still there");
}

// 8. No secrets in logs or help ---------------------------------------------------

#[tokio::test]
async fn passwords_and_tokens_never_reach_the_log() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("RUST_LOG", "trace")]).await;
    let password = "Sup3r-Secret-Passw0rd";
    let name = unique_name("jane");
    let mut client = node.client().await;
    let registered = client.register(&name, password).await;
    let token = registered["payload"]["token"].as_str().unwrap().to_owned();
    let login = node.client().await.login(&name, password).await;
    let second = login["payload"]["token"].as_str().unwrap().to_owned();
    node.client().await.token_auth(&token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the last_used write-behind too
    let log = node.log();
    assert!(log.contains(" TRACE ") || log.contains(" DEBUG "), "trace logging is on:\n{log}");
    for secret in [password, token.as_str(), second.as_str()] {
        assert!(!log.contains(secret), "the log contains {secret}");
    }
    assert!(!log.contains("$argon2id$"), "the log contains a password hash");
}

#[test]
fn help_does_not_print_secret_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_openchampps"))
        .env_clear()
        .env("DB_CONN", "postgres://app:hunter2-db@db.internal/openchampps")
        .env("DATABASE_URL", "postgres://app:hunter2-url@db.internal/openchampps")
        .env("DB_PASSWORD", "hunter2-pw")
        .env("REDIS_URL", "redis://:hunter2-redis@redis.internal:6379/0")
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("DB_CONN"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}

// 9. Smaller holes ---------------------------------------------------------------------

/// While stored hashes carry other argon2 parameters than the configured ones (a
/// parameter change in progress), an unknown user costs what a known one costs.
#[tokio::test]
async fn unknown_users_cost_what_known_users_cost_during_a_parameter_change() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("LOGIN_FREE_FAILURES", "30")]).await;
    let jane = unique_name("jane");
    node.client().await.signed_up(&jane).await;
    // Jane's hash as an older, costlier configuration made it.
    let costly = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(32768, 3, 1, None).unwrap(),
    );
    let hash = argon2::PasswordHasher::hash_password(&costly, PASSWORD.as_bytes()).unwrap().to_string();
    cluster
        .psql()
        .await
        .execute("UPDATE users SET password_hash = $1 WHERE username = $2", &[&hash, &jane])
        .await
        .unwrap();

    let mut client = node.client().await;
    let nobody = unique_name("nobody");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        known.push(failed_login_secs(&mut client, &jane).await);
        unknown.push(failed_login_secs(&mut client, &nobody).await);
    }
    known.sort_by(f64::total_cmp);
    unknown.sort_by(f64::total_cmp);
    let ratio = unknown[2] / known[2];
    eprintln!("median failed login: known {:.4}s, unknown {:.4}s", known[2], unknown[2]);
    assert!((0.5..2.0).contains(&ratio), "unknown {:.4}s vs known {:.4}s", unknown[2], known[2]);
}

async fn failed_login_secs(client: &mut Client, name: &str) -> f64 {
    let started = Instant::now();
    assert_eq!(client.login(name, "wrongPassword").await, auth_error(BAD_CREDENTIALS));
    started.elapsed().as_secs_f64()
}

#[tokio::test]
async fn usernames_that_are_not_stable_identifiers_are_refused() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    let mut client = node.client().await;
    let invalid = error("Invalid registration format", "REGISTRATION_ERROR");
    let stem = unique_name("jane");
    for bad in [
        format!("{stem}\u{202e}"),   // right-to-left override
        format!("ja\u{200b}{stem}"), // zero-width space
        format!(" {stem}"),
        format!("{stem}\t"),
        "     ".to_owned(),
        format!("ja\u{7}{stem}"),
    ] {
        assert_eq!(client.register(&bad, PASSWORD).await, invalid, "{bad:?}");
    }
    // One name, one spelling: the decomposed form is stored composed.
    let decomposed = format!("Re\u{301}my_{stem}");
    let reply = client.register(&decomposed, PASSWORD).await;
    assert_eq!(reply["payload"]["username"], format!("R\u{e9}my_{stem}"));
    let again = node.client().await.register(&format!("R\u{e9}my_{stem}"), PASSWORD).await;
    assert_eq!(again, error("Username already exists", "REGISTRATION_ERROR"));
}

/// A trusted IPv4 proxy seen through a dual-stack socket (`::ffff:127.0.0.1`) is still
/// trusted, and IPv6 clients are counted by their /64.
#[test]
fn proxies_and_addresses_are_recognised_in_every_spelling() {
    let trusted: openchampps::config::TrustedProxies = "127.0.0.0/8".parse().unwrap();
    assert!(trusted.contains(&"::ffff:127.0.0.1".parse().unwrap()));
    let key = |s: &str| openchampps::address::address_key(s.parse().unwrap());
    assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:aaaa::2"));
    assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
}

/// The answer to a WebSocket upgrade the node refuses: status and body.
async fn refused_upgrade(node: &NodeProc, address: &str) -> (u16, String) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut request = node.ws_url().into_client_request().unwrap();
    request.headers_mut().append("X-Forwarded-For", address.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            (response.status().as_u16(), body)
        }
        other => panic!("upgrade from {address} not refused: {:?}", other.map(|_| ())),
    }
}

/// One address cannot take a node's connections (and descriptors) from everyone:
/// past MAX_CONNECTIONS_PER_ADDRESS it gets 429 while players at other addresses still
/// connect and log in; the node's own cap answers 503; a closed connection frees its place.
#[tokio::test]
async fn one_address_cannot_take_a_nodes_connections() {
    let cluster = Cluster::new().await;
    let limits = [BEHIND_PROXY, ("MAX_CONNECTIONS_PER_ADDRESS", "3"), ("MAX_CONNECTIONS", "7")];
    let node = cluster.node_with(&limits).await;
    let attacker = "203.0.113.66";
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(from(&node, attacker).await);
    }
    assert_eq!(refused_upgrade(&node, attacker).await, (429, "Too many connections from this address".into()));
    // IPv6 addresses count by their /64: another address in it is the same subscriber.
    for i in 1..=3 {
        held.push(from(&node, &format!("2001:db8:7:7::{i}")).await);
    }
    assert_eq!(refused_upgrade(&node, "2001:db8:7:7::99").await.0, 429);
    let scrape = node.metrics_text().await;
    let per_address = r#"openchampps_connections_refused_total{reason="too many from one address"}"#;
    assert_eq!(metric(&scrape, per_address), 2.0, "{scrape}");

    // A player at another address still gets in.
    let mut innocent = from(&node, "198.51.100.7").await;
    innocent.signed_up(&unique_name("innocent")).await;
    // The node is full now (7): everyone gets 503, whatever the address.
    assert_eq!(refused_upgrade(&node, "198.51.100.8").await, (503, "Too many connections".into()));
    // A closed connection gives its place back; an innocent player takes it.
    held.remove(0).close().await;
    let innocent = eventually(Duration::from_secs(5), || async {
        let mut request = node.ws_url().into_client_request().unwrap();
        request.headers_mut().append("X-Forwarded-For", "198.51.100.8".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.is_ok()
    })
    .await;
    assert!(innocent, "the place of a closed connection never came back");
}
