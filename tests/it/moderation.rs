//! MODERATION.md, what a player sees: ban, mute, kick, name reset and token
//! revocation through `Moderation` (what the admin API and the command line call),
//! on in-process nodes sharing the in-memory stores, so each case runs in
//! milliseconds; the views of sessions, queues and nodes; the role policy. What needs
//! PostgreSQL and Redis (durability, a node started after the ban, the session check
//! while the bus is down, the cost of a cached `token_auth`) is at the end, on node
//! processes.

use std::time::{Duration, Instant};

use crate::common::stores::{command_calls, PrivateRedis};
use crate::common::*;
use openchampps::config::Config;
use openchampps::moderation::*;
use openchampps::store::Stores;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn moderation_on(stores: Stores) -> Moderation {
    let config = Config::from_flags(&["--match-queues", "normal:2", "--game-servers", "203.0.113.7:7001"]).unwrap();
    Moderation::new(stores, format!("console-{}", uuid::Uuid::new_v4().simple()), &config)
}

fn moderation(cluster: &InProcCluster) -> Moderation {
    moderation_on(Stores::in_memory_with(cluster.users.clone(), cluster.shared.clone()))
}

fn actor(name: &str, role: Role) -> Actor {
    Actor { name: name.into(), role, address: None }
}

fn admin() -> Actor {
    actor("alice", Role::Admin)
}

