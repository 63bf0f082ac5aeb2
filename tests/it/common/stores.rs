//! Private PostgreSQL and Redis servers for tests that break their stores.
//!
//! Each instance runs on its own loopback port with its own data, so stopping it
//! never disturbs the machine's shared servers (5432/6379) or other tests. Both stop
//! hard (SIGKILL for Redis, `pg_ctl stop -m immediate` for PostgreSQL), the way a
//! crash or a lost host looks to a node, and restart on the same port (and, for
//! PostgreSQL, the same data), so nodes reconnect without being told anything.
//! Everything is torn down on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Client;

/// A shell that waits for this test process to end, however it ends (a panic that
/// aborts, a stack overflow, a SIGKILL from a timeout), then runs `cleanup`, so a
/// store server is never left behind. Drop kills it first on the normal path.
fn watchdog(cleanup: &str) -> Child {
    let script = format!("while kill -0 {} 2>/dev/null; do sleep 1; done; {cleanup}", std::process::id());
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a watchdog shell")
}

fn kill_watchdog(watchdog: &mut Option<Child>) {
    if let Some(mut child) = watchdog.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback port nobody listens on right now, below the OS's source-port range
/// (32768–60999): a port the OS picks from that range can be taken by any outgoing
/// connection (the suite opens thousands) between this check and the server's bind,
/// and the server then never comes up. Each call in this process gets another port.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Test binaries start at different places, so a leftover never lines up with the next.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} not ready within {limit:?}");
}

/// A `redis-server` child process without persistence: a restart comes back empty,
/// as a replaced Redis would.
pub struct PrivateRedis {
    port: u16,
    /// TLS only (`--port 0`): the server's certificate and key files.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let mut redis = PrivateRedis { port: free_port(), tls: None, child: None, watchdog: None };
        redis.restart();
        redis
    }

    /// A server that speaks only TLS (`--port 0 --tls-port …`) with `pki`'s server
    /// certificate; clients are not asked for certificates.
    pub fn start_tls(pki: &TestPki) -> PrivateRedis {
        let tls = Some((pki.cert(), pki.key()));
        let mut redis = PrivateRedis { port: free_port(), tls, child: None, watchdog: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: clients see their connections drop and new ones refused.
    pub fn stop(&mut self) {
        kill_watchdog(&mut self.watchdog);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is Redis installed?)");
        self.watchdog = Some(watchdog(&format!("kill -9 {}", child.id())));
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        if self.tls.is_some() {
            // A plain PING gets no answer from a TLS port: listening is what can be seen.
            wait_until(Duration::from_secs(10), "private Redis (TLS)", || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
        } else {
            wait_until(Duration::from_secs(10), "private Redis", || redis_answers(addr));
        }
    }
}

fn redis_answers(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL cluster of its own: `initdb` in a temporary directory, trust
/// authentication, listening on 127.0.0.1 only, `pg_stat_statements` preloaded so
/// tests can count the queries a node makes. Run as the `postgres` OS user when the
/// tests run as root (PostgreSQL refuses to run as root).
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    running: bool,
    watchdog: Option<Child>,
}

const PG_BIN_ROOT: &str = "/usr/lib/postgresql";

/// The newest installed PostgreSQL's `bin` directory.
fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(PG_BIN_ROOT)
        .unwrap_or_else(|e| panic!("no PostgreSQL under {PG_BIN_ROOT} ({e})"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("bin").join(tool).exists())
        .collect();
    versions.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok()));
    versions.pop().unwrap_or_else(|| panic!("{tool} not found under {PG_BIN_ROOT}")).join("bin").join(tool)
}

fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false))
}

