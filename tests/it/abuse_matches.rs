//! Hostile players and game servers against matchmaking (issue 16, points 9, 10 and
//! 12c), on real nodes, PostgreSQL and Redis: each attack is performed and fails.
//! Point 12c (a dequeued connection gets no `match_found`) is queue logic: it runs on
//! in-process nodes, in `tests/matchmaking_inproc.rs`.

use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const KEYS: (&str, &str) = ("MATCH_TICKET_KEYS", "k1:0123456789abcdef0123456789abcdef");
const SECRET: &str = "s3cret-game-server-token";
const TOKEN: (&str, &str) = ("GAME_SERVER_TOKEN", SECRET);

/// A game server's credential, as docs/MATCH_TICKETS.md says to compute it:
/// base64url(HMAC-SHA256(GAME_SERVER_TOKEN, "<scope>:<id>")).
fn credential(scope: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{scope}:{id}").as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Two fresh players on `node` queue and are matched; their clients and `match_found`s.
async fn a_match(node: &NodeProc) -> (Vec<Client>, Vec<Value>) {
    let mut players = vec![node.player("p").await, node.player("q").await];
    for p in &mut players {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
    let mut found = Vec::new();
    for p in &mut players {
        found.push(p.next_of("match_found").await);
    }
    (players, found)
}

/// What a static game server asks: its current match (status, JSON body).
async fn current_match(node: &NodeProc, server: &str) -> (u16, Value) {
    let bearer = format!("Bearer {}", credential("server", server));
    let path = format!("/servers/{server}/match");
    let (status, body) = http(node.metrics, "GET", &path, None, &[("Authorization", &bearer)]).await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// `POST /matches/<match_id>/<action>` with `Authorization: Bearer <bearer>`.
async fn post(node: &NodeProc, match_id: &str, action: &str, bearer: &str) -> (u16, String) {
    let bearer = format!("Bearer {bearer}");
    let path = format!("/matches/{match_id}/{action}");
    http(node.metrics, "POST", &path, None, &[("Authorization", &bearer)]).await.unwrap()
}

/// Polls `join_queue` (no fixed sleep) until the player's match stops answering
/// `MATCH_PENDING`: its joinable window ended.
async fn queue_once_the_window_ends(player: &mut Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = player.request(json!({"type": "join_queue"})).await;
        if reply == json!({"type": "queued"}) {
            return;
        }
        assert_eq!(reply, error("Match already found", "MATCH_PENDING"));
        assert!(tokio::time::Instant::now() < deadline, "still MATCH_PENDING a minute after the joinable window");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `openchampps ticket verify` as a game server checks a ticket presented to it.
fn verify(ticket: &str, server: &str, match_id: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_openchampps"))
        .args(["ticket", "verify", ticket, "--server", server, "--match", match_id])
        .env_clear()
        .env(KEYS.0, KEYS.1)
        .output()
        .unwrap()
}

/// Point 9: a static server that hosted match 1 and now hosts match 2 learns its
/// current match from the cluster, and a still-unexpired ticket of match 1 no longer
/// passes the check it makes.
#[tokio::test]
async fn a_ticket_of_an_ended_match_seats_nobody_on_the_next() {
    let cluster = Cluster::new().await;
    let server = "203.0.113.9:7300";
    let node = cluster.node_with(&[KEYS, TOKEN, ("GAME_SERVERS", server)]).await;
    let (_first, found) = a_match(&node).await;
    let first_id = found[0]["payload"]["match_id"].as_str().unwrap().to_owned();
    let old_ticket = found[0]["payload"]["ticket"].as_str().unwrap().to_owned();

    // The server learns its match, with the match's credential, and ends it.
    let (status, current) = current_match(&node, server).await;
    assert_eq!((status, &current["match_id"]), (200, &json!(first_id)), "{current}");
    assert_eq!(current["players"], found[0]["payload"]["players"]);
    assert!(verify(&old_ticket, server, &first_id).status.success());
    let token = current["token"].as_str().unwrap();
    assert_eq!(post(&node, &first_id, "end", token).await, (200, "Match ended".into()));
    assert_eq!(current_match(&node, server).await.0, 404, "an ended match is still the server's");

    // The same server hosts the next match; the old ticket is still signed and unexpired.
    let (_second, found) = a_match(&node).await;
    let second_id = found[0]["payload"]["match_id"].as_str().unwrap().to_owned();
    assert_eq!(found[0]["payload"]["containerID"], server);
    let (status, current) = current_match(&node, server).await;
    assert_eq!((status, &current["match_id"]), (200, &json!(second_id)), "{current}");
    let refused = verify(&old_ticket, server, &second_id);
    assert!(!refused.status.success(), "a ticket of the ended match passes for the next one");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not the server's current match"), "{why}");
    let fresh = found[0]["payload"]["ticket"].as_str().unwrap();
    assert!(verify(fresh, server, &second_id).status.success());
}

/// Point 10: nobody joins a match and its game server never confirms it; its static
/// server is free for the next match once the joinable window ends, not after
/// GAME_SERVER_LEASE_SECS. A confirmed match keeps its server past the window.
#[tokio::test]
async fn an_abandoned_match_frees_its_static_server_after_the_joinable_window() {
    let cluster = Cluster::new().await;
    let server = "203.0.113.9:7301";
    let settings =
        [KEYS, TOKEN, ("GAME_SERVERS", server), ("MATCH_TICKET_TTL_SECS", "6"), ("ALLOCATION_ATTEMPTS", "1")];
    let node = cluster.node_with(&settings).await;
    let (mut abandoned, found) = a_match(&node).await;
    let abandoned_id = found[0]["payload"]["match_id"].as_str().unwrap().to_owned();
    // Its players queue again as soon as the window ends (polled: no fixed sleep).
    queue_once_the_window_ends(&mut abandoned[0]).await;
    // The server is free: the next match gets it.
    assert_eq!(abandoned[1].request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let mut next = Vec::new();
    for p in &mut abandoned {
        next.push(p.next_of("match_found").await);
    }
    assert_eq!(next[0]["payload"]["containerID"], server);
    assert_ne!(next[0]["payload"]["match_id"], json!(abandoned_id));
    // Too late to confirm the abandoned one.
    assert_eq!(post(&node, &abandoned_id, "confirm", &credential("match", &abandoned_id)).await.0, 404);

    // This one is confirmed at once: it keeps the server past its window.
    let kept_id = next[0]["payload"]["match_id"].as_str().unwrap().to_owned();
    let confirmed = post(&node, &kept_id, "confirm", &credential("match", &kept_id)).await;
    assert_eq!(confirmed, (200, "Match confirmed".into()));
    queue_once_the_window_ends(&mut abandoned[0]).await;
    assert_eq!(abandoned[1].request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    for p in &mut abandoned {
        assert_eq!(p.next_of("match_error").await["type"], "match_error");
    }
    assert_eq!(current_match(&node, server).await.1["match_id"], json!(kept_id));
}

/// Point 10: an account that queues and abandons matches over and over is refused
/// once it started MAX_MATCHES_PER_HOUR of them; other accounts still queue.
#[tokio::test]
async fn an_account_past_its_match_cap_is_refused() {
    let cluster = Cluster::new().await;
    let settings = [KEYS, TOKEN, ("GAME_SERVERS", "203.0.113.9:7302"), ("MAX_MATCHES_PER_HOUR", "2")];
    let node = cluster.node_with(&settings).await;
    let (mut players, mut found) = a_match(&node).await;
    for round in 0..2 {
        // The match is abandoned; its game server ends it at once.
        let match_id = found[0]["payload"]["match_id"].as_str().unwrap().to_owned();
        assert_eq!(post(&node, &match_id, "end", &credential("match", &match_id)).await.0, 200);
        if round == 0 {
            for p in &mut players {
                assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
            }
            found = vec![players[0].next_of("match_found").await, players[1].next_of("match_found").await];
        }
    }
    let refused = error("Too many matches, try again later", "RATE_LIMITED");
    for p in &mut players {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, refused);
    }
    let mut fresh = node.player("fresh").await;
    assert_eq!(fresh.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
}

/// Point 10: every player of a match knows its id; a credential that leaked from one
/// match (or the key itself, or a server's credential) cannot end or confirm another.
#[tokio::test]
async fn one_matchs_credential_cannot_end_another() {
    let cluster = Cluster::new().await;
    let (one, two) = ("203.0.113.9:7303", "203.0.113.9:7304");
    let servers = format!("{one},{two}");
    let node = cluster.node_with(&[KEYS, TOKEN, ("GAME_SERVERS", servers.as_str())]).await;
    let (_a, first) = a_match(&node).await;
    let (_b, second) = a_match(&node).await;
    let (leaked_match, victim) =
        (first[0]["payload"]["match_id"].as_str().unwrap(), second[0]["payload"]["match_id"].as_str().unwrap());
    let leaked = credential("match", leaked_match);
    let victim_server = second[0]["payload"]["containerID"].as_str().unwrap();
    let leaked_server = first[0]["payload"]["containerID"].as_str().unwrap();
    for bearer in [leaked.clone(), SECRET.to_owned(), credential("server", victim_server), String::new()] {
        for action in ["end", "confirm"] {
            let refused = post(&node, victim, action, &bearer).await;
            assert_eq!(refused, (401, "Bad or missing bearer token".into()), "{action} with {bearer:?}");
        }
    }
    // Nor can one server's credential ask for another's match (and its credential).
    let bearer = format!("Bearer {}", credential("server", leaked_server));
    let path = format!("/servers/{victim_server}/match");
    assert_eq!(http(node.metrics, "GET", &path, None, &[("Authorization", &bearer)]).await.unwrap().0, 401);
    // The victim's own credential does.
    assert_eq!(post(&node, victim, "end", &credential("match", victim)).await.0, 200);
    assert_eq!(post(&node, leaked_match, "end", &leaked).await.0, 200);
}
