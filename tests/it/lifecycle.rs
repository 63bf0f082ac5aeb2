//! The connection owns its lifecycle: it keeps writing while a handler waits, and
//! ending a session (logout, a new login, the socket going away) releases it once.
//! In-process nodes on the in-memory stores.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use openchampps::handlers::Request;
use openchampps::protocol::Reply;

/// A player whose `set_username` waits 2 s on a slow session store keeps receiving
/// chat meanwhile: 1,000 messages, four times its outgoing queue, without being cut
/// off as too slow, and the reply still arrives.
#[tokio::test]
async fn a_player_waiting_on_a_slow_store_still_receives_chat() {
    let node = inproc_node(&["--max-messages-per-sec", "0", "--chat-messages-per-sec", "0"]).await;
    let mut waiting = node.player("waiting").await;
    let mut talker = node.player("talker").await;

    node.shared.slow_sessions(Duration::from_secs(2));
    waiting.send_request(&Request::SetUsername("Patient".into())).await;
    let reader = tokio::spawn(async move {
        let (mut chat, mut renamed) = (0, false);
        while chat < 1000 || !renamed {
            match waiting.recv_reply().await {
                Reply::GlobalChat(_) => chat += 1,
                Reply::DisplayNameUpdated(name) => {
                    assert_eq!(name, "Patient");
                    renamed = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (chat, renamed)
    });
    for batch in 0..10 {
        for i in 0..100 {
            talker.send_request(&Request::GlobalChat(format!("message {batch}-{i}"))).await;
        }
        for _ in 0..100 {
            assert!(matches!(talker.recv_reply().await, Reply::GlobalChat(_)));
        }
    }
    let (chat, renamed) = tokio::time::timeout(Duration::from_secs(10), reader).await.expect("reader done").unwrap();
    assert_eq!((chat, renamed), (1000, true));
}

/// Replies keep their order even when chat is written in between.
#[tokio::test]
async fn replies_stay_in_order_while_chat_flows() {
    let node = inproc_node(&[]).await;
    let mut player = node.player("orderly").await;
    node.shared.slow_sessions(Duration::from_millis(200));
    player.send_request(&Request::SetUsername("First".into())).await;
    player.send_request(&Request::Count).await;
    player.send_request(&Request::GlobalChat("between".into())).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(match player.recv_reply().await {
            Reply::DisplayNameUpdated(_) => "renamed",
            Reply::PlayerCount(_) => "count",
            Reply::GlobalChat(_) => "chat",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen, ["renamed", "count", "chat"]);
}

/// Logout, a second login on the same connection and a disconnect each end the
/// session once: the node's count follows.
#[tokio::test]
async fn every_way_a_session_ends_releases_it() {
    let node = inproc_node(&[]).await;
    let mut observer = node.player("observer").await;
    let count = |v: serde_json::Value| v["payload"].as_u64().unwrap();

    let mut player = node.client().await;
    let name = unique_name("leaver");
    player.signed_up(&name).await;
    assert_eq!(count(observer.ask(Request::Count).await), 2);
    // A second login on the same connection replaces the session.
    assert_eq!(player.login(&name, PASSWORD).await["type"], "auth_success");
    assert_eq!(count(observer.ask(Request::Count).await), 2);
    assert_eq!(player.ask(Request::Logout).await["type"], "logged_out");
    assert_eq!(count(observer.ask(Request::Count).await), 1);
    assert_eq!(player.login(&name, PASSWORD).await["type"], "auth_success");
    assert_eq!(count(observer.ask(Request::Count).await), 2);
    player.close().await;
    for _ in 0..50 {
        if count(observer.ask(Request::Count).await) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the closed connection still counts");
}

/// What the test binary's log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line logged in this test binary from now on. A process-wide subscriber: a
/// thread's own (`set_default`) can miss lines whose call sites tests on other
/// threads reached first.
fn captured_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = {
            let captured = captured.clone();
            move || captured.clone()
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the one subscriber of this test binary");
        captured
    })
    .clone()
}

/// Every line a connection logs is in its span: the connection's id, the node's, and
/// the account once the connection authenticates, so one player's lines can be found.
#[tokio::test]
async fn a_connections_log_lines_name_its_node_and_account() {
    let captured = captured_logs();
    let node = inproc_node(&[]).await;
    let name = unique_name("traced");
    let mut player = node.client().await;
    player.signed_up(&name).await;
    player.close().await;

    let text = || String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let ended = |text: &str| {
        text.lines()
            .find(|l| l.contains("connection ended") && l.contains(&format!("account={name}")))
            .map(str::to_owned)
    };
    assert!(eventually(Duration::from_secs(10), || async { ended(&text()).is_some() }).await, "{}", text());
    let line = ended(&text()).unwrap();
    assert!(line.contains("connection{id=") && line.contains(&format!("node={}", node.node_id)), "{line}");
}
