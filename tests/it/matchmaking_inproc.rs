//! Matchmaking's queue logic (MATCHMAKING.md) on the in-process tier: nodes inside
//! the test process share one set of in-memory stores (`InProcCluster`) and are
//! served over real WebSockets, so each case takes milliseconds to a few seconds.
//!
//! Which tier holds what:
//! - here, on in-process nodes over the in-memory twins: joining and being matched
//!   across nodes, one ticket per account moving between connections (`dequeued`),
//!   leaving from another connection, a disconnect ending the ticket, FIFO order,
//!   put-back and each ticket's tries, `match_error`, a killed node's tickets and
//!   forming matches (killed with `InProcNode::kill`: the shared twin judges it dead
//!   at once), `match_found` again on reconnect and after a move, none for a
//!   dequeued connection, ending a match;
//! - `tests/matchmaking.rs`, on node processes over PostgreSQL and Redis: what needs
//!   them: racing nodes (the Lua scripts' atomicity), a forming node SIGKILLed and
//!   judged dead by Redis's heartbeats, the command allocator, a release retried
//!   while Redis is paused, look-alike accounts (PostgreSQL's `lower()`), the ticket
//!   command;
//! - `tests/abuse_matches.rs`: game servers' credentials, leases and the match cap,
//!   on real stores; `tests/topologies.rs`: matchmaking on Sentinel and Cluster;
//!   `tests/contract.rs`: the queue twin against Redis, case by case.
//!
//! Metrics are process-wide, and every test of this file runs in one process: a
//! test that reads a counter measures its change, and holds that counter's lock
//! ([`PUT_BACK_OR_EXHAUSTED`], [`NODE_DIED_LOCK`]) while its nodes run, as does every
//! test whose nodes may move the counter (put a match back, run out of servers,
//! drop a dead node's tickets).

use std::time::Duration;

use crate::common::stores::TempDir;
use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const KEYS: (&str, &str) = ("MATCH_TICKET_KEYS", "k1:0123456789abcdef0123456789abcdef");
const SERVERS: (&str, &str) = ("GAME_SERVERS", "203.0.113.7:7001,203.0.113.7:7002");

/// Held by the tests that read or move the put-back or the exhausted-pool counter.
static PUT_BACK_OR_EXHAUSTED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Held by the tests that read or move the dead node's tickets counter.
static NODE_DIED_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PUT_BACK: &str = "openchampps_queue_put_back_total";
const EXHAUSTED: &str = r#"openchampps_allocations_total{allocator="static",result="exhausted"}"#;
const NODE_DIED: &str = r#"openchampps_queue_tickets_total{outcome="node_died"}"#;

