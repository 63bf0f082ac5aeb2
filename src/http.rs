//! HTTP on the public port (`/ws`, `/health`, `/ready`, `POST /register`) and on the
//! metrics port (`/metrics`, and for game servers `POST /matches/<id>/confirm`,
//! `POST /matches/<id>/end`, `GET /servers/<server id>/match`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accounts::create_account;
use crate::config::{ClientIpHeader, Config, TrustedProxies};
use crate::connection::{self, websocket_config, Connection};
use crate::error::Error;
use crate::metrics as m;
use crate::node::{Node, Status};
use crate::protocol::Registration;
use crate::ratelimit::AddressSlots;

type Body = Full<Bytes>;

/// `POST /register`'s answer to a username or password under its minimum length
/// (`names::MIN_USERNAME_CHARS`, `accounts::MIN_PASSWORD_CHARS`).
const TOO_SHORT: &str = "Username must be at least 3 characters and password at least 6 characters";

/// Store checks behind `/ready` give up after this long and report the store down.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the public port's request handler needs.
pub struct Public {
    pub node: Arc<Node>,
    /// One permit per open WebSocket: caps connections per node.
    pub connections: Arc<Semaphore>,
    /// Caps the connections one client address holds on this node.
    pub per_address: Arc<AddressSlots>,
    /// Cancelled at the end of the drain: remaining sockets close with 1001.
    pub going_away: CancellationToken,
    pub next_id: AtomicU64,
}

pub async fn public(
    public: Arc<Public>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") if hyper_tungstenite::is_upgrade_request(&req) => upgrade(&public, peer, &mut req),
        (_, "/ws") => text(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required"),
        (&Method::GET, "/health") => text(StatusCode::OK, "OK"),
        (&Method::GET, "/ready") => ready(&public.node).await,
        (&Method::POST, "/register") => register(&public.node, peer, req).await,
        (_, "/register") => text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "Not found"),
    };
    Ok(response)
}

pub async fn metrics(
    handle: PrometheusHandle,
    node: Arc<Node>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let game_server = |method: Method| if req.method() == method { None } else { Some(not_allowed()) };
    if let Some((match_id, action)) = path.strip_prefix("/matches/").and_then(|rest| rest.split_once('/')) {
        if matches!(action, "end" | "confirm") {
            return Ok(match game_server(Method::POST) {
                Some(refused) => refused,
                None => match_request(&node, req.headers(), match_id, action == "end").await,
            });
        }
    }
    if let Some(server) = path.strip_prefix("/servers/").and_then(|rest| rest.strip_suffix("/match")) {
        return Ok(match game_server(Method::GET) {
            Some(refused) => refused,
            None => server_match(&node, req.headers(), server).await,
        });
    }
    Ok(match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(handle.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "Not found"),
    })
}

/// The refusal of a game server's request that does not carry the credential of
/// `scope:id` (`ticket::credential` under GAME_SERVER_TOKEN); `None` when it does.
fn refused_credential(node: &Node, headers: &HeaderMap, scope: &str, id: &str) -> Option<Response<Body>> {
    let key = &node.config.game_server_token;
    if key.is_empty() {
        return Some(text(StatusCode::FORBIDDEN, "Ending matches is off: GAME_SERVER_TOKEN is not set"));
    }
    let sent = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compared as digests: the time taken says nothing about the credential.
    let digest = |s: &str| Sha256::digest(s.as_bytes());
    let expected = crate::matchmaking::ticket::credential(key, scope, id);
    if sent.is_none_or(|sent| digest(sent) != digest(&expected)) {
        return Some(text(StatusCode::UNAUTHORIZED, "Bad or missing bearer token"));
    }
    None
}

