//! The topology (one server, Sentinel, Cluster), connecting, the circuit breaker
//! (while Redis is down calls fail at once; one probes now and then) and the check of
//! the Redis version on every new connection.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use super::lane::Link;
use super::RedisStore;
use crate::config::RedisTarget;
use crate::error::StoreError;
use crate::metrics as m;
use crate::store::{Health, StoreResult};

/// Longest the node waits for a Redis connection before treating Redis as unreachable.
pub(super) const TIMEOUT: Duration = Duration::from_secs(1);
/// While Redis is unreachable, calls fail at once instead of each waiting out a
/// timeout; one call per this interval probes whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A connection to whichever topology is configured: commands, pipelines and
/// scripts run on it unchanged (the cluster client routes each by its key's slot).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How connections are made, per topology.
pub(super) enum Topology {
    /// One server: a deadpool pool makes and health-checks connections (its gauges
    /// are exported); the bus subscribes through `client`.
    Single { pool: Pool, client: redis::Client },
    /// Each new connection (shared or bus) first asks the sentinels for the current
    /// master, so a broken connection is replaced by one to the new master.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// The cluster client follows MOVED/ASK and failovers by itself. `certs`: the
    /// CA to trust over TLS (`rediss+cluster://` with REDIS_CA_FILE).
    Cluster { nodes: Vec<redis::ConnectionInfo>, certs: Option<TlsCertificates> },
}

impl Topology {
    /// The topology `target` names; nothing connects yet. A TLS target trusts the CAs
    /// in `ca_file` (PEM) instead of the system's.
    pub(super) fn new(
        target: RedisTarget,
        ca_file: Option<&std::path::Path>,
        max_size: usize,
    ) -> Result<Topology, StoreError> {
        let certs = if target.tls() { crate::tls::redis_certs(ca_file).map_err(StoreError::Other)? } else { None };
        // A `rediss://` URL with the CA's certificates attached (else the system roots).
        let info = |url: &str| -> RedisResult<redis::ConnectionInfo> {
            match &certs {
                Some(certs) => Ok(redis::Client::build_with_tls(url, certs.clone())?.get_connection_info().clone()),
                None => url.into_connection_info(),
            }
        };
        Ok(match target {
            RedisTarget::Single(url) => {
                let info = info(&url)?;
                let pool = Pool::builder(Manager::new(info.clone())?)
                    .max_size(max_size)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(TIMEOUT))
                    .create_timeout(Some(TIMEOUT))
                    .recycle_timeout(Some(TIMEOUT))
                    .build()
                    .map_err(|e| StoreError::Other(format!("Redis pool: {e}")))?;
                Topology::Single { pool, client: redis::Client::open(info)? }
            }
            RedisTarget::Sentinel { sentinels, master_name, master_settings } => {
                let settings = master_settings.as_str().into_connection_info()?.redis_settings().clone();
                let client = if master_settings.starts_with("rediss://") {
                    // TLS to the sentinels and to the master they name, both trusting the CA.
                    let addrs = sentinels
                        .iter()
                        .map(|s| s.as_str().into_connection_info().map(|i| i.addr().clone()))
                        .collect::<RedisResult<Vec<_>>>()?;
                    let mut builder = SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)?
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_db(settings.db());
                    if let Some(user) = settings.username() {
                        builder = builder.set_client_to_redis_username(user);
                    }
                    if let Some(password) = settings.password() {
                        builder = builder.set_client_to_redis_password(password);
                    }
                    if let Some(certs) = &certs {
                        builder = builder
                            .set_client_to_sentinel_certificates(certs.clone())
                            .set_client_to_redis_certificates(certs.clone());
                    }
                    builder.build()?
                } else {
                    let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
                    SentinelClient::build(sentinels, master_name, Some(node), SentinelServerType::Master)?
                };
                Topology::Sentinel(tokio::sync::Mutex::new(client))
            }
            RedisTarget::Cluster { nodes } => {
                let nodes = nodes.iter().map(|n| n.as_str().into_connection_info()).collect::<RedisResult<Vec<_>>>()?;
                Topology::cluster_builder(&nodes, &certs).build()?;
                Topology::Cluster { nodes, certs }
            }
        })
    }

    pub(super) fn cluster_builder(
        nodes: &[redis::ConnectionInfo],
        certs: &Option<TlsCertificates>,
    ) -> ClusterClientBuilder {
        let builder = ClusterClient::builder(nodes.to_vec());
        let builder = match certs {
            Some(certs) => builder.certs(certs.clone()),
            None => builder,
        };
        builder
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(TIMEOUT)
            .response_timeout(Duration::from_millis(500))
            .overall_response_timeout(Some(TIMEOUT))
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(200)
    }

    /// The current master's client (Sentinel), asked of the sentinels.
    pub(super) async fn master(sentinel: &tokio::sync::Mutex<SentinelClient>) -> StoreResult<redis::Client> {
        let mut sentinel = sentinel.lock().await;
        match tokio::time::timeout(TIMEOUT * 2, sentinel.async_get_client()).await {
            Ok(client) => Ok(client?),
            Err(_) => Err(StoreError::RedisUnreachable),
        }
    }
}

