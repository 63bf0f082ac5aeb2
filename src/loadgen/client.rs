//! One load-generator connection: a real WebSocket client speaking the node's protocol.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::handlers::Request;
use crate::protocol::{parse_envelope, Credentials, Registration, Reply, TokenPayload};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A node to drive: its WebSocket URL and the socket address it resolves to.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn resolve(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err(format!("{url}: wss:// is not supported; drive the node's plain ws:// port")),
            _ => return Err(format!("{url}: expected a ws:// URL such as ws://127.0.0.1:8080/ws")),
        }
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {host} has no address"))?;
        Ok(Target { url: url.to_owned(), addr })
    }
}

/// Why an op failed; `Transport` means the connection is unusable and must be reopened.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The node answered with an error (or an unexpected reply): the connection lives on.
    Reply(String),
    /// The socket failed, closed, or did not answer in time.
    Transport(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Reply(t) | Failure::Transport(t) => t,
        }
    }
}

pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

/// Small buffers: the idle mode holds tens of thousands of these in one process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

impl Client {
    /// Opens a TCP connection (from `local` when given) and does the WebSocket handshake.
    pub async fn connect(target: &Target, local: Option<IpAddr>) -> Result<Client, Failure> {
        let socket = if target.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| Failure::Transport(format!("socket: {e}")))?;
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| Failure::Transport(format!("bind {ip}: {e}")))?;
        }
        let stream = socket.connect(target.addr).await.map_err(|e| Failure::Transport(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (ws, _response) = tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config()))
            .await
            .map_err(|e| Failure::Transport(format!("handshake: {e}")))?;
        Ok(Client { ws })
    }

    pub async fn send(&mut self, text: String) -> Result<(), Failure> {
        self.ws.send(Message::text(text)).await.map_err(|e| Failure::Transport(format!("send: {e}")))
    }

    /// The next text frame; pings are answered by tungstenite while reading.
    pub async fn recv(&mut self) -> Result<String, Failure> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    let why =
                        frame.map_or_else(|| "no code".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason));
                    return Err(Failure::Transport(format!("closed by node ({why})")));
                }
                Some(Ok(Message::Binary(_))) => return Err(Failure::Reply("unexpected binary frame".into())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failure::Transport(format!("receive: {e}"))),
                None => return Err(Failure::Transport("connection closed".into())),
            }
        }
    }

    /// Sends `request` and waits for its reply, which must have type `expect`. Chat
    /// frames arriving meanwhile are skipped. Returns the reply's raw text.
    pub async fn request(&mut self, request: String, expect: &str) -> Result<String, Failure> {
        self.send(request).await?;
        loop {
            let text = self.recv().await?;
            let Some(frame) = parse_envelope(&text) else {
                return Err(Failure::Reply("reply is not a JSON message".into()));
            };
            match &*frame.kind {
                kind if kind == expect => return Ok(text),
                "global_chat" | "private_chat" => continue,
                _ => return Err(Failure::Reply(describe_error(&text))),
            }
        }
    }

    /// `request` with a deadline; running out of time is a transport failure (the
    /// reply may still come, so the connection cannot be trusted to stay in step).
    pub async fn request_within(&mut self, request: String, expect: &str, limit: Duration) -> Result<String, Failure> {
        match tokio::time::timeout(limit, self.request(request, expect)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Transport("timeout".into())),
        }
    }

    /// Creates the account over the `register` message, or logs into it when it
    /// already exists. Returns its token.
    pub async fn register_or_login(
        &mut self,
        username: &str,
        password: &str,
        limit: Duration,
    ) -> Result<String, Failure> {
        let registration =
            Registration { username: username.to_owned(), password: password.to_owned(), email: None, resume: None };
        match self.request_within(Request::Register(registration).to_json(), "register_success", limit).await {
            Ok(text) => token_of(&text),
            Err(Failure::Reply(e)) if e.contains("Username already exists") => {
                let reply = self.request_within(login_message(username, password), "auth_success", limit).await?;
                token_of(&reply)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn token_auth(&mut self, token: &str, limit: Duration) -> Result<(), Failure> {
        self.request_within(token_auth_message(token), "auth_success", limit).await.map(|_| ())
    }
}

pub fn login_message(username: &str, password: &str) -> String {
    Request::Login(Credentials { username: username.to_owned(), password: password.to_owned(), resume: None }).to_json()
}

pub fn token_auth_message(token: &str) -> String {
    Request::TokenAuth(TokenPayload { token: token.to_owned(), resume: None }).to_json()
}

fn token_of(reply: &str) -> Result<String, Failure> {
    match Reply::parse(reply) {
        Some(Reply::AuthSuccess { token, .. } | Reply::RegisterSuccess { token, .. }) => Ok(token.into_owned()),
        _ => Err(Failure::Reply("reply without a token".into())),
    }
}

/// The text errors are grouped by: `<type>: <message>` (plus the code of `error`s).
fn describe_error(text: &str) -> String {
    match Reply::parse(text) {
        Some(Reply::Error { message, code }) => format!("error {code}: {message}"),
        Some(Reply::AuthError { message }) => format!("auth_error: {message}"),
        _ => match parse_envelope(text) {
            Some(frame) => format!("unexpected reply {}", frame.kind),
            None => "reply is not a JSON message".into(),
        },
    }
}
