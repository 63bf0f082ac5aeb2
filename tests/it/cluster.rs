//! Several nodes on one PostgreSQL and Redis behave as one server.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

async fn counts(clients: &mut [&mut Client]) -> Vec<u64> {
    let mut out = Vec::new();
    for c in clients.iter_mut() {
        out.push(c.request(json!({"type": "count"})).await["payload"].as_u64().unwrap());
    }
    out
}

#[tokio::test]
async fn three_nodes_are_one_server() {
    let cluster = Cluster::new().await;
    let mut nodes = [cluster.node().await, cluster.node().await, cluster.node().await];

    // Log in on node 1; the token works on nodes 2 and 3.
    let jane = unique_name("jane");
    nodes[0].client().await.signed_up(&jane).await;
    let mut on1 = nodes[0].client().await;
    let token = on1.login(&jane, PASSWORD).await["payload"]["token"].as_str().unwrap().to_owned();
    for node in &nodes[1..] {
        let reply = node.client().await.token_auth(&token).await;
        assert_eq!(reply, json!({"type": "auth_success", "payload": {"username": jane, "token": token}}));
    }

    // Display name set on node 1 shows in chat sent from node 3 after a reconnect there.
    on1.request(json!({"type": "set_username", "payload": "JaneOnOne"})).await;
    on1.close().await;
    let mut on3 = nodes[2].client().await;
    on3.token_auth(&token).await;
    let mut bob2 = nodes[1].player("bob").await;
    bob2.request(json!({"type": "set_username", "payload": "BobOnTwo"})).await;
    let mut carol1 = nodes[0].player("carol").await;

    on3.send(json!({"type": "global_chat", "payload": "from three"})).await;
    let expected = chat("global_chat", "JaneOnOne", &jane, "from three");
    assert_eq!(on3.recv().await, expected);
    assert_eq!(bob2.recv().await, expected);
    assert_eq!(carol1.recv().await, expected);

    // Global chat from node 1 reaches clients on nodes 2 and 3.
    carol1.send(json!({"type": "global_chat", "payload": "from one"})).await;
    for client in [&mut carol1, &mut bob2, &mut on3] {
        assert_eq!(client.recv().await["payload"]["message"], "from one");
    }

    // Private chat from node 2 to a display name on node 3.
    bob2.send(json!({"type": "private_chat", "payload": {"target": "JaneOnOne", "message": "psst"}})).await;
    let private = on3.recv().await;
    assert_eq!(private["payload"]["username"], "BobOnTwo");
    assert_eq!(private["payload"]["message"], "psst");
    carol1.expect_silence(Duration::from_millis(300)).await;
    bob2.expect_silence(Duration::from_millis(10)).await;

    // `count` is equal on all three: three players (jane on 3, bob on 2, carol on 1)
    // plus two more on node 3 that are about to disappear with it.
    let _extra = [nodes[2].player("extra").await, nodes[2].player("extra").await];
    let mut equal = false;
    for _ in 0..50 {
        if counts(&mut [&mut carol1, &mut bob2, &mut on3]).await == vec![5, 5, 5] {
            equal = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(equal, "counts never agreed on 5: {:?}", counts(&mut [&mut carol1, &mut bob2, &mut on3]).await);

    // Node 3 dies without warning: its three players stop counting within 15 s.
    nodes[2].kill();
    let started = std::time::Instant::now();
    let mut healed = false;
    while started.elapsed() < Duration::from_secs(15) {
        if counts(&mut [&mut carol1, &mut bob2]).await == vec![2, 2] {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(healed, "count did not drop within 15 s");

    // Its players reconnect with their token on another node.
    let mut back = nodes[0].client().await;
    assert_eq!(back.token_auth(&token).await["type"], "auth_success");
    back.send(json!({"type": "global_chat", "payload": "back"})).await;
    assert_eq!(back.recv().await["payload"]["username"], "JaneOnOne");
}

#[tokio::test]
async fn nodes_started_together_on_an_empty_database_all_come_up() {
    let cluster = Cluster::new().await;
    let nodes: Vec<NodeProc> = (0..3).map(|_| cluster.spawn_node(&[])).collect();
    for node in &nodes {
        node.wait_ready().await;
    }
    let db = cluster.psql().await;
    let applied: i64 = db.query_one("SELECT count(*) FROM refinery_schema_history", &[]).await.unwrap().get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap().count() as i64;
    assert_eq!(applied, files, "each migration applied exactly once");
    // And they serve: an account made on one logs in on the others.
    let name = unique_name("jane");
    nodes[0].client().await.signed_up(&name).await;
    for node in &nodes[1..] {
        assert_eq!(node.client().await.login(&name, PASSWORD).await["type"], "auth_success");
    }
}

#[tokio::test]
async fn a_row_with_only_a_name_and_an_argon2id_hash_is_a_working_account() {
    let cluster = Cluster::new().await;
    let node = cluster.node().await;
    // A hash made outside the node, with the OWASP parameters (not the node's).
    use argon2::PasswordHasher;
    let phc = argon2::Argon2::default().hash_password(b"operatorMade1").unwrap().to_string();
    let db = cluster.psql().await;
    db.execute("INSERT INTO users (username, password_hash) VALUES ('seeded.user', $1)", &[&phc]).await.unwrap();
    let reply = node.client().await.login("seeded.user", "operatorMade1").await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    // Logging in rehashed it to the node's configured parameters.
    let row = db.query_one("SELECT password_hash FROM users WHERE username = 'seeded.user'", &[]).await.unwrap();
    let rehashed: String = row.get(0);
    assert!(rehashed.contains("m=1024,t=1,p=1"), "{rehashed}");
    assert_eq!(node.client().await.login("seeded.user", "operatorMade1").await["type"], "auth_success");
}
