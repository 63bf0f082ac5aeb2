//! Hostile players at the transport: what a node does when it cuts a client off, and
//! which address it believes a client has. Each test performs the attack against a
//! real node process, PostgreSQL and Redis.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Sends `count` messages back to back on a fresh connection, then reads until the
/// node closes: the replies read, and the close frame (None: the connection ended
/// without one, as a client sees 1006).
async fn flood(url: &str, count: usize) -> (Vec<serde_json::Value>, Option<CloseFrame>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connect");
    let message = Message::text(r#"{"type":"count"}"#);
    let mut burst = futures_util::stream::iter((0..count).map(|_| Ok::<_, WsError>(message.clone())));
    ws.send_all(&mut burst).await.expect("send the burst");
    let mut replies = Vec::new();
    loop {
        match tokio::time::timeout(REPLY_TIMEOUT, ws.next()).await.expect("the node neither replied nor closed") {
            Some(Ok(Message::Text(text))) => replies.push(serde_json::from_str(&text).expect("reply is JSON")),
            Some(Ok(Message::Close(frame))) => return (replies, frame),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (replies, None),
        }
    }
}

/// A client the node closes for sending too fast gets every reply the node wrote before
/// the close, and the close frame with its reason: the node lingers, reading and
/// discarding what is still in flight, instead of resetting the connection (1006).
/// 100 clients at once, each sending 200 messages back to back (burst 40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closed_for_flooding_gets_every_reply_and_the_close_reason() {
    let _alone = HEAVY.lock().await;
    let cluster = Cluster::new().await;
    let node = cluster.node_with(&[("MAX_MESSAGES_PER_SEC", "20")]).await;
    let url = node.ws_url();
    let floods = (0..100).map(|_| flood(&url, 200));
    let outcomes = futures_util::future::join_all(floods).await;

    let auth_required = error("Authentication required", "AUTH_REQUIRED");
    let mut failures = Vec::new();
    for (i, (replies, close)) in outcomes.iter().enumerate() {
        let closed_right = close
            .as_ref()
            .is_some_and(|frame| frame.code == CloseCode::Policy && frame.reason.as_str() == "too many messages");
        // The burst is 40; tokens refilling while the node works may allow a few more.
        let replied_right = (40..200).contains(&replies.len()) && replies.iter().all(|r| *r == auth_required);
        if !closed_right || !replied_right {
            failures.push(format!("client {i}: {} replies, close {close:?}", replies.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 clients lost replies or the close reason:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Garbage in front of the trusted proxy's own hop: a different random entry on every
/// connection.
fn garbage(i: usize) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    match i % 5 {
        0 => random,
        1 => format!("{}.{}.{}.{}", i % 250 + 1, i / 250 + 1, random.len(), 7),
        2 => format!("[2001:db8::{i:x}]:{}", 1000 + i),
        3 => format!("unknown, {random}:80"),
        _ => format!("{}, 198.51.100.{}", &random[..6], i % 250),
    }
}

/// A client cannot pick its address past the trusted proxy: whatever it writes into
/// X-Forwarded-For, the node takes the entry the proxy appended (here with a port), so
/// 300 connections claiming 300 addresses are one address, capped at
/// MAX_CONNECTIONS_PER_ADDRESS.
#[tokio::test]
async fn forwarded_garbage_cannot_escape_the_per_address_cap() {
    let cluster = Cluster::new().await;
    let limits = [("TRUSTED_PROXIES", "127.0.0.1/32"), ("MAX_CONNECTIONS_PER_ADDRESS", "20")];
    let node = cluster.node_with(&limits).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        let mut request = node.ws_url().into_client_request().unwrap();
        let forwarded = format!("{}, 1.2.3.4:5678", garbage(i));
        request.headers_mut().append("X-Forwarded-For", forwarded.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => held.push(ws),
            Err(WsError::Http(response)) if response.status() == 429 => refused += 1,
            Err(e) => panic!("connection {i} ({forwarded}) failed otherwise: {e}"),
        }
    }
    assert_eq!((held.len(), refused), (20, 280), "accepted and refused of 300 from 1.2.3.4");
    // Another address behind the same proxy still gets in.
    Client::connect_with_headers(&node.ws_url(), &[("X-Forwarded-For", "garbage, [2001:db8::5]:443")]).await;
}
