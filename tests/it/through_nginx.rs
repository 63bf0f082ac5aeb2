//! The deployment as a player meets it: three real node processes behind nginx,
//! started by `deploy/local/cluster.sh`, driven only through the load balancer.
//!
//! Needs PostgreSQL and Redis on loopback (scripts/services.sh) and nginx (the
//! script unpacks Debian's package when none is installed). The test owns a
//! database, a Redis key prefix, a state directory and free ports of its own, and
//! removes them all when it ends, whether it passed or not.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const NODES: usize = 3;
const PASSWORD: &str = "securePassword123";
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn pg_admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Ports nobody listens on right now. They are released before the cluster binds
/// them, so another process could take one in between; on a test machine that is
/// rare enough, and the start then fails loudly rather than testing the wrong thing.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Everything the test created outside its own memory; `Drop` removes it, so a
/// failed assertion still stops the processes and leaves no database or keys.
struct LocalCluster {
    db_name: String,
    key_prefix: String,
    state_dir: PathBuf,
    lb_port: u16,
    node_ports: Vec<u16>,
    metrics_ports: Vec<u16>,
    started: bool,
}

impl LocalCluster {
    async fn create() -> LocalCluster {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("ocps_nginx_{}", &id[..16]);
        let admin = pg_admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL not reachable at {admin} ({e}); run scripts/services.sh"));
        let conn = tokio::spawn(conn);
        client.execute(&format!("CREATE DATABASE \"{db_name}\""), &[]).await.expect("create the test database");
        drop(client);
        let _ = conn.await;

        let redis = redis_url();
        let mut con = redis::Client::open(redis.as_str())
            .expect("valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis not reachable at {redis} ({e}); run scripts/services.sh"));
        let _: String = redis::cmd("PING").query_async(&mut con).await.expect("Redis PING");

        let ports = free_ports(1 + 2 * NODES);
        let state_dir = std::env::temp_dir().join(format!("ocps-nginx-{}", &id[..16]));
        LocalCluster {
            db_name,
            key_prefix: format!("ocps-nginx-{}:", &id[..12]),
            state_dir,
            lb_port: ports[0],
            node_ports: ports[1..=NODES].to_vec(),
            metrics_ports: ports[NODES + 1..].to_vec(),
            started: false,
        }
    }

    fn script(&self, action: &str) -> std::process::Output {
        let join = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" ");
        let pg_server =
            pg_admin_url().rsplit_once('/').map(|(base, _)| base.to_owned()).expect("admin URL names a database");
        Command::new("bash")
            .arg(repo_root().join("deploy/local/cluster.sh"))
            .arg(action)
            .env("OPENCHAMPPS_BIN", env!("CARGO_BIN_EXE_openchampps"))
            .env("CLUSTER_STATE_DIR", &self.state_dir)
            .env("CLUSTER_LB_PORT", self.lb_port.to_string())
            .env("CLUSTER_NODE_PORTS", join(&self.node_ports))
            .env("CLUSTER_METRICS_PORTS", join(&self.metrics_ports))
            .env("CLUSTER_DB_NAME", &self.db_name)
            .env("CLUSTER_PG_URL", pg_server)
            .env("CLUSTER_REDIS_URL", redis_url())
            .env("CLUSTER_REDIS_KEY_PREFIX", &self.key_prefix)
            .env("CLUSTER_NODE_ID_PREFIX", "nginx-test-")
            // The stores answered above and the database exists.
            .env("CLUSTER_SKIP_SERVICES", "1")
            // Cheap hashes: this test is about routing, not password cost.
            .env("ARGON2_MEMORY_KIB", "1024")
            .env("ARGON2_ITERATIONS", "1")
            .env("SHUTDOWN_DRAIN_SECS", "2")
            .output()
            .expect("run deploy/local/cluster.sh")
    }

    fn start(&mut self) {
        self.started = true; // a half-started cluster must be stopped too
        let out = self.script("start");
        assert!(
            out.status.success(),
            "deploy/local/cluster.sh start failed ({}); if nginx is missing, install it (apt-get install nginx) or set NGINX_BIN\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    fn stop(&mut self) {
        if !std::mem::take(&mut self.started) {
            return;
        }
        let out = self.script("stop");
        if !out.status.success() {
            eprintln!("cluster.sh stop failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.lb_port)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        let (db, prefix, state) = (self.db_name.clone(), self.key_prefix.clone(), self.state_dir.clone());
        // Drop may run inside the test's runtime, which cannot be blocked on: clean
        // up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    if let Err(e) = client.execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"), &[]).await
                    {
                        eprintln!("could not drop database {db}: {e}");
                    }
                }
                if let Ok(client) = redis::Client::open(redis_url().as_str()) {
                    if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                        delete_keys(&mut con, &prefix).await;
                    }
                }
            });
            remove_state_dir(&state);
        });
        let _ = cleanup.join();
    }
}

