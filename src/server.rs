//! Start-up, the accept loops and the graceful drain.
//!
//! Start: listeners up (status `starting`), migrations applied, then `ready`.
//! Drain (SIGTERM/SIGINT): `/ready` says 503 at once and new WebSocket upgrades are
//! refused with 503 (the port keeps answering `/health` and `/ready`, so probes see
//! "draining" rather than a refused connection); after `SHUTDOWN_DRAIN_SECS`, or as
//! soon as every client has left, the remaining sockets close with 1001 so clients
//! reconnect elsewhere; then presence is removed and `last_used_at` flushed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::config::{Config, Settings};
use crate::http::{self, Public};
use crate::metrics as m;
use crate::node::{Node, Status};
use crate::store::Stores;
use crate::{connection, handlers, revocation};

/// A slow client gets this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATION_RETRY: Duration = Duration::from_secs(1);
/// How often a node tries to prune expired and revoked tokens from PostgreSQL.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How often histogram samples are folded into their buckets when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);
/// Connections the kernel queues before accept: reconnect storms (a node went away
/// and its players come back at once) overflow the default 128, costing each
/// dropped SYN a one-second retry.
const PUBLIC_BACKLOG: u32 = 4096;

/// The sockets a node serves on: the public port and the metrics side port.
pub struct Listeners {
    pub public: TcpListener,
    pub metrics: TcpListener,
    /// ADMIN_ADDR's, when set: the admin API there instead of on the metrics port.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
        let public = listen(config.listen_addr, PUBLIC_BACKLOG)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
        let metrics = TcpListener::bind(config.metrics_addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.metrics_addr))?;
        let admin = match config.admin_addr {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (ADMIN_ADDR): {e}"))?)
            }
            None => None,
        };
        Ok(Listeners { public, metrics, admin })
    }
}

/// The `serve` command: PostgreSQL and Redis as configured, the configured ports,
/// until SIGTERM/SIGINT.
pub async fn serve(settings: Settings) -> Result<(), String> {
    let stores = Stores::connect(&settings.config).map_err(|e| e.to_string())?;
    let listeners = Listeners::bind(&settings.config).await?;
    raise_fd_limit(settings.config.max_connections);
    run_settings(settings, listeners, stores, shutdown_signal()).await
}

/// Runs a node with `config`, checked as `main` checks it (for embedding a node:
/// tests), on `listeners` and `stores` until `shutdown` resolves, then drains and
/// returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    stores: Stores,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    run_settings(config.validate()?, listeners, stores, shutdown).await
}