impl RedisStore {
    async fn connection(&self) -> StoreResult<Conn> {
        if let Some(conn) = self.shared.read().unwrap().as_ref() {
            return Ok(conn.clone());
        }
        // Boxed: rare, and large (see `lane_link`).
        Box::pin(self.connect_shared()).await
    }

    async fn connect_shared(&self) -> StoreResult<Conn> {
        let mut fresh = match &self.topology {
            Topology::Single { pool, .. } => Conn::Single(deadpool_redis::Connection::take(pool.get().await?)),
            Topology::Sentinel(sentinel) => {
                let master = Topology::master(sentinel).await?;
                Conn::Single(master.get_multiplexed_async_connection().await?)
            }
            Topology::Cluster { nodes, certs } => {
                let client = Topology::cluster_builder(nodes, certs).build()?;
                match tokio::time::timeout(TIMEOUT * 2, client.get_async_connection()).await {
                    Ok(conn) => Conn::Cluster(conn?),
                    Err(_) => return Err(StoreError::RedisUnreachable),
                }
            }
        };
        check_version(&mut fresh).await?;
        Ok(self.shared.write().unwrap().get_or_insert(fresh).clone())
    }

    /// Runs one operation on the shared connection with a deadline, and keeps track of
    /// whether Redis is reachable (logged and exported on each change).
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        // No timer of our own per command: making a connection is bounded (the pool's
        // timeouts, or 2 s for asking the sentinels / joining the cluster), and the
        // redis client gives up on a reply after 500 ms (1 s with a cluster's retries).
        self.guarded(None, async { op(self.connection().await?).await.map_err(StoreError::from) }).await
    }

    /// Runs one command on the fast lane (`lane.rs`), with the same bookkeeping as
    /// [`run`](Self::run); `parse` reads its reply.
    pub(super) async fn run_lane<T>(
        &self,
        lane: &Lane,
        args: &[&[u8]],
        parse: impl FnOnce(&[u8]) -> RedisResult<T>,
    ) -> StoreResult<T> {
        self.guarded(Some(lane), async {
            self.lane_link(lane).await?.call(args, parse).await.map_err(StoreError::from)
        })
        .await
    }

    /// One command whose reply only says it worked: on the fast lane when there is
    /// one (`check` reads the reply), else on the shared connection.
    pub(super) async fn command(&self, args: &[&[u8]], check: fn(&[u8]) -> RedisResult<()>) -> StoreResult<()> {
        if let Some(lane) = &self.lane {
            return self.run_lane(lane, args, check).await;
        }
        // Presized, as `sized_cmd` does for the typed commands.
        let mut cmd = Cmd::with_capacity(args.len(), args.iter().map(|arg| arg.len()).sum());
        for arg in args {
            cmd.arg(*arg);
        }
        self.run(|mut c| async move { cmd.query_async(&mut c).await }).await
    }

    /// The fast lane's connection, made when there is none or it broke: to the one
    /// server, or to the master the sentinels name now.
    async fn lane_link(&self, lane: &Lane) -> StoreResult<Arc<Link>> {
        match lane.current() {
            Some(link) => Ok(link),
            // Boxed: connecting is rare, and its state would otherwise make every
            // command's future large (copied whole on every call).
            None => Box::pin(self.lane_connect(lane)).await,
        }
    }

    async fn lane_connect(&self, lane: &Lane) -> StoreResult<Arc<Link>> {
        let _one_at_a_time = lane.connecting.lock().await;
        if let Some(link) = lane.current() {
            return Ok(link);
        }
        let info = match &self.topology {
            Topology::Single { client, .. } => client.get_connection_info().clone(),
            Topology::Sentinel(sentinel) => Topology::master(sentinel).await?.get_connection_info().clone(),
            Topology::Cluster { .. } => return Err(StoreError::Other("no fast lane on Redis Cluster".into())),
        };
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(StoreError::Other("the fast lane is for plain TCP only".into()));
        };
        let link = Link::connect(host, *port, info.redis_settings(), TIMEOUT).await?;
        *lane.link.write().unwrap() = Some(link.clone());
        Ok(link)
    }

    /// Runs `work` unless Redis is known to be down (then one call per
    /// [`PROBE_EVERY`] probes it), and keeps track of whether Redis is reachable
    /// (logged and exported on each change). A connection that failed is replaced:
    /// the lane's when `lane` is given, else the shared one.
    async fn guarded<T>(&self, lane: Option<&Lane>, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        if self.down.load(Ordering::Relaxed) {
            let now = self.epoch.elapsed().as_millis() as u64;
            let next = self.next_probe_ms.load(Ordering::Relaxed);
            let won_probe = now >= next
                && self
                    .next_probe_ms
                    .compare_exchange(next, now + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if !won_probe {
                return Err(StoreError::RedisUnreachable);
            }
        }
        let result = work.await;
        let failed = result.as_ref().err().is_some_and(unreachable);
        if result.is_err() {
            m::store_error(m::Store::Redis);
        }
        // A master demoted by a failover answers READONLY: reconnect (Sentinel asks again).
        let demoted = matches!(&result, Err(StoreError::Redis(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly));
        if failed || demoted {
            match lane {
                Some(lane) => lane.reset(),
                None => drop(self.shared.write().unwrap().take()),
            }
        }
        if failed {
            let now = self.epoch.elapsed().as_millis() as u64;
            self.next_probe_ms.store(now + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed);
        }
        if self.down.swap(failed, Ordering::Relaxed) != failed {
            m::redis_degraded(failed);
            if failed {
                tracing::warn!(error = %result.as_ref().err().unwrap(), "Redis unreachable: working alone (local chat, count and rate limits)");
            } else {
                tracing::info!("Redis reachable again");
            }
        }
        result
    }
}

/// The fast lane's current connection (`lane.rs`); only for one server or a Sentinel
/// master over plain TCP.
#[derive(Default)]
pub(super) struct Lane {
    link: std::sync::RwLock<Option<Arc<Link>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Lane {
    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap().as_ref().filter(|link| !link.is_broken()).cloned()
    }

    /// Closes the connection (its waiting calls fail); the next call makes a new one.
    fn reset(&self) {
        if let Some(link) = self.link.write().unwrap().take() {
            link.close(std::io::ErrorKind::ConnectionAborted);
        }
    }
}

/// The oldest Redis the node works with: `EXPIRE … NX` (rate limits) needs 7.0.
const MIN_REDIS_VERSION: (u32, u32, u32) = (7, 0, 0);

/// Stops the process with one line when `conn` reaches a Redis older than
/// [`MIN_REDIS_VERSION`] (on Cluster: any primary). Run on every new shared connection,
/// so a node that started while Redis was down checks when it first gets through. A
/// server that does not tell (INFO refused or renamed) is given the benefit of the doubt.
async fn check_version(conn: &mut Conn) -> StoreResult<()> {
    let info = match redis::cmd("INFO").arg("server").query_async::<Value>(conn).await.map_err(StoreError::from) {
        Ok(info) => info,
        Err(e) if unreachable(&e) => return Err(e),
        Err(_) => return Ok(()),
    };
    if let Some((major, minor, patch)) = oldest_version(&info).filter(|v| *v < MIN_REDIS_VERSION) {
        let (min_major, min_minor, _) = MIN_REDIS_VERSION;
        eprintln!("openchampps: Redis {major}.{minor}.{patch} is too old: {min_major}.{min_minor} or newer is needed");
        std::process::exit(2);
    }
    Ok(())
}

/// The lowest `redis_version` in an `INFO` reply (on Cluster, a map of every primary's).
fn oldest_version(info: &Value) -> Option<(u32, u32, u32)> {
    match info {
        Value::BulkString(bytes) => version_in(&String::from_utf8_lossy(bytes)),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => version_in(text),
        Value::Map(pairs) => pairs.iter().filter_map(|(_, v)| oldest_version(v)).min(),
        Value::Array(items) => items.iter().filter_map(oldest_version).min(),
        _ => None,
    }
}

fn version_in(info: &str) -> Option<(u32, u32, u32)> {
    let version = info.lines().find_map(|line| line.trim().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0), parts.next().flatten().unwrap_or(0)))
}

