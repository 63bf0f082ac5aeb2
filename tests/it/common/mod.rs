//! Shared fixtures: a private database and Redis key prefix per test, real node
//! processes (`Cluster`), in-process nodes on in-memory stores, alone
//! (`inproc_node`) or sharing them as one cluster (`InProcCluster`), and a small
//! WebSocket/HTTP client. Everything a test creates is removed when its fixtures drop.
// Each test binary uses its own part of these helpers (none is unused by all).
#![allow(dead_code)]

pub mod stores;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use openchampps::config::Config;
use openchampps::handlers::Request;
use openchampps::protocol::{ChatLine, Credentials, Registration, Reply, TokenPayload};
use openchampps::server::{self, Listeners};
use openchampps::store::memory::{MemoryShared, MemoryUsers};
use openchampps::store::Stores;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const PASSWORD: &str = "securePassword123";

pub fn pg_admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL").unwrap_or_else(|_| PG_ADMIN_URL.into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| REDIS_URL.into())
}

/// Held by the tests that load the machine (floods, storms, soaks) and by those that
/// bound a latency: they take turns, so a bound never measures another test's
/// flood. A tokio mutex: a test holds it across awaits; the sync ones block on it.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database and a Redis key prefix of one test's own; dropped with it.
pub struct Cluster {
    pub db_name: String,
    pub db_url: String,
    pub prefix: String,
    pub redis_url: String,
}

impl Cluster {
    pub async fn new() -> Cluster {
        Cluster::with_stores(&pg_admin_url(), &redis_url()).await
    }

    /// A cluster on specific PostgreSQL / Redis servers (fault tests run their own).
    pub async fn with_stores(pg_admin: &str, redis: &str) -> Cluster {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("ocps_test_{}", &id[..16]);
        let (client, conn) = tokio_postgres::connect(pg_admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL not reachable at {pg_admin} ({e}); run scripts/services.sh"));
        tokio::spawn(conn);
        client.execute(&format!("CREATE DATABASE {db_name}"), &[]).await.unwrap();
        let base = pg_admin.rsplit_once('/').unwrap().0;
        Cluster {
            db_url: format!("{base}/{db_name}"),
            db_name,
            prefix: format!("ocpstest:{}:", &id[..12]),
            redis_url: redis.to_owned(),
        }
    }

    /// Environment of a node of this cluster (fast argon2 parameters: tests check
    /// behaviour, the benchmarks check cost).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DB_CONN", self.db_url.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("REDIS_KEY_PREFIX", self.prefix.as_str()),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("ARGON2_MEMORY_KIB", "1024"),
            ("ARGON2_ITERATIONS", "1"),
            ("SHUTDOWN_DRAIN_SECS", "1"),
            // Every test player comes from 127.0.0.1: tests of that limit set it.
            ("REGISTRATIONS_PER_ADDRESS", "0"),
            ("RUST_LOG", "info,openchampps=debug"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub async fn node(&self) -> NodeProc {
        self.node_with(&[]).await
    }

    pub async fn node_with(&self, extra: &[(&str, &str)]) -> NodeProc {
        let node = self.spawn_node(extra);
        node.wait_ready().await;
        node
    }

    /// Starts a node without waiting for it to become ready.
    pub fn spawn_node(&self, extra: &[(&str, &str)]) -> NodeProc {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        NodeProc::spawn(&env)
    }

    pub async fn psql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Runs `openchampps revoke ARGS` with this cluster's settings, as an operator would.
    pub async fn revoke(&self, args: &[&str]) -> std::process::Output {
        let env = self.env();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_openchampps"))
                .env_clear()
                .envs(env)
                .arg("revoke")
                .args(args)
                .output()
                .expect("run openchampps revoke")
        })
        .await
        .unwrap()
    }