/// Runs a node with `settings` on `listeners` and `stores` until `shutdown`
/// resolves, then drains and returns.
pub async fn run_settings(
    settings: Settings,
    listeners: Listeners,
    stores: Stores,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let config = &settings.config;
    let node_id = config.node_id();
    let handle = m::install();
    m::build_info(&node_id);
    handlers::register_metrics();
    connection::register_metrics();
    m::register_matchmaking(&config.match_queues.0);
    m::register_admin();
    let admin = Arc::new(Admin::new(&settings, &stores, node_id.clone()));

    let public_addr = listeners.public.local_addr().map_err(|e| e.to_string())?;
    let metrics_addr = listeners.metrics.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = match &listeners.admin {
        Some(l) => l.local_addr().map_err(|e| e.to_string())?,
        None => metrics_addr,
    };
    let max_connections = config.max_connections as usize;
    let per_address = crate::ratelimit::AddressSlots::new(config.max_connections_per_address);
    let drain = Duration::from_secs(config.shutdown_drain_secs);
    let (node, feeds) = Node::new(settings, node_id.clone(), stores);
    let node = Arc::new(node);
    let public = Arc::new(Public {
        node: node.clone(),
        connections: Arc::new(Semaphore::new(max_connections)),
        per_address,
        going_away: CancellationToken::new(),
        next_id: AtomicU64::new(1),
    });
    let stop_background = CancellationToken::new();

    let mut servers = JoinSet::new();
    servers.spawn(accept_loop(listeners.public, {
        let public = public.clone();
        move |peer| {
            let public = public.clone();
            service_fn(move |req| http::public(public.clone(), peer, req))
        }
    }));
    // The admin API: on the metrics port, unless it has a listener of its own.
    let admin_on_metrics = listeners.admin.is_none().then(|| admin.clone());
    servers.spawn(accept_loop(listeners.metrics, {
        let (handle, node) = (handle.clone(), node.clone());
        move |peer| {
            let (handle, node, admin) = (handle.clone(), node.clone(), admin_on_metrics.clone());
            service_fn(move |req| {
                let (handle, node, admin) = (handle.clone(), node.clone(), admin.clone());
                async move {
                    match admin.filter(|_| admin::http::is_admin_path(req.uri().path())) {
                        Some(admin) => admin::http::serve(admin, peer, req).await,
                        None => http::metrics(handle, node, req).await,
                    }
                }
            })
        }
    }));
    if let Some(listener) = listeners.admin {
        let admin = admin.clone();
        servers.spawn(accept_loop(listener, move |peer| {
            let admin = admin.clone();
            service_fn(move |req| admin::http::serve(admin.clone(), peer, req))
        }));
    }
    tracing::info!(%node_id, %public_addr, %metrics_addr, %admin_addr, "listening");

    tokio::pin!(shutdown);
    // Several nodes may start at once on an empty database: the migration lock makes
    // them take turns; a database that is not up yet is waited for.
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            result = node.stores.users.migrate() => match result {
                Ok(()) => break,
                // A database the node must not change as it is (a Go server's it
                // cannot take over): retrying cannot help; stop with the reason.
                Err(crate::error::StoreError::Refused(reason)) => return Err(reason),
                Err(e) => tracing::warn!(error = %e, "database not ready; retrying"),
            },
        }
        tokio::time::sleep(MIGRATION_RETRY).await;
    }

    // The first admin, from the bootstrap settings, when no operator exists.
    if let Err(e) = admin.bootstrap().await {
        tracing::error!(error = %e, "could not create the first admin (ADMIN_BOOTSTRAP_NAME)");
    }

    let mut background = JoinSet::new();
    let cluster = &node.cluster;
    background.spawn(cluster.clone().run_presence(stop_background.clone()));
    background.spawn(cluster.clone().run_chat_subscriber(stop_background.clone()));
    background.spawn(cluster.clone().run_directory(feeds.route_changes, stop_background.clone()));
    background.spawn(run_housekeeping(node.clone(), stop_background.clone()));
    background.spawn(revocation::run(node.clone(), stop_background.clone()));
    background.spawn(node.matchmaker.clone().run(feeds.releases, stop_background.clone()));
    background.spawn(node.matchmaker.clone().run_resends(feeds.asks, stop_background.clone()));
    background.spawn(m::run_upkeep(handle, METRICS_UPKEEP, stop_background.clone()));
    node.set_status(Status::Ready);
    tracing::info!("ready");

    shutdown.await;
    node.set_status(Status::Draining);
    tracing::info!(drain_secs = drain.as_secs(), "draining");

    let all = max_connections as u32;
    let everyone_left = public.connections.acquire_many(all);
    if tokio::time::timeout(drain, everyone_left).await.is_err() {
        public.going_away.cancel();
        // Each socket gets a short closing handshake; never wait past that.
        let _ = tokio::time::timeout(Duration::from_secs(3), public.connections.acquire_many(all)).await;
    }
    stop_background.cancel();
    while background.join_next().await.is_some() {}
    servers.abort_all();
    tracing::info!("stopped");
    Ok(())
}

/// Every second until shutdown: flushes `last_used_at`, exports pool gauges, forgets
/// idle chat buckets; every [`PRUNE_EVERY`], prunes old tokens (one node at a time).
/// Flushes one last time at shutdown.
async fn run_housekeeping(node: Arc<Node>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::last_used::FLUSH_EVERY);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = prune.tick() => match node.stores.users.prune_tokens().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "pruned expired and revoked tokens"),
                Err(e) => tracing::warn!(error = %e, "could not prune old tokens; will retry"),
            },
            _ = tick.tick() => {
                node.last_used.flush(node.stores.users.as_ref()).await;
                node.stores.users.export_pool_gauges();
                node.stores.shared.export_pool_gauges();
                node.cluster.forget_idle_chat();
            }
        }
    }
    node.last_used.flush(node.stores.users.as_ref()).await;
}

/// Accepts TCP connections and serves HTTP/1.1 (with upgrades) on each, until aborted.
async fn accept_loop<F, S>(listener: TcpListener, make_service: F)
where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http_body_util::Full<hyper::body::Bytes>>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(peer);
        // Boxed, as the connection's task (`http::upgrade`): one pointer to move.
        tokio::spawn(Box::pin(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }));
    }
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Each connection holds a file descriptor: take the hard limit (as Go's runtime
/// does), and say so at start if even that is below the connection cap.
fn raise_fd_limit(max_connections: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    if limit.rlim_cur < max_connections + 64 {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-files limit is below MAX_CONNECTIONS; raise it or lower MAX_CONNECTIONS"
        );
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
