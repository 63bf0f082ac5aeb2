//! Hostile players at the transport: which address a node believes a client has.
//! Each test performs the attack against a real node process, PostgreSQL and Redis.

mod common;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

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