async fn delete_keys(con: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let mut cursor: u64 = 0;
    loop {
        let scanned: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await;
        let Ok((next, keys)) = scanned else { return };
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(con).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

fn remove_state_dir(dir: &Path) {
    if std::env::var_os("KEEP_CLUSTER_STATE").is_some() {
        eprintln!("cluster state (logs, nginx config) kept in {}", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A player's connection through the load balancer.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The node nginx picked, from the local config's `X-Upstream-Addr` header.
    upstream: String,
}

impl Client {
    async fn connect(cluster: &LocalCluster) -> Client {
        let (ws, response) = tokio_tungstenite::connect_async(cluster.ws_url()).await.expect("WebSocket through nginx");
        let upstream = response
            .headers()
            .get("x-upstream-addr")
            .and_then(|v| v.to_str().ok())
            .expect("nginx names the node in X-Upstream-Addr")
            .to_owned();
        let known = cluster.node_ports.iter().any(|p| upstream == format!("127.0.0.1:{p}"));
        assert!(known, "nginx routed to {upstream}, which is not one of our nodes {:?}", cluster.node_ports);
        Client { ws, upstream }
    }

    async fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).await.expect("send");
    }

    /// The next JSON message, skipping pings.
    async fn recv(&mut self) -> Value {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => panic!("no message within {REPLY_TIMEOUT:?} (node {})", self.upstream),
                Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).expect("a JSON reply"),
                Ok(Some(Ok(Message::Close(frame)))) => panic!("closed by the server: {frame:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("WebSocket error: {e}"),
                Ok(None) => panic!("connection ended"),
            }
        }
    }

    /// The next message of `kind`, skipping others (chat from elsewhere, say).
    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    async fn request(&mut self, message: Value) -> Value {
        self.send(message).await;
        self.recv().await
    }

    async fn token_auth(&mut self, token: &str) -> Value {
        self.request(json!({"type": "token_auth", "payload": {"token": token}})).await
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_register_log_in_reconnect_and_chat_across_nodes_through_nginx() {
    let mut cluster = LocalCluster::create().await;
    cluster.start();

    let suffix = &cluster.key_prefix[11..19];
    let alice = format!("alice_{suffix}");
    let bob = format!("bob_{suffix}");

    // Register, then log in on a fresh connection (a new token), then reconnect
    // with that token: each step may land on any node.
    let mut c = Client::connect(&cluster).await;
    let registered = c.request(json!({"type": "register", "payload": {"username": alice, "password": PASSWORD}})).await;
    assert_eq!(registered["type"], "register_success", "{registered}");
    c.close().await;

    let mut c = Client::connect(&cluster).await;
    let login = c.request(json!({"type": "login", "payload": {"username": alice, "password": PASSWORD}})).await;
    assert_eq!(login["type"], "auth_success", "{login}");
    assert_eq!(login["payload"]["username"], alice.as_str());
    let alice_token = login["payload"]["token"].as_str().expect("a token").to_owned();
    assert_ne!(registered["payload"]["token"], alice_token.as_str(), "login issues a new token");
    let login_node = c.upstream.clone();
    c.close().await;

    let mut c = Client::connect(&cluster).await;
    let resumed = c.token_auth(&alice_token).await;
    assert_eq!(resumed["type"], "auth_success", "{resumed}");
    assert_eq!(resumed["payload"], json!({"username": alice, "token": alice_token}));
    eprintln!("login on {login_node}, token_auth on {}", c.upstream);
    c.close().await;

    let mut b = Client::connect(&cluster).await;
    let registered = b.request(json!({"type": "register", "payload": {"username": bob, "password": PASSWORD}})).await;
    assert_eq!(registered["type"], "register_success", "{registered}");

    // Open Alice's connections until one sits on another node than Bob's.
    let mut spare = Vec::new();
    let mut a = loop {
        let mut a = Client::connect(&cluster).await;
        let auth = a.token_auth(&alice_token).await;
        assert_eq!(auth["type"], "auth_success", "{auth}");
        if a.upstream != b.upstream {
            break a;
        }
        assert!(spare.len() < 2 * NODES, "nginx sent {} connections in a row to {}", spare.len() + 1, b.upstream);
        spare.push(a);
    };
    eprintln!("alice on {}, bob on {}", a.upstream, b.upstream);

    let text = format!("hello across nodes {suffix}");
    a.send(json!({"type": "global_chat", "payload": text})).await;
    let expected = json!({"type": "global_chat", "payload": {"username": alice, "message": text, "account": alice}});
    assert_eq!(b.recv_type("global_chat").await, expected, "Bob, on another node, hears Alice");
    assert_eq!(a.recv_type("global_chat").await, expected, "Alice hears herself");

    b.send(json!({"type": "global_chat", "payload": "and back"})).await;
    let back = json!({"type": "global_chat", "payload": {"username": bob, "message": "and back", "account": bob}});
    assert_eq!(a.recv_type("global_chat").await, back);

    for client in spare.into_iter().chain([a, b]) {
        client.close().await;
    }
    cluster.stop();
}