/// Whether an error means Redis cannot be reached (as opposed to a refused command).
fn unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Redis(e) => {
            e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
        }
        _ => true,
    }
}

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
    }

    /// Standalone only: Sentinel and Cluster keep no pool (one shared connection,
    /// one per shard on Cluster), so their gauges are not exported.
    fn export_pool_gauges(&self) {
        if let Topology::Single { pool, .. } = &self.topology {
            let s = pool.status();
            m::pool_connections(m::Store::Redis, s.size, s.available, s.waiting);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_redis_version_is_found_in_info() {
        let info =
            |v: &str| Value::BulkString(format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n").into());
        assert_eq!(oldest_version(&info("7.2.4")), Some((7, 2, 4)));
        assert_eq!(oldest_version(&info("6.2.14")), Some((6, 2, 14)));
        assert_eq!(oldest_version(&info("8.0")), Some((8, 0, 0)));
        assert_eq!(oldest_version(&info("255.255.255")), Some((255, 255, 255)));
        assert_eq!(oldest_version(&Value::BulkString(b"# Server\r\nos:Linux\r\n".to_vec())), None);
        assert_eq!(oldest_version(&info("unstable")), None);
        // RESP3 and Cluster (one reply per primary): the oldest counts.
        let verbatim =
            Value::VerbatimString { format: redis::VerbatimFormat::Text, text: "redis_version:7.0.0\n".into() };
        let cluster = Value::Map(vec![
            (Value::SimpleString("a:6379".into()), verbatim),
            (Value::SimpleString("b:6379".into()), info("6.2.7")),
        ]);
        assert_eq!(oldest_version(&cluster), Some((6, 2, 7)));
        assert!((6, 2, 7) < MIN_REDIS_VERSION && (7, 0, 0) >= MIN_REDIS_VERSION && (7, 4, 1) > MIN_REDIS_VERSION);
    }
}