/// A PostgreSQL tool run as the `postgres` user when we are root.
fn pg_command(tool: &str) -> Command {
    let bin = pg_bin(tool);
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(&[])
    }

    /// Like [`start`](Self::start) with extra `postgresql.conf` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> PrivatePostgres {
        PrivatePostgres::start_inner(settings, None)
    }

    /// A server with `ssl = on` and `pki`'s server certificate, where every database
    /// but `postgres` (the admin URL's, kept plain for the fixtures) takes only TLS
    /// connections (`hostssl`; plain ones are rejected).
    pub fn start_tls(pki: &TestPki) -> PrivatePostgres {
        PrivatePostgres::start_inner(&[], Some(pki))
    }

    fn start_inner(settings: &[(&str, &str)], tls: Option<&TestPki>) -> PrivatePostgres {
        let dir = std::env::temp_dir().join(format!("ocps-pg-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        std::fs::create_dir(&dir).unwrap();
        let pg = PrivatePostgres { dir, port: free_port(), running: false, watchdog: None };
        if running_as_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&pg.dir);
                    c
                },
                "chown the private PostgreSQL directory",
            );
        }
        let mut initdb = pg_command("initdb");
        initdb.arg("-D").arg(pg.data()).args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run_ok(initdb, "initdb");
        // fsync off is safe here: an immediate stop kills PostgreSQL, not the kernel, so
        // written WAL survives in the page cache. (synchronous_commit must stay on: WAL
        // still in PostgreSQL's own buffers would die with it and lose commits.)
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 200\n\
             shared_preload_libraries = 'pg_stat_statements'\n",
            pg.port,
            pg.dir.display()
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        if let Some(pki) = tls {
            // PostgreSQL wants its key owned by its user and private to it.
            let data = pg.data();
            std::fs::copy(pki.cert(), data.join("server.crt")).unwrap();
            std::fs::copy(pki.key(), data.join("server.key")).unwrap();
            if running_as_root() {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(data.join("server.crt")).arg(data.join("server.key"));
                run_ok(chown, "chown the private PostgreSQL certificate");
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
            let rules = "host postgres all 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 trust\n\
                         hostnossl all all 127.0.0.1/32 reject\n";
            std::fs::write(data.join("pg_hba.conf"), format!("{rules}{hba}")).unwrap();
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data().join("postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let mut pg = pg;
        let pg_ctl = pg_bin("pg_ctl");
        let as_postgres = if running_as_root() { "runuser -u postgres -- " } else { "" };
        pg.watchdog = Some(watchdog(&format!(
            "{as_postgres}{} -D {} -m immediate stop; rm -rf {}",
            pg_ctl.display(),
            pg.data().display(),
            pg.dir.display()
        )));
        pg.restart();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Admin URL (database `postgres`), for [`Cluster::with_stores`](super::Cluster::with_stores).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log (`pg_ctl -l`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Immediate shutdown: every backend dies at once without a checkpoint, like a
    /// crash; clients see their connections drop and new ones refused.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut stop = pg_command("pg_ctl");
        stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
        run_ok(stop, "pg_ctl stop");
        self.running = false;
    }

    /// Starts (again) on the same port and data directory (with crash recovery after
    /// an immediate stop) and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let mut start = pg_command("pg_ctl");
        start.arg("-D").arg(self.data()).arg("-l").arg(self.dir.join("server.log")).args(["-w", "-t", "30", "start"]);
        run_ok(start, "pg_ctl start");
        self.running = true;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_until(Duration::from_secs(10), "private PostgreSQL", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        kill_watchdog(&mut self.watchdog);
        if self.running {
            let mut stop = pg_command("pg_ctl");
            stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
            let _ = stop.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PgBouncer in transaction mode in front of the shared PostgreSQL (127.0.0.1:5432),
/// as a large deployment runs one: a server connection serves one transaction, then
/// another client. Debian's `pgbouncer` (`scripts/services.sh` installs it); it runs
/// as `postgres` when we are root (it refuses to run as root).
pub struct PrivatePgBouncer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

impl PrivatePgBouncer {
    pub fn start() -> PrivatePgBouncer {
        assert!(
            std::path::Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} not found: bash scripts/services.sh installs Debian's pgbouncer"
        );
        let dir = std::env::temp_dir().join(format!("ocps-pgb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        std::fs::create_dir(&dir).unwrap();
        let port = free_port();
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port=5432 user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 4\n\
             ignore_startup_parameters = extra_float_digits,application_name\nlogfile = {}\n",
            dir.join("pgbouncer.log").display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        let mut command = if running_as_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg("postgres:postgres").arg(&dir);
                    c
                },
                "chown the PgBouncer directory",
            );
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", PGBOUNCER]);
            c
        } else {
            Command::new(PGBOUNCER)
        };
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until(Duration::from_secs(10), "PgBouncer", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        PrivatePgBouncer { dir, port, child: Some(child) }
    }

    /// The URL of `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // runuser passes the signal on to pgbouncer.
            let _ = child.kill();
            let _ = Command::new("pkill").args(["-f", &self.dir.join("pgbouncer.ini").display().to_string()]).status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Client {
    /// Connects with extra request headers, as a load balancer would add them
    /// (`X-Forwarded-For`, …).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Client {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
            request.headers_mut().append(name, HeaderValue::from_str(value).unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket connect");
        Client { ws }
    }
}

/// `redis-cli -p PORT ARGS…` on loopback; its stdout (empty when it failed).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    redis_cli_with(port, &[], args)
}

/// [`redis_cli`] with connection options first (`--tls --cacert ca.pem`).
pub fn redis_cli_with(port: u16, options: &[String], args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(options)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Counts per error from `INFO errorstats` (`CROSSSLOT`, `MOVED`, `ASK`, …).
pub fn error_stats(port: u16) -> std::collections::HashMap<String, u64> {
    redis_cli(port, &["INFO", "errorstats"])
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("errorstat_")?.split_once(':')?;
            Some((name.to_owned(), stats.strip_prefix("count=")?.parse().ok()?))
        })
        .collect()
}

/// A set of `redis-server` processes in one temporary directory, each SIGKILLed on
/// drop (or by the watchdog if the test process dies first).
struct ServerSet {
    dir: PathBuf,
    children: Vec<(u16, Child)>,
    watchdog: Option<Child>,
    /// `redis-cli` options to reach the servers (`--tls --cacert …` for TLS ones).
    cli: Vec<String>,
}

impl ServerSet {
    fn new(kind: &str) -> ServerSet {
        let dir =
            std::env::temp_dir().join(format!("ocps-{kind}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        std::fs::create_dir(&dir).unwrap();
        ServerSet { dir, children: Vec::new(), watchdog: None, cli: Vec::new() }
    }

    /// Starts `redis-server ARGS` (run in its own directory) that listens on `port`.
    fn spawn(&mut self, port: u16, args: &[String]) {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is Redis installed? scripts/services.sh)");
        self.children.push((port, child));
        self.rearm();
    }

    /// (Re)writes the watchdog for the processes alive now.
    fn rearm(&mut self) {
        kill_watchdog(&mut self.watchdog);
        let pids: Vec<String> = self.children.iter().map(|(_, c)| c.id().to_string()).collect();
        self.watchdog =
            Some(watchdog(&format!("kill -9 {} 2>/dev/null; rm -rf {}", pids.join(" "), self.dir.display())));
    }

    fn wait_answering(&self) {
        for (port, _) in &self.children {
            let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
            wait_until(Duration::from_secs(10), "private Redis server", || {
                if self.cli.is_empty() {
                    redis_answers(addr)
                } else {
                    self.cli(*port, &["PING"]).trim() == "PONG"
                }
            });
        }
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_with(port, &self.cli, args)
    }

    /// SIGKILL one server.
    fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
            self.rearm();
        }
    }

    fn ports(&self) -> Vec<u16> {
        self.children.iter().map(|(p, _)| *p).collect()
    }
}

impl Drop for ServerSet {
    fn drop(&mut self) {
        kill_watchdog(&mut self.watchdog);
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of its own: `masters` masters, each with `replicas` replicas,
/// made with `redis-cli --cluster create`. A short `cluster-node-timeout` (2 s) keeps
/// failovers quick.
pub struct PrivateRedisCluster {
    servers: ServerSet,
}

pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2000;

impl PrivateRedisCluster {
    pub fn start(masters: usize, replicas: usize) -> PrivateRedisCluster {
        PrivateRedisCluster::start_inner(masters, replicas, None)
    }

    /// A cluster that speaks only TLS, to clients and on its bus (`--tls-cluster`,
    /// `--tls-replication`), with `pki`'s certificate on every server.
    pub fn start_tls(masters: usize, replicas: usize, pki: &TestPki) -> PrivateRedisCluster {
        PrivateRedisCluster::start_inner(masters, replicas, Some(pki))
    }

    fn start_inner(masters: usize, replicas: usize, tls: Option<&TestPki>) -> PrivateRedisCluster {
        let mut servers = ServerSet::new("rcluster");
        if let Some(pki) = tls {
            servers.cli = vec!["--tls".into(), "--cacert".into(), pki.ca().display().to_string()];
        }
        for _ in 0..masters * (1 + replicas) {
            let (port, bus) = (free_port(), free_port());
            let conf = servers.dir.join(format!("nodes-{port}.conf"));
            let listen: Vec<String> = match tls {
                None => vec!["--port".into(), port.to_string()],
                Some(pki) => [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--tls-auth-clients",
                    "no",
                    "--tls-cert-file",
                    &pki.cert().display().to_string(),
                    "--tls-key-file",
                    &pki.key().display().to_string(),
                    "--tls-ca-cert-file",
                    &pki.ca().display().to_string(),
                ]
                .map(String::from)
                .to_vec(),
            };
            let args: Vec<String> = listen
                .into_iter()
                .chain(
                    [
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        // Not port + 10000, which may be taken or past 65535.
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                        &conf.display().to_string(),
                        "--cluster-node-timeout",
                        &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--protected-mode",
                        "no",
                        "--daemonize",
                        "no",
                    ]
                    .map(String::from),
                )
                .collect();
            servers.spawn(port, &args);
        }
        servers.wait_answering();
        let nodes: Vec<String> = servers.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(&servers.cli)
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = PrivateRedisCluster { servers };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Waits until every live server says `cluster_state:ok` and knows every live server.
    pub fn wait_ok(&self, limit: Duration) {
        let ports = self.servers.ports();
        wait_until(limit, "Redis Cluster state ok", || {
            ports.iter().all(|p| {
                let info = self.servers.cli(*p, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{}", ports.len()))
            }) && ports.iter().all(|p| {
                // A replica that never synced would refuse to take over (its data too old).
                let replication = self.servers.cli(*p, &["INFO", "replication"]);
                replication.contains("role:master") || replication.contains("master_link_status:up")
            })
        });
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.servers.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let scheme = if self.servers.cli.is_empty() { "redis" } else { "rediss" };
        format!("{scheme}+cluster://{}", nodes.join(","))
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.ports()
    }

    /// `CLUSTER NODES` as a live server sees it.
    pub fn nodes(&self) -> String {
        self.ports().first().map(|p| self.servers.cli(*p, &["CLUSTER", "NODES"])).unwrap_or_default()
    }

    /// The ports of the servers that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.ports().into_iter().filter(|p| self.servers.cli(*p, &["ROLE"]).starts_with("master")).collect()
    }

    /// SIGKILL one server.
    pub fn kill(&mut self, port: u16) {
        self.servers.kill(port);
    }
}

/// A master, one replica and three sentinels watching them as `MASTER_NAME`, with
/// short timeouts (down after 1 s) so a failover takes a few seconds.
pub struct PrivateRedisSentinel {
    servers: ServerSet,
    pub master: u16,
    pub replica: u16,
    pub sentinels: Vec<u16>,
}

pub const SENTINEL_MASTER_NAME: &str = "ocpsmaster";
pub const SENTINEL_DOWN_AFTER_MS: u64 = 1000;
pub const SENTINEL_FAILOVER_TIMEOUT_MS: u64 = 5000;

impl PrivateRedisSentinel {
    pub fn start() -> PrivateRedisSentinel {
        PrivateRedisSentinel::start_inner(None)
    }

    /// A set that speaks only TLS: clients, replication and the sentinels' own links
    /// (`tls-replication yes`) all use `pki`'s certificate; clients are not asked for one.
    pub fn start_tls(pki: &TestPki) -> PrivateRedisSentinel {
        PrivateRedisSentinel::start_inner(Some(pki))
    }

    fn start_inner(tls: Option<&TestPki>) -> PrivateRedisSentinel {
        let mut servers = ServerSet::new("rsentinel");
        // `port P` or its TLS-only form, as `(name, value)` pairs for flags and files alike.
        let listen = |port: u16| -> Vec<(String, String)> {
            let mut pairs = vec![("port".to_owned(), port.to_string())];
            if let Some(pki) = tls {
                pairs = vec![("port".into(), "0".into()), ("tls-port".into(), port.to_string())];
                pairs.extend([
                    ("tls-replication".into(), "yes".into()),
                    ("tls-auth-clients".into(), "no".into()),
                    ("tls-cert-file".into(), pki.cert().display().to_string()),
                    ("tls-key-file".into(), pki.key().display().to_string()),
                    ("tls-ca-cert-file".into(), pki.ca().display().to_string()),
                ]);
            }
            pairs
        };
        if let Some(pki) = tls {
            servers.cli = vec!["--tls".into(), "--cacert".into(), pki.ca().display().to_string()];
        }
        let (master, replica) = (free_port(), free_port());
        let data_server = |port: u16| -> Vec<String> {
            listen(port)
                .into_iter()
                .flat_map(|(name, value)| [format!("--{name}"), value])
                .chain(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from))
                .chain(["--protected-mode", "no", "--daemonize", "no"].map(String::from))
                .collect()
        };
        servers.spawn(master, &data_server(master));
        let mut replica_args = data_server(replica);
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        servers.spawn(replica, &replica_args);
        servers.wait_answering();
        let sentinels: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for &port in &sentinels {
            // Sentinel rewrites its configuration file: it must be writable.
            let conf = servers.dir.join(format!("sentinel-{port}.conf"));
            let listen: String = listen(port).iter().map(|(name, value)| format!("{name} {value}\n")).collect();
            std::fs::write(
                &conf,
                format!(
                    "{listen}bind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
                     sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} {SENTINEL_DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {SENTINEL_MASTER_NAME} {SENTINEL_FAILOVER_TIMEOUT_MS}\n\
                     sentinel parallel-syncs {SENTINEL_MASTER_NAME} 1\n",
                    dir = servers.dir.display()
                ),
            )
            .unwrap();
            servers.spawn(port, &[conf.display().to_string(), "--sentinel".into()]);
        }
        servers.wait_answering();
        // Ready when each sentinel knows the replica and the two other sentinels, and
        // the replica is in sync.
        wait_until(Duration::from_secs(30), "sentinels", || {
            sentinels.iter().all(|p| servers.cli(*p, &["INFO", "sentinel"]).contains("status=ok,address=127.0.0.1"))
                && sentinels.iter().all(|p| {
                    let info = servers.cli(*p, &["INFO", "sentinel"]);
                    info.contains(&format!(":{master},slaves=1,sentinels=3"))
                })
                && servers.cli(replica, &["INFO", "replication"]).contains("master_link_status:up")
        });
        PrivateRedisSentinel { servers, master, replica, sentinels }
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let scheme = if self.servers.cli.is_empty() { "redis" } else { "rediss" };
        format!("{scheme}+sentinel://{}/{SENTINEL_MASTER_NAME}/0", hosts.join(","))
    }

    /// The data servers (master and replica) still running.
    pub fn data_ports(&self) -> Vec<u16> {
        self.servers.ports().into_iter().filter(|p| !self.sentinels.contains(p)).collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.ports()
    }

    /// SIGKILL one server.
    pub fn kill(&mut self, port: u16) {
        self.servers.kill(port);
    }

    /// The master the sentinels name now.
    pub fn current_master(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|p| {
            let out = self.servers.cli(*p, &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER_NAME]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }
}

impl PrivateRedis {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A throwaway certificate authority and a server certificate it signed (for
/// `localhost` and `127.0.0.1` unless told otherwise), as PEM files (`ca.pem`, `server.pem`, `server.key`) in
/// a temporary directory, removed on drop (or by the watchdog).
pub struct TestPki {
    dir: TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    pub fn generate() -> TestPki {
        TestPki::generate_for(&["localhost", "127.0.0.1"])
    }

    /// A CA and a server certificate for `names` (host names or addresses) only.
    pub fn generate_for(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let temp = TempDir::new("pki");
        let dir = temp.path();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        let id = dir.file_name().unwrap().to_string_lossy().into_owned();
        ca.distinguished_name.push(DnType::CommonName, format!("openchampps test CA {id}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        server.distinguished_name.push(DnType::CommonName, names[0]);
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        TestPki { dir: temp, issuer }
    }

    /// Another certificate of this CA, for `names` and `usage` (a client's, say):
    /// writes `<file>.crt` and `<file>.key` and returns their paths.
    pub fn issue(&self, file: &str, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (crt, key_path) = (self.dir().join(format!("{file}.crt")), self.dir().join(format!("{file}.key")));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (crt, key_path)
    }

    /// The CA certificate, for clients (REDIS_CA_FILE, sslrootcert).
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir().join("server.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir().join("server.key")
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A fresh directory under the system's temporary directory, removed on drop, or by
/// a watchdog when the test process dies first.
pub struct TempDir {
    path: PathBuf,
    watchdog: Option<Child>,
}

impl TempDir {
    pub fn new(kind: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("ocps-{kind}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        std::fs::create_dir(&path).unwrap();
        let watchdog = Some(watchdog(&format!("rm -rf {}", path.display())));
        TempDir { path, watchdog }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        kill_watchdog(&mut self.watchdog);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Calls per Redis command since the last `CONFIG RESETSTAT`, from `INFO
/// commandstats` (commands a script runs count too).
pub async fn command_calls(redis: &mut redis::aio::MultiplexedConnection) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(redis).await.unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}