/// `POST /matches/<match_id>/end` or `/confirm` from the match's game server, with the
/// match's credential: ends the match, or keeps it (and its static server's lease) for
/// GAME_SERVER_LEASE_SECS from now.
async fn match_request(node: &Node, headers: &HeaderMap, match_id: &str, end: bool) -> Response<Body> {
    if let Some(refused) = refused_credential(node, headers, "match", match_id) {
        return refused;
    }
    let queue = &node.stores.queue;
    let done =
        if end { queue.end(match_id).await } else { queue.confirm(match_id, node.config.game_server_lease_secs).await };
    match done {
        Ok(true) if end => {
            tracing::info!(%match_id, "match ended by its game server");
            text(StatusCode::OK, "Match ended")
        }
        Ok(true) => text(StatusCode::OK, "Match confirmed"),
        Ok(false) => text(StatusCode::NOT_FOUND, "No such match"),
        Err(e) => store_unavailable(e),
    }
}

/// `GET /servers/<host:port>/match` from a static-pool game server, with the server's
/// credential: the started match holding its lease, with that match's credential.
async fn server_match(node: &Node, headers: &HeaderMap, server: &str) -> Response<Body> {
    if let Some(refused) = refused_credential(node, headers, "server", server) {
        return refused;
    }
    match node.stores.queue.current(server).await {
        Ok(Some((match_id, players))) => {
            let token = crate::matchmaking::ticket::credential(&node.config.game_server_token, "match", &match_id);
            json_body(StatusCode::OK, json!({"match_id": match_id, "players": players, "token": token}))
        }
        Ok(None) => text(StatusCode::NOT_FOUND, "No match"),
        Err(e) => store_unavailable(e),
    }
}