    /// Redis keys under this cluster's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.redis().await;
        redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query_async(&mut conn).await.unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (admin, db, redis_url, prefix) =
            (pg_admin_url_for(&self.db_url), self.db_name.clone(), self.redis_url.clone(), self.prefix.clone());
        // Drop may run inside a runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), &[]).await;
                }
                if let Ok(client) = redis::Client::open(redis_url.as_str()) {
                    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(format!("{prefix}*"))
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

fn pg_admin_url_for(db_url: &str) -> String {
    format!("{}/postgres", db_url.rsplit_once('/').unwrap().0)
}

/// A node's two ports, and what a test does with them.
pub struct Endpoint {
    pub public: SocketAddr,
    pub metrics: SocketAddr,
    pub node_id: String,
}

impl Endpoint {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok((200, _)) = http(self.public, "GET", "/ready", None, &[]).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} never became ready", self.node_id);
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A connected client of a fresh account named after `stem`, signed in.
    pub async fn player(&self, stem: &str) -> Client {
        let mut client = self.client().await;
        client.signed_up(&unique_name(stem)).await;
        client
    }

    pub async fn metrics_text(&self) -> String {
        http(self.metrics, "GET", "/metrics", None, &[]).await.unwrap().1
    }
}

/// A whole node inside the test process, on the in-memory stores: for protocol
/// logic that does not depend on PostgreSQL or Redis. Starts in milliseconds.
pub struct InProcNode {
    endpoint: Endpoint,
    /// The node's shared-state store, to slow it down or look inside.
    pub shared: Arc<MemoryShared>,
    /// `None` once killed.
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl std::ops::Deref for InProcNode {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// An in-process node with the test settings and `flags` (`--name value` pairs), on
/// in-memory stores of its own.
pub async fn inproc_node(flags: &[&str]) -> InProcNode {
    let (stores, shared) = Stores::in_memory();
    start_inproc(flags, stores, shared).await
}

/// Starts an in-process node on `stores` and waits until it is ready. Its
/// `node_id` is the one it runs under (`--node-id` or a fresh name, and the suffix
/// the node adds).
async fn start_inproc(flags: &[&str], stores: Stores, shared: Arc<MemoryShared>) -> InProcNode {
    let mut args = vec![
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--shutdown-drain-secs",
        "1",
        // Every test player comes from 127.0.0.1: tests of that limit set it.
        "--registrations-per-address",
        "0",
    ];
    let fresh = format!("inproc-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let name = flags.iter().position(|f| *f == "--node-id").and_then(|i| flags.get(i + 1)).copied();
    let name = name.unwrap_or(&fresh).to_owned();
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--node-id", &name]);
    let config = Config::from_flags(&args).expect("valid test flags");
    let listeners = Listeners::bind(&config).await.expect("bind loopback ports");
    let public = listeners.public.local_addr().unwrap();
    let metrics = listeners.metrics.local_addr().unwrap();
    // The node adds a random suffix to its name: it is the one new in the
    // process-wide build_info (every node of this process reports there).
    let before = node_ids(&name);
    // Runs until the test kills or drops it.
    let task = tokio::spawn(server::run(config, listeners, stores, std::future::pending()));
    let mut node =
        InProcNode { endpoint: Endpoint { public, metrics, node_id: name.clone() }, shared, task: Some(task) };
    node.wait_ready().await;
    let started: Vec<String> = node_ids(&name).into_iter().filter(|id| !before.contains(id)).collect();
    match &started[..] {
        [id] => node.endpoint.node_id = id.clone(),
        _ => panic!("in-process node {name}: not one new node id in build_info: {started:?}"),
    }
    node
}

/// The ids under `name` in the process-wide `openchampps_build_info`.
fn node_ids(name: &str) -> Vec<String> {
    let scrape = openchampps::metrics::install().render();
    scrape.lines().filter_map(|l| build_info_node_id(l, name)).collect()
}

fn build_info_node_id(line: &str, name: &str) -> Option<String> {
    let labels = line.strip_prefix("openchampps_build_info{")?;
    let start = labels.find("node_id=\"")? + "node_id=\"".len();
    let id = labels[start..].split('"').next()?;
    // The suffix `Config::node_id` adds: a dash and six hex digits.
    let suffix = id.strip_prefix(name)?.strip_prefix('-')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_owned())
}

impl InProcNode {
    /// Kills the node without a goodbye, as SIGKILL kills a process: it stops serving
    /// (new connections, heartbeat, matchmaking, the bus), then the shared store judges
    /// it dead (`MemoryShared::mark_gone`, the in-process stand-in for a stale
    /// heartbeat), so the other nodes clean up after it (its tickets, its forming
    /// matches). Connections it had accepted are served by tasks of their own: the test
    /// drops their clients, as the kernel would close their sockets. (On the tests'
    /// current-thread runtime its heartbeat task is stopped before the judgement; on a
    /// multi-thread one, a beat being written at that very moment would bring it back.)
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.shared.mark_gone(&self.endpoint.node_id);
    }
}

impl Drop for InProcNode {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// In-process nodes that form one cluster: each node runs on the same in-memory
/// stores (`Stores::in_memory_with`), as process nodes share PostgreSQL and Redis.
/// For the logic of the cluster (matchmaking, the bus, presence) in milliseconds.
#[derive(Default)]
pub struct InProcCluster {
    pub users: Arc<MemoryUsers>,
    pub shared: Arc<MemoryShared>,
}

impl InProcCluster {
    pub fn new() -> InProcCluster {
        InProcCluster::default()
    }

