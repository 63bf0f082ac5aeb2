//! Matchmaking across the cluster (MATCHMAKING.md), on real nodes, PostgreSQL and Redis.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::stores::{redis_cli, PrivateRedis, TempDir};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const KEYS: (&str, &str) = ("MATCH_TICKET_KEYS", "k1:0123456789abcdef0123456789abcdef");
const SERVERS: (&str, &str) = ("GAME_SERVERS", "203.0.113.7:7001,203.0.113.7:7002");

/// Checks a join ticket as a game server would (docs/PROTOCOL.md, "Join ticket").
fn verify_ticket(ticket: &str, secret: &[u8]) -> Option<Value> {
    let (signed, signature) = ticket.rsplit_once('.')?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(signed.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
    let claims = signed.rsplit('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// The original server's `tests/test_queue.py` flow: two players queue, both get the
/// same `port` and `containerID`, with both usernames in `players`.
#[tokio::test]
async fn two_players_on_different_nodes_are_matched() {
    let cluster = Cluster::new().await;
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

#[tokio::test]
async fn one_ticket_per_account_and_it_ends_with_leave_or_disconnect() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.node_with(&[KEYS, SERVERS]).await, cluster.node_with(&[KEYS, SERVERS]).await);
    let jane = unique_name("jane");
    let token = a.client().await.signed_up(&jane).await;
    let mut first = a.client().await;
    first.token_auth(&token).await;
    let mut second = b.client().await;
    second.token_auth(&token).await;

    assert_eq!(first.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    assert_eq!(second.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    // The ticket moved to the second connection; the first is told.
    assert_eq!(first.next_of("dequeued").await, json!({"type": "dequeued"}));
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

#[tokio::test]
async fn an_exhausted_pool_gives_match_error_and_frees_the_players() {
    let cluster = Cluster::new().await;
    let one_server = [KEYS, ("GAME_SERVERS", "203.0.113.9:7100"), ("ALLOCATION_ATTEMPTS", "2")];
    let node = cluster.node_with(&one_server).await;
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
    assert!(scrape.contains("openchampps_queue_put_back_total 2"), "{scrape}");
    assert!(scrape.contains(r#"openchampps_allocations_total{allocator="static",result="exhausted"} 2"#), "{scrape}");
}

/// A player who reconnects while the match is joinable gets its `match_found` again,
/// after the auth reply, on any node; the game server ends the match with an
/// authenticated POST, which frees its server at once and stops the re-sending.
#[tokio::test]
async fn match_found_again_on_reconnect_until_the_game_server_ends_the_match() {
    let cluster = Cluster::new().await;
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
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[KEYS, SERVERS]).await;
    let (status, body) =
        http(node.metrics, "POST", "/matches/x/end", None, &[("Authorization", "Bearer ")]).await.unwrap();
    assert_eq!((status, body.as_str()), (403, "Ending matches is off: GAME_SERVER_TOKEN is not set"));
}

/// The node forming a match dies while it allocates: another node puts the players
/// back at their places, in order, without those who left meanwhile; the next node
/// able to form matches seats them.
#[tokio::test]
async fn a_match_whose_forming_node_dies_is_put_back_in_order() {
    let cluster = Cluster::new().await;
    let dir = TempDir::new("forming");
    let marker = dir.path().join("allocating");
    // Hangs while its node lives ($PPID: the node), so nothing outlives the test.
    let hang = format!("touch {}; while kill -0 $PPID 2>/dev/null; do sleep 0.2; done", marker.display());
    // Only `former` can form a match of three; `holder` (queues of four) holds the players.
    let mut former = cluster
        .node_with(&[KEYS, ("MATCH_QUEUES", "default:3"), ("ALLOCATOR", "command"), ("ALLOCATOR_COMMAND", &hang)])
        .await;
    let holder = cluster.node_with(&[KEYS, SERVERS, ("MATCH_QUEUES", "default:4")]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // each node has seen the other
    let (mut alice, mut bob, mut carol) =
        (holder.player("alice").await, holder.player("bob").await, holder.player("carol").await);
    for p in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
    assert!(eventually(Duration::from_secs(10), || async { marker.exists() }).await, "no match formed");
    assert_eq!(bob.request(json!({"type": "leave_queue"})).await, error("Match already found", "MATCH_PENDING"));
    carol.close().await; // leaves while the match forms: not put back

    former.kill();
    assert!(
        eventually(Duration::from_secs(20), || async {
            holder.metrics_text().await.contains("openchampps_queue_put_back_total 2")
        })
        .await,
        "the match was not put back: {}",
        holder.metrics_text().await
    );
    let (first, second) =
        (alice.request(json!({"type": "queue_status"})).await, bob.request(json!({"type": "queue_status"})).await);
    assert_eq!(
        (first["payload"]["position"].as_u64(), second["payload"]["position"].as_u64()),
        (Some(1), Some(2)),
        "{first} {second}"
    );

    // A node forming matches of two seats them.
    let _seater = cluster.node_with(&[KEYS, SERVERS]).await;
    let (to_alice, to_bob) = (alice.next_of("match_found").await, bob.next_of("match_found").await);
    assert_eq!(to_alice["payload"]["match_id"], to_bob["payload"]["match_id"]);
    assert_eq!(to_alice["payload"]["players"].as_array().unwrap().len(), 2);
}

/// The command allocator: the match on stdin, the server on stdout.
#[tokio::test]
async fn the_command_allocator_gets_a_server_from_a_program() {
    let cluster = Cluster::new().await;
    let dir = TempDir::new("alloc");
    let script = dir.path().join("allocate.sh");
    let seen = dir.path().join("match.json");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {}\necho '{{\"server_id\":\"container-42\",\"host\":\"192.0.2.10\",\"port\":7777}}'\n",
            seen.display()
        ),
    )
    .unwrap();
    let command = format!("sh {}", script.display());
    let node = cluster.node_with(&[KEYS, ("ALLOCATOR", "command"), ("ALLOCATOR_COMMAND", command.as_str())]).await;
    let (alice, bob) = (unique_name("alice"), unique_name("bob"));
    let mut a = node.client().await;
    a.signed_up(&alice).await;
    let mut b = node.client().await;
    b.signed_up(&bob).await;
    a.request(json!({"type": "join_queue"})).await;
    b.request(json!({"type": "join_queue"})).await;
    let found = a.next_of("match_found").await;
    assert_eq!(found["payload"]["host"], "192.0.2.10");
    assert_eq!(found["payload"]["port"], 7777);
    assert_eq!(found["payload"]["containerID"], "container-42");
    let input: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(input["players"], json!([alice, bob]));
    assert_eq!(input["match_id"], found["payload"]["match_id"]);
}

/// A node killed with queued players: their tickets go with it (within the
/// heartbeat's stale time), and nobody is matched with a dead player.
#[tokio::test]
async fn the_tickets_of_a_killed_node_are_dropped() {
    let cluster = Cluster::new().await;
    // The only node dies and comes back under the same NODE_ID (a container restarted
    // in its pod): no live node ever saw the dead process, and its name lives on.
    let name = unique_name("restarted");
    let settings = [KEYS, SERVERS, ("NODE_ID", name.as_str())];
    let mut doomed = cluster.node_with(&settings).await;
    let mut ghost = doomed.client().await;
    ghost.signed_up(&unique_name("ghost")).await;
    assert_eq!(ghost.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    doomed.kill();
    let survivor = cluster.node_with(&settings).await;
    tokio::time::sleep(Duration::from_secs(8)).await; // past the stale time
    let mut alive = survivor.client().await;
    alive.signed_up(&unique_name("alive")).await;
    assert_eq!(alive.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    alive.expect_silence(Duration::from_secs(2)).await;
    let status = alive.request(json!({"type": "queue_status"})).await;
    assert_eq!(status["payload"]["position"], 1, "{status}");
    let scrape = survivor.metrics_text().await;
    assert!(scrape.contains(r#"openchampps_queue_tickets_total{outcome="node_died"} 1"#), "{scrape}");
}

/// Three nodes race to form matches over 300 players: each player ends in exactly one match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_put_every_player_in_exactly_one_match() {
    let cluster = Cluster::new().await;
    let servers: Vec<String> = (0..160).map(|i| format!("198.51.100.1:{}", 7000 + i)).collect();
    let servers = servers.join(",");
    let settings = [KEYS, ("GAME_SERVERS", servers.as_str())];
    let nodes =
        [cluster.node_with(&settings).await, cluster.node_with(&settings).await, cluster.node_with(&settings).await];
    let mut players = Vec::new();
    for i in 0..300 {
        let name = unique_name(&format!("r{i}"));
        let mut p = nodes[i % 3].client().await;
        p.signed_up(&name).await;
        players.push((name, p));
    }
    for (_, p) in &mut players {
        p.send(json!({"type": "join_queue"})).await;
    }
    let mut matches: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (name, p) in &mut players {
        let found = p.next_of("match_found").await;
        let id = found["payload"]["match_id"].as_str().unwrap().to_owned();
        let listed: Vec<String> = serde_json::from_value(found["payload"]["players"].clone()).unwrap();
        assert!(listed.contains(name), "{name} not in its own match {listed:?}");
        matches.entry(id).or_default().push(name.clone());
    }
    assert_eq!(matches.len(), 150, "300 players in pairs make 150 matches");
    assert!(matches.values().all(|m| m.len() == 2));
}

/// Two accounts whose names Rust's lower-casing would merge (`…xΣ` becomes `…xς`,
/// the other account's name) while PostgreSQL's `lower()` keeps them apart stay two
/// players: the twin can neither see nor remove the victim's ticket, nor receive
/// its private messages or its `match_found` (with the victim's join ticket).
#[tokio::test]
async fn a_look_alike_account_never_shares_the_victims_ticket_or_messages() {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[KEYS, SERVERS]).await;
    let stem = unique_name("x");
    let (victim_name, twin_name) = (format!("{stem}xΣ"), format!("{stem}xς"));
    assert_eq!(victim_name.to_lowercase(), twin_name.to_lowercase());
    let mut victim = node.client().await;
    victim.signed_up(&victim_name).await;
    let mut twin = node.client().await;
    let reply = twin.register(&twin_name, PASSWORD).await;
    if reply["type"] != "register_success" {
        // This database's `lower()` merges them too: one account, nothing to steal.
        assert_eq!(reply, error("Username already exists", "REGISTRATION_ERROR"));
        return;
    }

    // The victim's ticket is the victim's alone.
    assert_eq!(victim.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    assert_eq!(twin.request(json!({"type": "queue_status"})).await["payload"], json!({"queued": false}));
    twin.send(json!({"type": "leave_queue"})).await;
    twin.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(victim.request(json!({"type": "queue_status"})).await["payload"]["position"], 1);

    // A private message to the victim reaches only the victim.
    let mut sender = node.player("sender").await;
    sender.send(json!({"type": "private_chat", "payload": {"target": victim_name, "message": "for you"}})).await;
    assert_eq!(victim.next_of("private_chat").await["payload"]["message"], "for you");
    twin.expect_silence(Duration::from_millis(300)).await;

    // The twin joining is a second ticket, not a move of the victim's: the two are
    // matched with each other, each with a join ticket in its own name.
    assert_eq!(twin.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    let (for_victim, for_twin) = (victim.next_of("match_found").await, twin.next_of("match_found").await);
    let secret = &KEYS.1.as_bytes()[3..];
    assert_eq!(verify_ticket(for_victim["payload"]["ticket"].as_str().unwrap(), secret).unwrap()["sub"], victim_name);
    assert_eq!(verify_ticket(for_twin["payload"]["ticket"].as_str().unwrap(), secret).unwrap()["sub"], twin_name);
}

/// A player who reconnects to another node while its match is being allocated gets
/// `match_found` there: it goes to every node holding the account, not only to the
/// node that held the ticket.
#[tokio::test]
async fn match_found_follows_a_player_who_moved_during_allocation() {
    let cluster = Cluster::new().await;
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

/// `openchampps ticket verify` checks a join ticket as a game server would.
#[test]
fn the_ticket_command_verifies_and_refuses() {
    let keys = "k1:0123456789abcdef0123456789abcdef";
    let verify = |ticket: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_openchampps"))
            .args(["ticket", "verify", ticket, "--server", "203.0.113.7:7001"])
            .args(["--match", "11111111-2222-3333-4444-555555555555"])
            .env_clear()
            .env("MATCH_TICKET_KEYS", keys)
            .output()
            .unwrap()
    };
    // The test vector of docs/MATCH_TICKETS.md (valid until 2033).
    let vector = "v1.k1.eyJleHAiOjIwMDAwMDAwMDAsIm1pZCI6IjExMTExMTExLTIyMjItMzMzMy00NDQ0LTU1NTU1NTU1NTU1NSIsInNydiI6IjIwMy4wLjExMy43OjcwMDEiLCJzdWIiOiJhbGljZSJ9.T-rVoER0dqRmt2YGLqWBvBkA_kCQ7zTVb9RvzH2nrO0";
    let out = verify(vector);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("valid:"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#""sub":"alice""#), "{stdout}");
    let forged = vector.replace(".T-rV", ".U-rV");
    assert!(!verify(&forged).status.success(), "a forged ticket verified");
    assert!(!verify("v1.k9.e30.AAAA").status.success(), "a ticket of an unknown key verified");
    // Not without the server and its current match.
    let unchecked = std::process::Command::new(env!("CARGO_BIN_EXE_openchampps"))
        .args(["ticket", "verify", vector])
        .env_clear()
        .env("MATCH_TICKET_KEYS", keys)
        .output()
        .unwrap();
    assert!(!unchecked.status.success(), "verified without --server and --match");
}

/// A ticket whose connection ended while Redis did not answer is released once Redis
/// answers again: it does not wait in the queue forever for a player who is gone.
#[tokio::test]
async fn a_release_that_failed_is_retried() {
    let redis = PrivateRedis::start();
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis.url()).await;
    // Matches of three: the one ticket stays queued.
    let node = cluster.node_with(&[KEYS, SERVERS, ("MATCH_QUEUES", "default:3")]).await;
    let mut player = node.client().await;
    let token = player.signed_up(&unique_name("gone")).await;
    assert_eq!(player.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    redis_cli(redis.port(), &["CLIENT", "PAUSE", "4000", "ALL"]);
    player.close().await; // its release times out: Redis does not answer
    let released = eventually(Duration::from_secs(20), || async {
        let mut again = node.client().await;
        again.token_auth(&token).await["type"] == "auth_success"
            && again.request(json!({"type": "queue_status"})).await["payload"] == json!({"queued": false})
    })
    .await;
    assert!(released, "the ticket of a connection that ended during the pause is still queued");
}

/// Each ticket counts its own failed tries: a player formed with one whose tries are
/// nearly used up is not sent `match_error` with it, but goes back for its own tries.
#[tokio::test]
async fn a_fresh_player_keeps_its_own_tries_when_formed_with_a_retried_one() {
    let cluster = Cluster::new().await;
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