fn not_allowed() -> Response<Body> {
    text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

fn upgrade(public: &Public, peer: SocketAddr, req: &mut Request<Incoming>) -> Response<Body> {
    if public.node.status() == Status::Draining {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Server is shutting down");
    }
    let client_ip = client_of(&public.node.config, peer, req.headers());
    let Some(slot) = public.per_address.take(client_ip) else {
        m::connection_refused(m::Refused::AddressFull);
        return text(StatusCode::TOO_MANY_REQUESTS, "Too many connections from this address");
    };
    let Ok(permit) = public.connections.clone().try_acquire_owned() else {
        m::connection_refused(m::Refused::NodeFull);
        return text(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let config = websocket_config(&public.node.config);
    let (response, websocket) = match hyper_tungstenite::upgrade(req, Some(config)) {
        Ok(upgrade) => upgrade,
        Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid WebSocket upgrade"),
    };
    let id = public.next_id.fetch_add(1, Ordering::Relaxed);
    let node = public.node.clone();
    let going_away = public.going_away.clone();
    // Every line the connection logs, the handshake's included, is in its span.
    let span = connection::span(&node.node_id, id);
    // Laid out so that this future, held by every connection for its lifetime, keeps
    // nothing twice (issue #20): the handshake's result is moved out of a statement
    // (a `match` around `run` would keep it, ~330 bytes, until the connection ends),
    // and the permit and slot stay where they were captured (moving them to a local
    // would keep both copies).
    let connection = async move {
        let ws = match websocket.await {
            Ok(ws) => ws,
            Err(e) => return tracing::debug!(parent: &span, error = %e, "WebSocket handshake failed"),
        };
        Connection::new(node, ws, id, client_ip, span.clone()).run(going_away, &span).await;
        drop((permit, slot));
    };
    // Boxed: spawning moves a future three times on its way into the task; a box is
    // one pointer to move (callgrind: ~2k instructions of copying per connection).
    tokio::spawn(Box::pin(connection));
    response
}

/// The client's address. Starting at the socket peer, the walk goes right to left
/// through the hops `header` lists (`X-Forwarded-For`: every entry, in order; `X-Real-IP`:
/// its one address) while the address reached is a trusted proxy: the client is the
/// first untrusted address, or the last address reached when the hops run out. An entry
/// that does not parse (`parse_hop`) ends the walk where it is: what stands left of it
/// was written by no proxy that can be trusted, so a garbage entry can never make the
/// client's own claim count.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies, header: ClientIpHeader) -> IpAddr {
    let mut values = headers.get_all(header.name()).iter().map(|v| v.to_str().unwrap_or(""));
    let hops: Vec<&str> = match header {
        ClientIpHeader::XForwardedFor => values.flat_map(|v| v.split(',')).collect(),
        // Set by the proxy, overwriting the client's: only the last line can be its.
        ClientIpHeader::XRealIp => values.next_back().into_iter().collect(),
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !trusted.contains(&client) {
            break;
        }
        match parse_hop(hop) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// The client address of a request on the public port, by the node's settings.
fn client_of(config: &Config, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    client_ip(peer.ip(), headers, &config.trusted_proxies, config.client_ip_header)
}

/// One hop of a forwarding header: `ip`, `ip:port`, `[v6]:port` or `[v6]`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

async fn ready(node: &Node) -> Response<Body> {
    let up = |ok: bool| if ok { "up" } else { "down" };
    let (postgres, redis) = tokio::join!(
        tokio::time::timeout(READY_CHECK_TIMEOUT, node.stores.users.ping()),
        tokio::time::timeout(READY_CHECK_TIMEOUT, node.stores.shared.ping()),
    );
    let status = node.status();
    let body = json!({
        "status": match status { Status::Starting => "starting", Status::Ready => "ready", Status::Draining => "draining" },
        "postgres": up(matches!(postgres, Ok(Ok(())))),
        "redis": up(matches!(redis, Ok(Ok(())))),
    });
    let code = if status == Status::Ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_body(code, body)
}

async fn register(node: &Node, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    const BAD_BODY: &str = "Invalid request body";
    let client_ip = client_of(&node.config, peer, req.headers());
    let body = Limited::new(req.into_body(), node.config.max_frame_bytes as usize).collect();
    // A body trickled byte by byte must not hold a descriptor for minutes.
    let limit = Duration::from_secs(node.config.http_body_timeout_secs);
    let Ok(Ok(body)) = tokio::time::timeout(limit, body).await else {
        return text(StatusCode::BAD_REQUEST, BAD_BODY);
    };
    let body = body.to_bytes();
    if !body.trim_ascii_start().starts_with(b"{") {
        return text(StatusCode::BAD_REQUEST, BAD_BODY);
    }
    let Ok(registration) = serde_json::from_slice::<Registration>(&body) else {
        return text(StatusCode::BAD_REQUEST, BAD_BODY);
    };
    match create_account(node, registration, client_ip).await {
        Ok(_) => {
            json_body(StatusCode::CREATED, json!({"status": "success", "message": "User registered successfully"}))
        }
        Err(Error::UsernameTooShort | Error::PasswordTooShort) => text(StatusCode::BAD_REQUEST, TOO_SHORT),
        Err(Error::InvalidRegistrationFormat) => text(StatusCode::BAD_REQUEST, BAD_BODY),
        Err(Error::UsernameTaken | Error::EmailTaken) => text(StatusCode::CONFLICT, "Username or email already exists"),
        Err(Error::RegistrationRateLimited) => {
            text(StatusCode::TOO_MANY_REQUESTS, "Too many registrations, try again later")
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    }
}

fn json_body(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A game server's request the shared store could not answer: logged, and 503 (retry).
fn store_unavailable(error: crate::error::StoreError) -> Response<Body> {
    crate::error::store_skipped(error, "game server told to retry");
    text(StatusCode::SERVICE_UNAVAILABLE, "Shared store unavailable, try again")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_too_short_answer_names_the_minimums() {
        let (username, password) = (crate::names::MIN_USERNAME_CHARS, crate::accounts::MIN_PASSWORD_CHARS);
        assert_eq!(
            TOO_SHORT,
            format!("Username must be at least {username} characters and password at least {password} characters")
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const XFF: ClientIpHeader = ClientIpHeader::XForwardedFor;
    const REAL: ClientIpHeader = ClientIpHeader::XRealIp;

    #[test]
    fn forwarded_address_counts_only_behind_a_trusted_proxy() {
        let lb = ip("10.0.0.5");
        let trusted: TrustedProxies = "10.0.0.0/8, ".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.9")]);
        assert_eq!(client_ip(lb, &h, &trusted, XFF), ip("203.0.113.7"));
        assert_eq!(client_ip(lb, &h, &TrustedProxies::default(), XFF), lb);
        let stranger = ip("198.51.100.1");
        assert_eq!(client_ip(stranger, &h, &trusted, XFF), stranger);
        let real = headers(&[("x-real-ip", "203.0.113.8")]);
        assert_eq!(client_ip(lb, &real, &trusted, REAL), ip("203.0.113.8"));
        assert_eq!(client_ip(stranger, &real, &trusted, REAL), stranger);
        // No header: the proxy itself; every hop trusted: the farthest one.
        assert_eq!(client_ip(lb, &HeaderMap::new(), &trusted, XFF), lb);
        let inside = headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.9")]);
        assert_eq!(client_ip(lb, &inside, &trusted, XFF), ip("10.1.1.1"));
    }

    #[test]
    fn hops_parse_with_ports_and_brackets() {
        assert_eq!(parse_hop(" 1.2.3.4 "), Some(ip("1.2.3.4")));
        assert_eq!(parse_hop("1.2.3.4:5678"), Some(ip("1.2.3.4")));
        assert_eq!(parse_hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        for garbage in [
            "",
            "unknown",
            "1.2.3",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "[1.2.3.4]",
            "[2001:db8::1",
            "2001:db8::1]:80",
            "_hidden",
        ] {
            assert_eq!(parse_hop(garbage), None, "{garbage:?}");
        }
    }

    /// The client's own entries (left of what the trusted proxy appended) never count:
    /// not past an entry with a port, and not past one that does not parse.
    #[test]
    fn a_client_cannot_forge_its_address_past_the_trusted_proxy() {
        let proxy = ip("127.0.0.1");
        let trusted: TrustedProxies = "127.0.0.1/32".parse().unwrap();
        let client = |xff: &str| client_ip(proxy, &headers(&[("x-forwarded-for", xff)]), &trusted, XFF);
        assert_eq!(client("9.9.9.9, 1.2.3.4:5678"), ip("1.2.3.4"));
        assert_eq!(client("garbage, 1.2.3.4:5678"), ip("1.2.3.4"));
        assert_eq!(client("9.9.9.9, [2001:db8::7]:5678"), ip("2001:db8::7"));
        // Garbage where the proxy's hop should be: nothing left of it is believed, the
        // walk ends at the last trusted address.
        assert_eq!(client("9.9.9.9, garbage"), proxy);
        assert_eq!(client("9.9.9.9, garbage, 127.0.0.1"), proxy);
        assert_eq!(client("9.9.9.9, 1.2.3.4,"), proxy);
        // Several header lines are one list, in order.
        let two = headers(&[("x-forwarded-for", "9.9.9.9"), ("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(proxy, &two, &trusted, XFF), ip("1.2.3.4"));
    }

    /// Only the header the proxy sets counts: the other one is the client's to forge.
    #[test]
    fn only_the_configured_header_counts() {
        let proxy = ip("127.0.0.1");
        let trusted: TrustedProxies = "127.0.0.1/32".parse().unwrap();
        let both = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(client_ip(proxy, &both, &trusted, XFF), ip("1.2.3.4"));
        assert_eq!(client_ip(proxy, &both, &trusted, REAL), ip("5.6.7.8"));
        let forged_real = headers(&[("x-real-ip", "5.6.7.8")]);
        assert_eq!(client_ip(proxy, &forged_real, &trusted, XFF), proxy);
        let real_with_port = headers(&[("x-real-ip", "[2001:db8::9]:1234")]);
        assert_eq!(client_ip(proxy, &real_with_port, &trusted, REAL), ip("2001:db8::9"));
        assert_eq!(client_ip(proxy, &headers(&[("x-real-ip", "nonsense")]), &trusted, REAL), proxy);
        assert_eq!("X-Real-IP".parse::<ClientIpHeader>(), Ok(REAL));
        assert!("forwarded".parse::<ClientIpHeader>().is_err());
    }
}
