//! One WebSocket connection: reads frames, hands each to `dispatch` in arrival order,
//! writes replies and chat, pings, and closes with the code the contract names.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use hyper_tungstenite::HyperWebsocketStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::handlers;
use crate::metrics as m;
use crate::node::Node;
use crate::session::Session;

/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Buffers sized for many idle connections; frames over the limit fail with 1009.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    let limit = config.max_frame_bytes as usize;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_frame_size(Some(limit))
        .max_message_size(Some(limit))
}

/// Why the server ends a connection.
enum Ending {
    /// The client left or the socket failed: nothing to say.
    Gone,
    Close(CloseCode, &'static str),
}

pub struct Connection {
    node: Arc<Node>,
    ws: HyperWebsocketStream,
    session: Session,
    outbox: mpsc::Receiver<Message>,
    too_slow: Arc<Notify>,
}

impl Connection {
    pub fn new(node: Arc<Node>, ws: HyperWebsocketStream, id: u64, client_ip: IpAddr) -> Connection {
        let (tx, outbox) = mpsc::channel(node.config.outgoing_queue as usize);
        let too_slow = Arc::new(Notify::new());
        let session = Session::new(id, client_ip, tx, too_slow.clone());
        Connection { node, ws, session, outbox, too_slow }
    }

    /// Serves the connection until it ends; `going_away` closes it with 1001.
    pub async fn run(mut self, going_away: CancellationToken) {
        m::connection_opened();
        let ending = self.serve(&going_away).await;
        self.session.logout(&self.node);
        if let Ending::Close(code, reason) = ending {
            m::connection_killed(reason);
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = tokio::time::timeout(CLOSE_GRACE, self.ws.close(Some(frame))).await;
        }
        m::connection_closed();
    }

    async fn serve(&mut self, going_away: &CancellationToken) -> Ending {
        let config = &self.node.config;
        let ping_every = Duration::from_secs(config.ping_interval_secs);
        let silence_limit = Duration::from_secs(config.ping_timeout_secs);
        let auth_timeout = Duration::from_secs(config.auth_timeout_secs);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let auth_deadline = sleep(auth_timeout);
        tokio::pin!(auth_deadline);
        let too_slow = self.too_slow.clone();

        loop {
            let authenticated = self.session.is_authenticated();
            tokio::select! {
                biased;
                _ = going_away.cancelled() => return Ending::Close(CloseCode::Away, "server shutting down"),
                _ = too_slow.notified() => return Ending::Close(CloseCode::Policy, "client too slow"),
                frame = self.ws.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            let reply = handlers::dispatch(&self.node, &mut self.session, text.as_str()).await;
                            if let Some(reply) = reply {
                                if let Some(end) = self.send(Message::text(reply)).await {
                                    return end;
                                }
                            }
                            if authenticated && !self.session.is_authenticated() {
                                auth_deadline.as_mut().reset(Instant::now() + auth_timeout);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            return Ending::Close(CloseCode::Unsupported, "binary frames are not supported");
                        }
                        Some(Ok(_)) => {} // ping, pong, close: tungstenite answers those itself
                        Some(Err(WsError::Capacity(_))) => return Ending::Close(CloseCode::Size, "frame too large"),
                        Some(Err(_)) | None => return Ending::Gone,
                    }
                }
                Some(message) = self.outbox.recv() => {
                    if let Some(end) = self.send(message).await {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= silence_limit {
                        return Ending::Close(CloseCode::Policy, "ping timeout");
                    }
                    // Half an interval of quiet is enough for a ping: waiting for a full
                    // one could skip a tick and leave a live client unpinged until timeout.
                    if last_heard.elapsed() >= ping_every / 2 {
                        if let Some(end) = self.send(Message::Ping(Default::default())).await {
                            return end;
                        }
                    }
                }
                _ = &mut auth_deadline, if !authenticated => {
                    return Ending::Close(CloseCode::Policy, "authentication timeout");
                }
            }
        }
    }

    /// Writes one message; a client too slow to take it is cut off instead of waited for.
    async fn send(&mut self, message: Message) -> Option<Ending> {
        tokio::select! {
            result = self.ws.send(message) => result.err().map(|_| Ending::Gone),
            _ = self.too_slow.notified() => Some(Ending::Close(CloseCode::Policy, "client too slow")),
        }
    }
}