    pub async fn node(&self) -> InProcNode {
        self.node_with(&[]).await
    }

    /// A node with `extra` settings as environment variables, as `Cluster::node_with`
    /// takes them: `("GAME_SERVERS", "…")` is the flag `--game-servers …`.
    pub async fn node_with(&self, extra: &[(&str, &str)]) -> InProcNode {
        let flags: Vec<(String, &str)> =
            extra.iter().map(|(k, v)| (format!("--{}", k.to_lowercase().replace('_', "-")), *v)).collect();
        let flags: Vec<&str> = flags.iter().flat_map(|(flag, v)| [flag.as_str(), v]).collect();
        let stores = Stores::in_memory_with(self.users.clone(), self.shared.clone());
        start_inproc(&flags, stores, self.shared.clone()).await
    }
}

/// A node running as its own process, as in production.
pub struct NodeProc {
    child: Option<Child>,
    endpoint: Endpoint,
    log: Arc<std::sync::Mutex<String>>,
}

impl std::ops::Deref for NodeProc {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl NodeProc {
    pub fn spawn(env: &[(String, String)]) -> NodeProc {
        let node_id = env
            .iter()
            .find(|(k, _)| k == "NODE_ID")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let mut command = Command::new(env!("CARGO_BIN_EXE_openchampps"));
        // A test process that aborts runs no Drop: the kernel then ends its nodes.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NODE_ID", &node_id)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start openchampps");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let tag = node_id.clone();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(line.clone());
                }
                eprintln!("[{tag}] {line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("node did not start listening");
        let field = |name: &str| -> SocketAddr {
            let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[start..].split_whitespace().next().unwrap().parse().unwrap()
        };
        // The id the node runs under: the configured name and the suffix the node adds.
        let start = line.find("node_id=").map(|i| i + "node_id=".len());
        let node_id = start.and_then(|i| line[i..].split_whitespace().next()).map_or(node_id, str::to_owned);
        let endpoint = Endpoint { public: field("public_addr"), metrics: field("metrics_addr"), node_id };
        NodeProc { child: Some(child), endpoint, log }
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no goodbye to Redis or anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, signal: &str) {
        Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("node did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 request; returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let (status, _, body) = http_full(addr, method, path, body, headers).await?;
    Ok((status, body))
}

/// Like [`http`], also returning the response headers (lower-cased names).
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    Ok((status, headers, body.to_owned()))
}

/// A WebSocket game client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client read: a text frame, the end of the connection, or nothing in time.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(Value),
    Closed(Option<CloseCode>),
    Nothing,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connect");
        Client { ws }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a request built with the protocol's own types.
    pub async fn send_request(&mut self, request: &Request) {
        self.send_text(&request.to_json()).await;
    }

    /// The next frame, decoded with the protocol's own types.
    pub async fn recv_reply(&mut self) -> Reply<'static> {
        let value = self.recv().await;
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("not a reply of the protocol ({e}): {value}"))
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(&mut self, message: Message) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// The next text frame, parsed.
    pub async fn recv(&mut self) -> Value {
        match self.next_text(REPLY_TIMEOUT).await {
            Some(v) => v,
            None => panic!("no reply within {REPLY_TIMEOUT:?}"),
        }
    }