/// The value of a counter `series` in `node`'s scrape (0 before its first increment).
async fn counter(node: &Endpoint, series: &str) -> u64 {
    let scrape = node.metrics_text().await;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The original server's `tests/test_queue.py` flow: two players queue, both get the
/// same `port` and `containerID`, with both usernames in `players`.
#[tokio::test]
async fn two_players_on_different_nodes_are_matched() {
    let cluster = InProcCluster::new();
    let (a, b) = (cluster.node_with(&[KEYS, SERVERS]).await, cluster.node_with(&[KEYS, SERVERS]).await);
    let (alice, bob) = (unique_name("alice"), unique_name("bob"));
    let mut on_a = a.client().await;
    on_a.signed_up(&alice).await;
    let mut on_b = b.client().await;
    on_b.signed_up(&bob).await;

    assert_eq!(on_a.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let status = on_a.request(json!({"type": "queue_status"})).await;
    assert_eq!(status["payload"]["queued"], true, "{status}");
    assert_eq!(status["payload"]["position"], 1);
    assert_eq!(
        on_b.request(json!({"type": "join_queue", "payload": {"queue": "default"}})).await,
        json!({"type": "queued"})
    );

    let (found_a, found_b) = (on_a.next_of("match_found").await, on_b.next_of("match_found").await);
    for found in [&found_a, &found_b] {
        assert_eq!(found["payload"]["players"], json!([alice, bob]));
        assert_eq!(found["payload"]["host"], "203.0.113.7");
    }
    assert_eq!(found_a["payload"]["port"], found_b["payload"]["port"]);
    assert_eq!(found_a["payload"]["containerID"], found_b["payload"]["containerID"]);
    assert_eq!(found_a["payload"]["match_id"], found_b["payload"]["match_id"]);
    assert!(found_a["payload"]["port"].is_u64());

    // Each player's ticket verifies with the cluster's key, and names that player.
    let claims = verify_ticket(found_a["payload"]["ticket"].as_str().unwrap(), &KEYS.1.as_bytes()[3..]).unwrap();
    assert_eq!(claims["sub"], alice);
    assert_eq!(claims["mid"], found_a["payload"]["match_id"]);
    let forged = found_a["payload"]["ticket"].as_str().unwrap().replace("v1.k1.", "v1.k1.x");
    assert!(verify_ticket(&forged, &KEYS.1.as_bytes()[3..]).is_none());
    assert!(verify_ticket(found_b["payload"]["ticket"].as_str().unwrap(), b"another key entirely!").is_none());

    // After the match the tickets are gone, and leaving is refused while it is on.
    assert_eq!(on_a.request(json!({"type": "queue_status"})).await["payload"], json!({"queued": false}));
    assert_eq!(on_b.request(json!({"type": "leave_queue"})).await, error("Match already found", "MATCH_PENDING"));
}

/// One account on a connection to `a` and one to `b`, both joining the queue: the
/// ticket moves to the second, and the first is told `dequeued`. Returns the token
/// and the two connections.
async fn queued_from_both(a: &InProcNode, b: &InProcNode) -> (String, Client, Client) {
    let token = a.client().await.signed_up(&unique_name("jane")).await;
    let mut first = a.client().await;
    first.token_auth(&token).await;
    let mut second = b.client().await;
    second.token_auth(&token).await;
    assert_eq!(first.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    assert_eq!(second.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    assert_eq!(first.next_of("dequeued").await, json!({"type": "dequeued"}));
    (token, first, second)
}

#[tokio::test]
async fn one_ticket_per_account_and_it_ends_with_leave_or_disconnect() {
    let cluster = InProcCluster::new();
    let (a, b) = (cluster.node_with(&[KEYS, SERVERS]).await, cluster.node_with(&[KEYS, SERVERS]).await);
    let (token, mut first, mut second) = queued_from_both(&a, &b).await;
    assert_eq!(second.request(json!({"type": "queue_status"})).await["payload"]["position"], 1);

    // leave_queue from the first connection, on the other node, removes it.
    assert_eq!(first.request(json!({"type": "leave_queue"})).await, json!({"type": "dequeued"}));
    assert_eq!(second.request(json!({"type": "queue_status"})).await["payload"], json!({"queued": false}));
    first.send(json!({"type": "leave_queue"})).await;
    first.expect_silence(Duration::from_millis(300)).await;

    // A disconnect ends the ticket too.
    assert_eq!(second.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    second.close().await;
    let mut third = a.client().await;
    third.token_auth(&token).await;
    let gone = eventually(Duration::from_secs(5), || {
        let url = a.ws_url();
        let token = token.clone();
        async move {
            let mut c = Client::connect(&url).await;
            c.token_auth(&token).await;
            c.request(json!({"type": "queue_status"})).await["payload"] == json!({"queued": false})
        }
    })
    .await;
    assert!(gone, "the disconnected player's ticket is still queued");

    // Bad requests.
    assert_eq!(
        third.request(json!({"type": "join_queue", "payload": {"queue": "nope"}})).await,
        error("Unknown queue", "BAD_QUEUE")
    );
    for payload in [json!("default"), json!(5), json!({"queue": 5}), json!({"queue": null})] {
        let reply = third.request(json!({"type": "join_queue", "payload": payload})).await;
        assert_eq!(reply, error("Invalid message format", "BAD_MESSAGE"), "{payload}");
    }
    let mut anonymous = a.client().await;
    assert_eq!(
        anonymous.request(json!({"type": "join_queue"})).await,
        error("Authentication required", "AUTH_REQUIRED")
    );
}

/// Players are matched in the order they queued: with three queued before any node
/// forms matches of two, the first two in line are the match, listed in queue order,
/// and the third waits first in line for the next player.
#[tokio::test]
async fn matches_form_in_queue_order() {
    let cluster = InProcCluster::new();
    // Matches of four: `holder` forms none, it only holds the players.
    let holder = cluster.node_with(&[KEYS, SERVERS, ("MATCH_QUEUES", "default:4")]).await;
    let names: Vec<String> = (0..3).map(|i| unique_name(&format!("fifo{i}"))).collect();
    let mut players = Vec::new();
    for name in &names {
        let mut p = holder.client().await;
        p.signed_up(name).await;
        players.push(p);
    }
    // They queue in the reverse of their sign-up order, so that no other order (of
    // sign-up, of account id) passes for the queue's.
    players.reverse();
    let names: Vec<String> = names.into_iter().rev().collect();
    for (i, p) in players.iter_mut().enumerate() {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
        assert_eq!(p.request(json!({"type": "queue_status"})).await["payload"]["position"], i + 1);
    }

    // A node forming matches of two: the first two in line are seated, in order.
    let _seater = cluster.node_with(&[KEYS, SERVERS]).await;
    let found = players[0].next_of("match_found").await;
    assert_eq!(found["payload"]["players"], json!([names[0], names[1]]));
    assert_eq!(players[1].next_of("match_found").await["payload"]["match_id"], found["payload"]["match_id"]);
    let third = &mut players[2];
    assert_eq!(third.request(json!({"type": "queue_status"})).await["payload"]["position"], 1);
    third.expect_silence(Duration::from_millis(700)).await;

    // The next player to queue is matched behind it.
    let fourth = unique_name("fifo3");
    let mut late = holder.client().await;
    late.signed_up(&fourth).await;
    assert_eq!(late.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let next = late.next_of("match_found").await;
    assert_eq!(next["payload"]["players"], json!([names[2], fourth]));
    assert_eq!(players[2].next_of("match_found").await["payload"]["match_id"], next["payload"]["match_id"]);
}

#[tokio::test]
async fn an_exhausted_pool_gives_match_error_and_frees_the_players() {
    let _counted = PUT_BACK_OR_EXHAUSTED.lock().await;
    let cluster = InProcCluster::new();
    let one_server = [KEYS, ("GAME_SERVERS", "203.0.113.9:7100"), ("ALLOCATION_ATTEMPTS", "2")];
    let node = cluster.node_with(&one_server).await;
    let (put_back, exhausted) = (counter(&node, PUT_BACK).await, counter(&node, EXHAUSTED).await);
    let mut players = Vec::new();
    for i in 0..4 {
        let mut p = node.client().await;
        p.signed_up(&unique_name(&format!("p{i}"))).await;
        players.push(p);
    }
    for p in &mut players[..2] {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
    for p in &mut players[..2] {
        assert_eq!(p.next_of("match_found").await["payload"]["port"], 7100);
    }
    // The only server is leased: the next match cannot start.
    for p in &mut players[2..] {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
    for p in &mut players[2..] {
        let failed = p.next_of("match_error").await;
        assert_eq!(failed, json!({"type": "match_error", "payload": {"message": "Failed to start game server"}}));
        // Free again: may queue anew.
        assert_eq!(p.request(json!({"type": "queue_status"})).await["payload"], json!({"queued": false}));
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
    // The first failed try put both back at their places for the second.
    let scrape = node.metrics_text().await;
    assert_eq!(counter(&node, PUT_BACK).await - put_back, 2, "{scrape}");
    assert_eq!(counter(&node, EXHAUSTED).await - exhausted, 2, "{scrape}");
}

/// Each ticket counts its own failed tries: a player formed with one whose tries are
/// nearly used up is not sent `match_error` with it, but goes back for its own tries.
#[tokio::test]
async fn a_fresh_player_keeps_its_own_tries_when_formed_with_a_retried_one() {
    let _counted = PUT_BACK_OR_EXHAUSTED.lock().await;
    let cluster = InProcCluster::new();
    let dir = TempDir::new("failalloc");
    let script = dir.path().join("allocate.sh");
    std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\nsleep 1\nexit 1\n").unwrap();
    let command = format!("sh {}", script.display());
    let settings =
        [KEYS, ("ALLOCATOR", "command"), ("ALLOCATOR_COMMAND", command.as_str()), ("ALLOCATION_ATTEMPTS", "2")];
    let node = cluster.node_with(&settings).await;
    let (mut a, mut b, mut c) = (node.client().await, node.client().await, node.client().await);
    for (p, stem) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
        p.signed_up(&unique_name(stem)).await;
    }
    assert_eq!(a.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    assert_eq!(b.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    // A and B are formed within 0.5 s; their server fails after 1 s. Meanwhile B
    // leaves for good and C joins: after the failure A (one try used) and C (none) form.
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.close().await;
    assert_eq!(c.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let failed = a.next_of("match_error").await;
    assert_eq!(failed["payload"]["message"], "Failed to start game server");
    // A's second try was its last; C's was its first: C is back in the queue.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.request(json!({"type": "queue_status"})).await["payload"]["position"] != 1 {
        assert!(std::time::Instant::now() < deadline, "the fresh player was not put back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.expect_silence(Duration::from_millis(300)).await;
}

/// A player who reconnects while the match is joinable gets its `match_found` again,
/// after the auth reply, on any node; the game server ends the match with an
/// authenticated POST, which frees its server at once and stops the re-sending.
#[tokio::test]
async fn match_found_again_on_reconnect_until_the_game_server_ends_the_match() {
    let cluster = InProcCluster::new();
    let token = ("GAME_SERVER_TOKEN", "s3cret-game-server-token");
    let one_server = [KEYS, ("GAME_SERVERS", "203.0.113.9:7200"), token];
    let (a, b) = (cluster.node_with(&one_server).await, cluster.node_with(&one_server).await);
    let alice = unique_name("alice");
    let mut on_a = a.client().await;
    let alice_token = on_a.signed_up(&alice).await;
    let mut bob = b.player("bob").await;
    on_a.request(json!({"type": "join_queue"})).await;
    bob.request(json!({"type": "join_queue"})).await;
    let found = on_a.next_of("match_found").await;
    let match_id = found["payload"]["match_id"].as_str().unwrap().to_owned();
    on_a.close().await;

    // Back through token_auth on the other node: the auth reply, then the same match.
    let mut back = b.client().await;
    assert_eq!(back.token_auth(&alice_token).await["type"], "auth_success");
    assert_eq!(back.next_of("match_found").await, found);
    // And through login.
    let mut again = a.client().await;
    assert_eq!(again.login(&alice, PASSWORD).await["type"], "auth_success");
    assert_eq!(again.next_of("match_found").await, found);
    // Still in the match: queueing is refused.
    assert_eq!(again.request(json!({"type": "join_queue"})).await, error("Match already found", "MATCH_PENDING"));

    // Only the game server may end it.
    // With the match's credential: HMAC-SHA256 of "match:<id>" under GAME_SERVER_TOKEN.
    let path = format!("/matches/{match_id}/end");
    let mut mac = Hmac::<Sha256>::new_from_slice(token.1.as_bytes()).unwrap();
    mac.update(format!("match:{match_id}").as_bytes());
    let credential = format!("Bearer {}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    let post = |headers: &[(&str, &str)]| {
        let (path, metrics) = (path.clone(), a.metrics);
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            http(metrics, "POST", &path, None, &headers).await.unwrap().0
        }
    };
    assert_eq!(post(&[]).await, 401);
    assert_eq!(post(&[("Authorization", "Bearer guessed")]).await, 401);
    // The key itself is no game server's credential.
    assert_eq!(post(&[("Authorization", "Bearer s3cret-game-server-token")]).await, 401);
    assert_eq!(post(&[("Authorization", &credential)]).await, 200);
    assert_eq!(post(&[("Authorization", &credential)]).await, 404);

    // Over: no match_found on reconnect, and the one server is free for the next match.
    let mut after = b.client().await;
    assert_eq!(after.token_auth(&alice_token).await["type"], "auth_success");
    after.expect_silence(Duration::from_secs(1)).await;
    assert_eq!(after.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let mut carol = a.player("carol").await;
    carol.request(json!({"type": "join_queue"})).await;
    assert_eq!(carol.next_of("match_found").await["payload"]["port"], 7200);
}

/// A node ending matches without GAME_SERVER_TOKEN refuses every request.
#[tokio::test]
async fn ending_a_match_is_off_without_a_game_server_token() {
    let cluster = InProcCluster::new();
    let node = cluster.node_with(&[KEYS, SERVERS]).await;
    let (status, body) =
        http(node.metrics, "POST", "/matches/x/end", None, &[("Authorization", "Bearer ")]).await.unwrap();
    assert_eq!((status, body.as_str()), (403, "Ending matches is off: GAME_SERVER_TOKEN is not set"));
}

/// The node forming a match dies while it allocates: another node puts the players
/// back at their places, in order, without those who left meanwhile; the next node
/// able to form matches seats them. (`tests/matchmaking.rs` has the same with a
/// SIGKILLed process that Redis's heartbeats find dead.)
#[tokio::test]
async fn a_match_whose_forming_node_dies_is_put_back_in_order() {
    let _counted = PUT_BACK_OR_EXHAUSTED.lock().await;
    let cluster = InProcCluster::new();
    let dir = TempDir::new("forming");
    let marker = dir.path().join("allocating");
    // Hangs until killed with its node (the command allocator kills it when dropped),
    // or at the latest until the test removes its directory.
    let hang = format!("touch {0}; while [ -e {0} ]; do sleep 0.2; done", marker.display());
    // Only `former` can form a match of three; `holder` (queues of four) holds the players.
    let mut former = cluster
        .node_with(&[KEYS, ("MATCH_QUEUES", "default:3"), ("ALLOCATOR", "command"), ("ALLOCATOR_COMMAND", &hang)])
        .await;
    let holder = cluster.node_with(&[KEYS, SERVERS, ("MATCH_QUEUES", "default:4")]).await;
    let put_back = counter(&holder, PUT_BACK).await;
    let (mut alice, mut bob, mut carol) =
        (holder.player("alice").await, holder.player("bob").await, holder.player("carol").await);
    for p in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
    assert!(eventually(Duration::from_secs(10), || async { marker.exists() }).await, "no match formed");
    assert_eq!(bob.request(json!({"type": "leave_queue"})).await, error("Match already found", "MATCH_PENDING"));
    carol.close().await; // leaves while the match forms: not put back

    former.kill().await;
    assert!(
        eventually(Duration::from_secs(20), || async { counter(&holder, PUT_BACK).await - put_back == 2 }).await,
        "the match was not put back: {}",
        holder.metrics_text().await
    );
    assert_queued_first_and_second(&mut alice, &mut bob).await;

    // A node forming matches of two seats them.
    let _seater = cluster.node_with(&[KEYS, SERVERS]).await;
    assert_matched_together(&mut alice, &mut bob).await;
}

/// A node killed with queued players: their tickets go with it, and nobody is
/// matched with a dead player.
#[tokio::test]
async fn the_tickets_of_a_killed_node_are_dropped() {
    let _counted = NODE_DIED_LOCK.lock().await;
    let cluster = InProcCluster::new();
    // The only node dies and comes back under the same NODE_ID (a container restarted
    // in its pod): no live node ever saw the dead one, and its name lives on.
    let name = unique_name("restarted");
    let settings = [KEYS, SERVERS, ("NODE_ID", name.as_str())];
    let mut doomed = cluster.node_with(&settings).await;
    let node_died = counter(&doomed, NODE_DIED).await;
    let mut ghost = doomed.client().await;
    ghost.signed_up(&unique_name("ghost")).await;
    assert_eq!(ghost.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    doomed.kill().await;
    drop(ghost); // its socket goes with the node
                 // Judged dead at once: the survivor's first heartbeat, before it is ready, says so.
    let survivor = cluster.node_with(&settings).await;
    assert_ne!(survivor.node_id, doomed.node_id, "a restarted node is a new node");
    let mut alive = survivor.client().await;
    alive.signed_up(&unique_name("alive")).await;
    assert_eq!(alive.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    alive.expect_silence(Duration::from_secs(2)).await;
    let status = alive.request(json!({"type": "queue_status"})).await;
    assert_eq!(status["payload"]["position"], 1, "{status}");
    let scrape = survivor.metrics_text().await;
    assert_eq!(counter(&survivor, NODE_DIED).await - node_died, 1, "{scrape}");
}

/// A player who reconnects to another node while its match is being allocated gets
/// `match_found` there: it goes to every node holding the account, not only to the
/// node that held the ticket.
#[tokio::test]
async fn match_found_follows_a_player_who_moved_during_allocation() {
    let cluster = InProcCluster::new();
    let dir = TempDir::new("slowalloc");
    let script = dir.path().join("allocate.sh");
    std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\nsleep 2\necho '{\"server_id\":\"gs-slow\",\"host\":\"192.0.2.11\",\"port\":7788}'\n")
        .unwrap();
    let command = format!("sh {}", script.display());
    let settings = [KEYS, ("ALLOCATOR", "command"), ("ALLOCATOR_COMMAND", command.as_str())];
    let (first, second) = (cluster.node_with(&settings).await, cluster.node_with(&settings).await);
    let (alice, bob) = (unique_name("alice"), unique_name("bob"));
    let mut a = first.client().await;
    a.signed_up(&alice).await;
    let mut b = first.client().await;
    let token = b.signed_up(&bob).await;
    a.request(json!({"type": "join_queue"})).await;
    b.request(json!({"type": "join_queue"})).await;
    // The match forms within a round (0.5 s); its allocation takes 2 s.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.close().await;
    let mut b_elsewhere = second.client().await;
    assert_eq!(b_elsewhere.token_auth(&token).await["type"], "auth_success");
    let (found_a, found_b) = (a.next_of("match_found").await, b_elsewhere.next_of("match_found").await);
    assert_eq!(found_b["payload"]["containerID"], "gs-slow");
    assert_eq!(found_a["payload"]["match_id"], found_b["payload"]["match_id"]);
}

/// Issue 16, point 12c: the account's ticket moved to another connection (on another
/// node), which told the first `dequeued`; the match found for it goes to the
/// connection holding the ticket only.
#[tokio::test]
async fn a_dequeued_connection_gets_no_match_found() {
    let cluster = InProcCluster::new();
    let settings = [KEYS, ("GAME_SERVERS", "203.0.113.9:7305")];
    let (a, b) = (cluster.node_with(&settings).await, cluster.node_with(&settings).await);
    let (_, mut first, mut second) = queued_from_both(&a, &b).await;

    let mut bob = a.player("bob").await;
    assert_eq!(bob.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let found = second.next_of("match_found").await;
    assert_eq!(bob.next_of("match_found").await["payload"]["match_id"], found["payload"]["match_id"]);
    // Sent to both nodes at once: the first connection would have it by now.
    first.expect_silence(Duration::from_secs(2)).await;
}
