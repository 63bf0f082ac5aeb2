//! Matchmaking across the cluster (MATCHMAKING.md), on node processes over
//! PostgreSQL and Redis: the cases that need them.
//!
//! Which tier holds what:
//! - here: racing nodes putting each player in exactly one match (the Lua scripts'
//!   atomicity under a race), a forming node SIGKILLed and found dead by Redis's
//!   heartbeats (failover; its players put back), the command allocator run by a
//!   node process, a release retried while Redis is paused, look-alike accounts that
//!   only PostgreSQL's `lower()` keeps apart, the `openchampps ticket` command;
//! - `tests/matchmaking_inproc.rs`, on in-process nodes over the in-memory twins, in
//!   milliseconds to seconds: the queue's logic (join and match across nodes, one
//!   ticket per account moving between connections, leave from another connection,
//!   disconnect, FIFO order, put-back and tries, `match_error`, a killed node's
//!   tickets and forming match, `match_found` on reconnect and after a move, none for
//!   a dequeued connection, ending a match);
//! - `tests/abuse_matches.rs`: game servers' credentials, leases and the match cap;
//!   `tests/topologies.rs`: matchmaking on Sentinel and Cluster; `tests/contract.rs`:
//!   the queue twin against Redis, case by case.

use std::time::Duration;

use crate::common::stores::{redis_cli, PrivateRedis, TempDir};
use crate::common::*;
use serde_json::{json, Value};

const KEYS: (&str, &str) = ("MATCH_TICKET_KEYS", "k1:0123456789abcdef0123456789abcdef");
const SERVERS: (&str, &str) = ("GAME_SERVERS", "203.0.113.7:7001,203.0.113.7:7002");

/// The node forming a match dies while it allocates: another node puts the players
/// back at their places, in order, without those who left meanwhile; the next node
/// able to form matches seats them. The node is a process, killed with SIGKILL, and
/// found dead by the other's heartbeats in Redis: failover end to end
/// (`tests/matchmaking_inproc.rs` has the queue logic of it, on the twins).
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
    assert_queued_first_and_second(&mut alice, &mut bob).await;

    // A node forming matches of two seats them.
    let _seater = cluster.node_with(&[KEYS, SERVERS]).await;
    assert_matched_together(&mut alice, &mut bob).await;
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

/// Three nodes race to form matches over 300 players: each player ends in exactly one match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_put_every_player_in_exactly_one_match() {
    let _alone = HEAVY.lock().await;
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