    /// The next text frame within `wait`, if any.
    pub async fn next_text(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).expect("reply is JSON")),
                Ok(Some(Ok(Message::Close(frame)))) => panic!("connection closed: {frame:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("connection failed: {e}"),
                Ok(None) => panic!("connection ended"),
            }
        }
    }

    /// The next text frame within `wait`, as the server wrote it (byte for byte).
    pub async fn next_raw(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Message::Close(frame)))) => panic!("connection closed: {frame:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("connection failed: {e}"),
                Ok(None) => panic!("connection ended"),
            }
        }
    }

    /// The next text frame or the close, within `wait`: for clients the server may cut off.
    pub async fn next_frame(&mut self, wait: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Frame::Nothing,
                Ok(Some(Ok(Message::Text(t)))) => return Frame::Text(serde_json::from_str(&t).expect("reply is JSON")),
                Ok(Some(Ok(Message::Close(frame)))) => return Frame::Closed(frame.map(|f| f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return Frame::Closed(None),
            }
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(v) = self.next_text(wait).await {
            panic!("expected no message, got {v}");
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(REPLY_TIMEOUT, self.ws.next()).await.expect("no close within timeout") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    /// Sends `request` and returns the next frame.
    pub async fn ask(&mut self, request: Request) -> Value {
        self.send_request(&request).await;
        self.recv().await
    }

    pub async fn register(&mut self, username: &str, password: &str) -> Value {
        let registration =
            Registration { username: username.into(), password: password.into(), email: None, resume: None };
        self.ask(Request::Register(registration)).await
    }

    pub async fn login(&mut self, username: &str, password: &str) -> Value {
        self.ask(Request::Login(Credentials { username: username.into(), password: password.into(), resume: None }))
            .await
    }

    pub async fn token_auth(&mut self, token: &str) -> Value {
        self.ask(Request::TokenAuth(TokenPayload { token: token.into(), resume: None })).await
    }

    /// Registers (auto-logged-in) and returns the token.
    pub async fn signed_up(&mut self, username: &str) -> String {
        let reply = self.register(username, PASSWORD).await;
        assert_eq!(reply["type"], "register_success", "{reply}");
        reply["payload"]["token"].as_str().unwrap().to_owned()
    }

    /// The next text frame of type `kind`, skipping others (a `queued` may come
    /// first); panics after 15 s of nothing, or on a close.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            match self.next_frame(Duration::from_secs(15)).await {
                Frame::Text(v) if v["type"] == kind => return v,
                Frame::Text(_) => continue,
                other => panic!("no {kind}: {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

pub fn auth_error(message: &str) -> Value {
    reply(Reply::AuthError { message: message.into() })
}

pub fn error(message: &str, code: &str) -> Value {
    reply(Reply::Error { message: message.into(), code: code.into() })
}

/// A delivered chat line: `kind` is `global_chat` or `private_chat`.
pub fn chat(kind: &str, display_name: &str, account: &str, message: &str) -> Value {
    let line = ChatLine { username: display_name.into(), message: message.into(), account: account.into() };
    reply(if kind == "global_chat" { Reply::GlobalChat(line) } else { Reply::PrivateChat(line) })
}

/// A reply as JSON, to compare with what a client received.
pub fn reply(reply: Reply) -> Value {
    serde_json::to_value(reply).unwrap()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Checks a join ticket as a game server would (docs/PROTOCOL.md, "Join ticket");
/// returns its claims.
pub fn verify_ticket(ticket: &str, secret: &[u8]) -> Option<Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let (signed, signature) = ticket.rsplit_once('.')?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).ok()?;
    mac.update(signed.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
    let claims = signed.rsplit('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

pub fn unique_name(stem: &str) -> String {
    format!("{stem}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// `first` is first in its queue and `second` second (both queued).
pub async fn assert_queued_first_and_second(first: &mut Client, second: &mut Client) {
    let status = json!({"type": "queue_status"});
    let (a, b) = (first.request(status.clone()).await, second.request(status).await);
    assert_eq!((a["payload"]["position"].as_u64(), b["payload"]["position"].as_u64()), (Some(1), Some(2)), "{a} {b}");
}

/// `a` and `b` get the `match_found` of one two-player match.
pub async fn assert_matched_together(a: &mut Client, b: &mut Client) {
    let (to_a, to_b) = (a.next_of("match_found").await, b.next_of("match_found").await);
    assert_eq!(to_a["payload"]["match_id"], to_b["payload"]["match_id"]);
    assert_eq!(to_a["payload"]["players"].as_array().unwrap().len(), 2);
}
