//! How the node talks to Redis, under the concurrency of a busy node: 64 tasks
//! (as 64 WebSocket connections would) each doing token-cache lookups (an MGET of
//! the token and session keys), on a 2-worker runtime.
//!
//! - `node_store`: `TokenCache::lookup` of `RedisStore`, whatever the node does today.
//! - `deadpool_per_command`: a connection borrowed from a deadpool-redis pool for
//!   each command (the node's path until b8cd7fa). deadpool-redis checks every
//!   connection it hands out with `UNWATCH` + `PING`, a full round trip, so each
//!   lookup costs two round trips and no two lookups share a write.
//! - `shared_multiplexed`: the same MGET on one shared `MultiplexedConnection`
//!   (cloned per task), which pipelines concurrent commands onto one socket.
//!
//! The figure is time per lookup with 64 in flight (its inverse is the rate).
//! Needs Redis (`bash scripts/services.sh`); says so and exits successfully without
//! it, unless OPENCHAMPPS_BENCH_REQUIRE_STORES=1.
//!
//! `cargo bench --bench redis_client`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use openchampps::auth::Token;
use openchampps::store::redis::RedisStore;
use openchampps::store::{TokenCache, TokenRecord};
use redis::AsyncCommands;

const TASKS: u64 = 64;

fn redis_url() -> String {
    std::env::var("OPENCHAMPPS_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {url}: {e}"))?;
    let mut conn = tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| format!("Redis at {url} did not answer within 3 s"))?
        .map_err(|e| format!("Redis at {url} is not reachable: {e}"))?;
    redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| format!("Redis at {url}: {e}"))?;
    Ok(conn)
}

/// Runs `iters` operations spread over `TASKS` concurrent tasks; returns the wall time.
async fn spread<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let op = op.clone();
            let n = iters / TASKS + u64::from(t < iters % TASKS);
            tokio::spawn(async move {
                for _ in 0..n {
                    op().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("bench task");
    }
    started.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let url = redis_url();
    let conn = match rt.block_on(connect(&url)) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!(
                "\nredis_client bench SKIPPED: it needs a real Redis.\n{e}\nStart it with `bash scripts/services.sh` \
                 (Redis on 127.0.0.1:6379) or point OPENCHAMPPS_BENCH_REDIS at one.\n"
            );
            let required = std::env::var("OPENCHAMPPS_BENCH_REQUIRE_STORES").is_ok_and(|v| v == "1");
            std::process::exit(if required { 1 } else { 0 });
        }
    };
    let prefix = format!("ocps-bench-rc-{}:", std::process::id());
    let store = Arc::new(RedisStore::connect(&url, &prefix, 32).expect("valid Redis URL"));
    let token = Token::generate().hash();
    let record = TokenRecord {
        user_id: 1,
        username: "bench.user".into(),
        expires_at: openchampps::store::unix_now() + 86_400,
        standing: Default::default(),
    };
    rt.block_on(store.cache(&token, &record, 300, Some("Bench User"))).expect("Redis answers");
    let tag = format!("{prefix}{{t:{}}}", hex::encode(token.0));
    let keys = [format!("{tag}:tok"), format!("{tag}:sess")];

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut group = c.benchmark_group("redis_lookup_64_in_flight");
    group.bench_function("node_store", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = store.clone();
            spread(iters, move || {
                let store = store.clone();
                async move {
                    store.lookup(&token).await.expect("Redis answers");
                }
            })
        })
    });
    let pool = deadpool_redis::Config::from_url(url.as_str())
        .builder()
        .expect("valid Redis URL")
        .max_size(32)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .expect("Redis pool");
    group.bench_function("deadpool_per_command", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (pool, keys) = (pool.clone(), keys.clone());
            spread(iters, move || {
                let (pool, keys) = (pool.clone(), keys.clone());
                async move {
                    let mut conn = pool.get().await.expect("Redis answers");
                    let _: (Option<String>, Option<String>) = conn.mget(&keys).await.expect("Redis answers");
                }
            })
        })
    });
    group.bench_function("shared_multiplexed", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (conn, keys) = (conn.clone(), keys.clone());
            spread(iters, move || {
                let (mut conn, keys) = (conn.clone(), keys.clone());
                async move {
                    let _: (Option<String>, Option<String>) = conn.mget(&keys).await.expect("Redis answers");
                }
            })
        })
    });
    group.finish();
    c.final_summary();

    let mut conn = conn;
    let _: Result<u64, _> = rt.block_on(conn.del(&keys));
}