/// Waits until the player 360 shows `n` live sessions of `name`, and returns it.
async fn with_sessions(m: &Moderation, name: &str, n: usize) -> PlayerView {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = m.player(name).await.unwrap();
        if view.sessions.len() == n || Instant::now() > deadline {
            assert_eq!(view.sessions.len(), n, "{view:?}");
            return view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn banned(reason: &str, until: &Option<String>) -> Value {
    json!({"type": "auth_error", "payload": {"message": "Account banned", "reason": reason, "until": until}})
}

/// Sends `text` to global chat until the answer (a refusal or the message itself)
/// satisfies `check`, for at most `limit`.
async fn answers_until(client: &mut Client, limit: Duration, text: &str, check: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        client.send(global(text)).await;
        if client.next_text(Duration::from_millis(300)).await.is_some_and(|v| check(&v)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn global(text: &str) -> Value {
    json!({"type": "global_chat", "payload": text})
}

#[tokio::test]
async fn a_ban_ends_every_session_on_every_node_and_refuses_only_correct_credentials() {
    let cluster = InProcCluster::new();
    let (n1, n2) = (cluster.node().await, cluster.node().await);
    let m = moderation(&cluster);
    let name = unique_name("Banned");
    let mut a = n1.client().await;
    let token = a.signed_up(&name).await;
    let mut b = n2.client().await;
    assert_eq!(b.token_auth(&token).await["type"], "auth_success");

    // The 360 shows both sessions with their nodes, addresses and how they signed in.
    let view = with_sessions(&m, &name, 2).await;
    let mut seen: Vec<(&str, &str, &str)> =
        view.sessions.iter().map(|s| (s.node.as_str(), s.address.as_str(), s.auth.as_str())).collect();
    seen.sort();
    let mut expected =
        vec![(n1.node_id.as_str(), "127.0.0.1", "register"), (n2.node_id.as_str(), "127.0.0.1", "token_auth")];
    expected.sort();
    assert_eq!(seen, expected);

    let started = Instant::now();
    let acted = m.act(&name.to_lowercase(), Action::Ban { secs: Some(3600) }, "slurs in chat", &admin()).await.unwrap();
    assert_eq!((acted.player.as_str(), acted.action, acted.sessions), (name.as_str(), "ban", 2));
    let frame = banned("slurs in chat", &acted.until);
    assert_eq!(a.next_of("auth_error").await, frame);
    assert_eq!(b.next_of("auth_error").await, frame);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    // Unauthenticated from then on.
    assert_eq!(a.request(global("still here?")).await, error("Authentication required", "AUTH_REQUIRED"));

    let mut c = n2.client().await;
    assert_eq!(c.login(&name, PASSWORD).await, frame);
    assert_eq!(c.login(&name, "wrongPassword1").await, auth_error("Invalid username or password"));
    assert_eq!(c.token_auth(&token).await, frame);
    // No session came of any of it.
    assert_eq!(m.player(&name).await.unwrap().sessions.len(), 0);
    assert!(m.player(&name).await.unwrap().ban.is_some_and(|b| b.reason == "slurs in chat" && b.by == "alice"));

    // Lifted: the password works again; the tokens the ban revoked stay revoked.
    let lifted = m.act(&name, Action::Unban, "appeal accepted", &admin()).await.unwrap();
    assert_eq!(lifted.action, "unban");
    assert_eq!(c.login(&name, PASSWORD).await["type"], "auth_success");
    let mut d = n1.client().await;
    assert_eq!(d.token_auth(&token).await, auth_error("Invalid or expired token"));
    assert_eq!(
        m.act(&name, Action::Unban, "again", &admin()).await.unwrap_err(),
        ModerationError::Conflict(NO_ACTIVE_BAN)
    );
}

#[tokio::test]
async fn a_mute_refuses_chat_only_until_it_is_lifted_or_ends() {
    let cluster = InProcCluster::new();
    let (n1, n2) = (cluster.node().await, cluster.node().await);
    let m = moderation(&cluster);
    let name = unique_name("Muted");
    let mut muted = n1.client().await;
    let token = muted.signed_up(&name).await;
    let mut friend = n2.player("Friend").await;
    with_sessions(&m, &name, 1).await;

    let acted = m.act(&name, Action::Mute { secs: 3600 }, "spam", &admin()).await.unwrap();
    let until = acted.until.clone().expect("a mute ends");
    let refused = json!({"type": "error", "payload": {"message": "You are muted", "code": "MUTED", "until": until}});
    let said = answers_until(&mut muted, Duration::from_secs(1), "hello", |v| *v == refused).await;
    assert!(said, "the mute reached the session within 1 s");
    let private = json!({"type": "private_chat", "payload": {"target": "someone", "message": "psst"}});
    assert_eq!(muted.request(private).await, refused);
    // Everything else works.
    assert_eq!(muted.request(json!({"type": "count"})).await["type"], "player_count");
    // A new session of the account is muted too (token_auth and login).
    let mut again = n2.client().await;
    assert_eq!(again.token_auth(&token).await["type"], "auth_success");
    assert_eq!(again.request(global("hi")).await, refused);
    let mut login = n1.client().await;
    assert_eq!(login.login(&name, PASSWORD).await["type"], "auth_success");
    assert_eq!(login.request(global("hi")).await, refused);
    assert!(m.player(&name).await.unwrap().mute.is_some());

    m.act(&name, Action::Unmute, "served", &admin()).await.unwrap();
    let spoke = answers_until(&mut muted, Duration::from_secs(1), "free", |v| v["type"] == "global_chat").await;
    assert!(spoke, "unmuted within 1 s");
    assert_eq!(friend.next_of("global_chat").await["payload"]["message"], "free");

    // A mute ends by itself.
    m.act(&name, Action::Mute { secs: 1 }, "cool down", &admin()).await.unwrap();
    let mut fresh = n2.client().await;
    assert_eq!(fresh.token_auth(&token).await["type"], "auth_success");
    assert_eq!(fresh.request(global("now?")).await["payload"]["code"], "MUTED");
    let ended = answers_until(&mut fresh, Duration::from_secs(5), "later", |v| v["type"] == "global_chat").await;
    assert!(ended, "the mute ended at its time without anyone lifting it");
}

#[tokio::test]
async fn a_kick_closes_every_session_and_the_player_may_come_back() {
    let cluster = InProcCluster::new();
    let (n1, n2) = (cluster.node().await, cluster.node().await);
    let m = moderation(&cluster);
    let name = unique_name("Kicked");
    let mut a = n1.client().await;
    let token = a.signed_up(&name).await;
    let mut b = n2.client().await;
    b.token_auth(&token).await;
    with_sessions(&m, &name, 2).await;

    let acted = m.act(&name, Action::Kick, "afk in ranked", &admin()).await.unwrap();
    assert_eq!(acted.sessions, 2);
    let kicked = json!({"type": "kicked", "payload": {"reason": "afk in ranked"}});
    for client in [&mut a, &mut b] {
        assert_eq!(client.next_frame(Duration::from_secs(1)).await, Frame::Text(kicked.clone()));
        assert_eq!(client.expect_close().await, Some(CloseCode::Policy));
    }
    // The tokens stay valid.
    let mut back = n2.client().await;
    assert_eq!(back.token_auth(&token).await["type"], "auth_success");
    back.close().await;

    // Nobody online: the next session is kicked, once.
    with_sessions(&m, &name, 0).await;
    assert_eq!(m.act(&name, Action::Kick, "later then", &admin()).await.unwrap().sessions, 0);
    let mut next = n1.client().await;
    next.send(json!({"type": "token_auth", "payload": {"token": token}})).await;
    assert_eq!(
        next.next_frame(Duration::from_secs(1)).await,
        Frame::Text(json!({"type": "kicked", "payload": {"reason": "later then"}}))
    );
    assert_eq!(next.expect_close().await, Some(CloseCode::Policy));
    let mut after = n1.client().await;
    assert_eq!(after.token_auth(&token).await["type"], "auth_success");
}

#[tokio::test]
async fn a_name_reset_and_a_token_revocation_reach_every_session() {
    let cluster = InProcCluster::new();
    let (n1, n2) = (cluster.node().await, cluster.node().await);
    let m = moderation(&cluster);
    let name = unique_name("Renamed");
    let mut a = n1.client().await;
    let token = a.signed_up(&name).await;
    let set = a.request(json!({"type": "set_username", "payload": "Rude Name"})).await;
    assert_eq!(set, json!({"type": "display_name_updated", "payload": "Rude Name"}));
    let mut b = n2.client().await;
    b.token_auth(&token).await;
    with_sessions(&m, &name, 2).await;

    m.act(&name, Action::ResetName, "offensive name", &admin()).await.unwrap();
    let reset = json!({"type": "display_name_updated", "payload": name});
    assert_eq!(a.next_of("display_name_updated").await, reset);
    assert_eq!(b.next_of("display_name_updated").await, reset);
    // A reconnect keeps the account's name.
    let mut c = n1.client().await;
    c.token_auth(&token).await;
    let view = with_sessions(&m, &name, 3).await;
    assert!(view.sessions.iter().all(|s| s.display_name == name), "{view:?}");

    m.act(&name, Action::RevokeTokens, "account shared", &admin()).await.unwrap();
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.next_of("auth_error").await, auth_error("Invalid or expired token"));
    }
    let mut d = n2.client().await;
    assert_eq!(d.token_auth(&token).await, auth_error("Invalid or expired token"));
    assert_eq!(d.login(&name, PASSWORD).await["type"], "auth_success");
}

#[tokio::test]
async fn roles_limit_what_an_operator_may_do() {
    let cluster = InProcCluster::new();
    let m = moderation(&cluster);
    let node = cluster.node().await;
    let name = unique_name("Target");
    node.client().await.signed_up(&name).await;
    let (viewer, moderator) = (actor("vic", Role::Viewer), actor("mo", Role::Moderator));
    let forbidden = |text| Err(ModerationError::Forbidden(text));

    for action in [Action::Kick, Action::Mute { secs: 60 }, Action::Ban { secs: Some(60) }, Action::ResetName] {
        assert_eq!(m.act(&name, action, "r", &viewer).await.map(drop), forbidden(NOT_ALLOWED));
    }
    assert_eq!(
        m.act(&name, Action::Ban { secs: None }, "r", &moderator).await.map(drop),
        forbidden(MODERATOR_BAN_LIMIT)
    );
    let month = 30 * 86_400;
    assert_eq!(
        m.act(&name, Action::Ban { secs: Some(month + 1) }, "r", &moderator).await.map(drop),
        forbidden(MODERATOR_BAN_LIMIT)
    );
    assert_eq!(m.act(&name, Action::RevokeTokens, "r", &moderator).await.map(drop), forbidden(NOT_ALLOWED));
    // A moderator lifts its own actions, not an admin's.
    m.act(&name, Action::Ban { secs: Some(month) }, "30 days", &moderator).await.unwrap();
    m.act(&name, Action::Unban, "my mistake", &moderator).await.unwrap();
    m.act(&name, Action::Ban { secs: None }, "for good", &admin()).await.unwrap();
    assert_eq!(m.act(&name, Action::Unban, "no", &moderator).await.map(drop), forbidden(MODERATOR_LIFTS_OWN));
    m.act(&name, Action::Unban, "reviewed", &admin()).await.unwrap();

    // Bad input and unknown players.
    let reason_required = Err(ModerationError::BadInput(REASON_REQUIRED.into()));
    assert_eq!(m.act(&name, Action::Kick, "   ", &moderator).await.map(drop), reason_required);
    assert_eq!(m.act(&name, Action::Kick, &"x".repeat(501), &moderator).await.map(drop), reason_required);
    assert!(m.act(&name, Action::Kick, &"é".repeat(500), &moderator).await.is_ok());
    assert!(matches!(m.act(&name, Action::Mute { secs: 0 }, "r", &moderator).await, Err(ModerationError::BadInput(_))));
    assert_eq!(m.act("nobody-at-all", Action::Kick, "r", &admin()).await.map(drop), Err(ModerationError::NoSuchPlayer));
    assert_eq!(m.player("nobody-at-all").await.map(drop), Err(ModerationError::NoSuchPlayer));
}

#[tokio::test]
async fn the_views_show_what_the_cluster_holds() {
    let cluster = InProcCluster::new();
    let servers = ("GAME_SERVERS", "203.0.113.7:7001");
    let n1 = cluster.node_with(&[("MATCH_QUEUES", "normal:2"), servers]).await;
    let n2 = cluster.node_with(&[("MATCH_QUEUES", "normal:2"), servers]).await;
    let m = moderation(&cluster);
    let name = unique_name("Queued");
    let mut p = n2.client().await;
    p.signed_up(&name).await;
    p.send(json!({"type": "join_queue", "payload": {"queue": "normal"}})).await;
    p.next_of("queued").await;

    let view = m.player(&name).await.unwrap();
    let mm = view.matchmaking.expect("queued");
    assert_eq!((mm.queue.as_deref(), mm.position, mm.pending_match), (Some("normal"), Some(1), None));
    assert!(mm.waiting_secs.is_some_and(|w| w < 5));
    assert_eq!(view.failed_logins, 0);

    let queues = m.queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!((queues[0].queue.as_str(), queues[0].waiting), ("normal", 1));
    assert_eq!((queues[0].servers_leased, queues[0].servers_free), (Some(0), Some(1)));

    let found = eventually(Duration::from_secs(5), || async {
        let nodes = m.nodes().await.unwrap();
        [&n1, &n2].iter().all(|n| nodes.iter().any(|v| v.id == n.node_id && v.status == "ready"))
    })
    .await;
    assert!(found, "{:?}", m.nodes().await);

    let players = m.players(&name[..name.len() - 3], 10).await.unwrap();
    assert_eq!(players.iter().map(|p| (p.username.as_str(), p.online)).collect::<Vec<_>>(), vec![(name.as_str(), 1)]);
}

// On PostgreSQL and Redis ---------------------------------------------------------------

fn real_moderation(cluster: &Cluster) -> Moderation {
    let env = cluster.env();
    let get = |k: &str| env.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let config = Config::from_flags(&[
        "--db-conn",
        &get("DB_CONN"),
        "--redis-url",
        &get("REDIS_URL"),
        "--redis-key-prefix",
        &get("REDIS_KEY_PREFIX"),
    ])
    .unwrap();
    moderation_on(Stores::connect(&config).unwrap())
}

#[tokio::test]
async fn bans_and_mutes_are_durable_and_a_cached_token_auth_stays_one_round_trip() {
    let redis_server = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis_server.url()).await;
    let node = cluster.node().await;
    let m = real_moderation(&cluster);
    let (banned_name, muted_name) = (unique_name("Durable"), unique_name("Quiet"));
    let mut banned_client = node.client().await;
    let banned_token = banned_client.signed_up(&banned_name).await;
    banned_client.close().await;
    let mut muted_client = node.client().await;
    let muted_token = muted_client.signed_up(&muted_name).await;
    muted_client.close().await;

    // Acted on with nobody online; then a node that starts afterwards enforces them.
    let ban = m.act(&banned_name, Action::Ban { secs: None }, "cheating", &admin()).await.unwrap();
    m.act(&muted_name, Action::Mute { secs: 3600 }, "spam", &admin()).await.unwrap();
    drop(node);
    let node = cluster.node().await;
    let mut c = node.client().await;
    assert_eq!(c.login(&banned_name, PASSWORD).await, banned("cheating", &ban.until));
    assert_eq!(c.token_auth(&banned_token).await, banned("cheating", &None));
    assert_eq!(c.token_auth(&muted_token).await["type"], "auth_success");
    assert_eq!(c.request(global("hi")).await["payload"]["code"], "MUTED");

    // A muted account's cached token_auth costs Redis what a clean account's does:
    // the one lookup (MGET), whatever else a fresh session starts beside it.
    let clean_name = unique_name("Clean");
    let mut clean_client = node.client().await;
    let clean_token = clean_client.signed_up(&clean_name).await;
    let redis = redis::Client::open(redis_server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (_, clean) = lookups_of(&node, redis.clone(), &clean_token).await;
    let (mut d, muted) = lookups_of(&node, redis, &muted_token).await;
    assert_eq!(muted, clean, "a mute adds no Redis command to a cached token_auth");
    assert_eq!(d.request(global("hi")).await["payload"]["code"], "MUTED");
}

/// A `token_auth` with `token` on a new connection, and the MGETs Redis served meanwhile.
async fn lookups_of(node: &NodeProc, mut redis: redis::aio::MultiplexedConnection, token: &str) -> (Client, u64) {
    let mut client = node.client().await;
    let before = command_calls(&mut redis).await;
    assert_eq!(client.token_auth(token).await["type"], "auth_success");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = command_calls(&mut redis).await;
    let mget = |calls: &std::collections::HashMap<String, u64>| calls.get("mget").copied().unwrap_or(0);
    (client, mget(&after) - mget(&before))
}

#[tokio::test]
async fn a_ban_during_a_redis_outage_still_ends_the_session() {
    let mut redis_server = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis_server.url()).await;
    let node = cluster.node_with(&[("SESSION_CHECK_SECS", "1")]).await;
    let m = real_moderation(&cluster);
    let name = unique_name("Outage");
    let mut player = node.client().await;
    player.signed_up(&name).await;
    redis_server.stop();
    // The bus is down: the ban lands in PostgreSQL, and the node's session check
    // carries it to the session.
    let acted = m.act(&name, Action::Ban { secs: Some(600) }, "raid", &admin()).await.unwrap();
    let frame = player.next_frame(Duration::from_secs(5)).await;
    assert_eq!(frame, Frame::Text(banned("raid", &acted.until)));
    redis_server.restart();
}

#[tokio::test]
async fn a_ban_ends_at_its_time_without_anyone_acting() {
    let cluster = InProcCluster::new();
    let node = cluster.node().await;
    let m = moderation(&cluster);
    let name = unique_name("Brief");
    let mut player = node.client().await;
    player.signed_up(&name).await;
    let acted = m.act(&name, Action::Ban { secs: Some(1) }, "cool off", &admin()).await.unwrap();
    assert_eq!(player.next_of("auth_error").await, banned("cool off", &acted.until));
    let mut again = node.client().await;
    assert_eq!(again.login(&name, PASSWORD).await, banned("cool off", &acted.until));
    // The ban's second runs out (whole seconds: at most two more); then the password works.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let reply = again.login(&name, PASSWORD).await;
        if reply["type"] == "auth_success" {
            break;
        }
        assert!(Instant::now() < deadline, "still {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(m.player(&name).await.unwrap().ban.is_none());
}
