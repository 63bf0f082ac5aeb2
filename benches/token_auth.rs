//! The `token_auth` path end to end inside one node, against real Redis and
//! PostgreSQL: `handlers::dispatch(&node, &mut session, frame)` on a `Node` built from
//! `PgStore` and `RedisStore`, as a connection task calls it (no socket).
//!
//! - `cache_hit`: the token is in the Redis cache: one MGET.
//! - `cache_miss`: the cache entry is deleted before each op (untimed): MGET, the
//!   failure counter check, the PostgreSQL lookup, and the cache fill.
//! - `negative_hit`: an unknown token, already cached as unknown: MGET, the failure
//!   counter check and the failure count (the per-address limit is lifted so the
//!   steady state is not `Too many attempts`).
//!
//! Each run uses its own database and Redis key prefix, removed at the end.
//! Needs PostgreSQL and Redis: `bash scripts/services.sh` starts them. Without them
//! this bench says what is missing and exits successfully (so `cargo bench` still
//! runs the others) unless OPENCHAMPPS_BENCH_REQUIRE_STORES=1.
//!
//! Where: OPENCHAMPPS_BENCH_PG (an admin URL, default
//! postgres://postgres@127.0.0.1:5432/postgres), OPENCHAMPPS_BENCH_REDIS (default
//! redis://127.0.0.1:6379/0).
//!
//! `cargo bench --bench token_auth`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use openchampps::auth::Token;
use openchampps::config::Config;
use openchampps::handlers::dispatch;
use openchampps::node::Node;
use openchampps::outbox;
use openchampps::session::Session;
use openchampps::store::{unix_now, Stores};
use tokio::runtime::Runtime;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

struct Env {
    node: Arc<Node>,
    stores: Stores,
    admin_url: String,
    redis_url: String,
    database: String,
    prefix: String,
    /// A valid token of a real account, and an unknown one.
    token: Token,
    unknown: Token,
}

fn admin_url() -> String {
    std::env::var("OPENCHAMPPS_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn redis_url() -> String {
    std::env::var("OPENCHAMPPS_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn how_to_start() -> &'static str {
    "Start the local services with `bash scripts/services.sh` (PostgreSQL on 127.0.0.1:5432 with user \
     postgres, Redis on 127.0.0.1:6379), or point OPENCHAMPPS_BENCH_PG / OPENCHAMPPS_BENCH_REDIS at others."
}

async fn admin(url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("PostgreSQL at {url} did not answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("PostgreSQL at {url} is not reachable: {e}: {cause}"),
            None => format!("PostgreSQL at {url} is not reachable: {e}"),
        })?;
    tokio::spawn(connection);
    Ok(client)
}

async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {url}: {e}"))?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| format!("Redis at {url} did not answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("Redis at {url} is not reachable: {e}"))?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| format!("Redis at {url} does not answer PING: {e}"))?;
    Ok(conn)
}

impl Env {
    async fn setup() -> Result<Env, String> {
        let (admin_url, redis_url) = (admin_url(), redis_url());
        // Say everything that is missing at once, not one thing per attempt.
        let (pg, redis) = tokio::join!(admin(&admin_url), redis_connection(&redis_url));
        let missing: Vec<String> = [pg.as_ref().err(), redis.as_ref().err()].into_iter().flatten().cloned().collect();
        if !missing.is_empty() {
            return Err(missing.join("\n"));
        }
        let pg = pg.expect("checked");

        let run = format!("{}_{:06x}", std::process::id(), rand::random::<u32>() & 0xff_ffff);
        let database = format!("openchampps_bench_{run}");
        let prefix = format!("ocps-bench-{run}:");
        pg.batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .map_err(|e| format!("cannot create database {database}: {e}"))?;
        let env = Env::build(admin_url, redis_url, database.clone(), prefix).await;
        if env.is_err() {
            let _ = pg.batch_execute(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).await;
        }
        env
    }

    async fn build(admin_url: String, redis_url: String, database: String, prefix: String) -> Result<Env, String> {
        let mut config =
            Config::from_flags(&[]).map_err(|e| format!("invalid node settings in the environment: {e}"))?;
        config.db_conn = Some(database_url(&admin_url, &database));
        config.redis_url = redis_url.clone();
        config.redis_key_prefix = prefix.clone();

        let stores = Stores::connect(&config).map_err(|e| e.to_string())?;
        let pg = stores.users.clone();
        pg.migrate().await.map_err(|e| format!("migrations failed: {e}"))?;
        let settings = config.validate().map_err(|e| format!("invalid node settings: {e}"))?;
        let node = Arc::new(Node::new(settings, "bench-node".into(), stores.clone()).0);

        // A real account and token; token_auth never checks the password hash.
        let user_id = pg
            .create_user("bench.user", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", None)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "bench.user already exists in a fresh database".to_owned())?;
        let token = Token::generate();
        let expires_at = unix_now() + 86_400;
        pg.insert_token(user_id, &token.hash(), Some("127.0.0.1"), expires_at, 1).await.map_err(|e| e.to_string())?;
        Ok(Env { node, stores, admin_url, redis_url, database, prefix, token, unknown: Token::generate() })
    }

    /// Drops the database and deletes every key under the prefix.
    async fn teardown(self) {
        let Env { node, stores, admin_url, redis_url, database, prefix, .. } = self;
        drop(node);
        drop(stores); // closes the pools' connections to the database
        match admin(&admin_url).await {
            Ok(pg) => {
                if let Err(e) = pg.batch_execute(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).await
                {
                    eprintln!("token_auth bench: could not drop database {database}: {e}");
                }
            }
            Err(e) => eprintln!("token_auth bench: could not drop database {database}: {e}"),
        }
        if let Ok(mut conn) = redis_connection(&redis_url).await {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
        }
    }

    fn session(&self) -> Session {
        let (outbox, _inbox) = outbox::channel(16);
        Session::new(1, IpAddr::V4(Ipv4Addr::LOCALHOST), outbox)
    }
}

/// The bench database's URL: the admin URL with its database name replaced.
fn database_url(admin_url: &str, database: &str) -> String {
    let Some((scheme, rest)) = admin_url.split_once("://") else {
        return format!("{admin_url} dbname={database}"); // key=value form
    };
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = authority.split_once('/').map_or(authority, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{database}?{q}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

fn frame(token: &Token) -> String {
    format!(r#"{{"type":"token_auth","payload":{{"token":"{}"}}}}"#, token.as_str())
}

/// Runs one dispatch and checks its reply type, so a broken setup cannot pass as fast.
async fn check(node: &Node, session: &mut Session, text: &str, expect: &str) {
    let reply = dispatch(node, session, text).await.unwrap_or_default();
    assert!(reply.contains(expect), "expected {expect}, got {reply:?}");
}

fn bench(c: &mut Criterion, rt: &Runtime, env: &Env) {
    let valid = frame(&env.token);
    let unknown = frame(&env.unknown);
    let hash = env.token.hash();
    // Warm the cache (a miss fills it) and the negative entry, and check the replies.
    rt.block_on(async {
        let mut session = env.session();
        check(&env.node, &mut session, &valid, "auth_success").await;
        check(&env.node, &mut session, &unknown, "Invalid or expired token").await;
        check(&env.node, &mut session, &unknown, "Invalid or expired token").await;
    });

    let mut group = c.benchmark_group("token_auth");
    // The same frame again and again on one connection: a cache hit for the valid
    // token, a negative-cache hit for the unknown one.
    let repeat = |frame: &String| {
        let frame = frame.clone();
        move |b: &mut criterion::Bencher<'_>| {
            b.to_async(rt).iter_custom(|iters| {
                let (node, mut session, frame) = (env.node.clone(), env.session(), frame.clone());
                async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(dispatch(&node, &mut session, &frame).await);
                    }
                    started.elapsed()
                }
            })
        }
    };
    group.bench_function("cache_hit", repeat(&valid));
    group.bench_function("cache_miss_postgres", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (node, tokens, mut session, valid) =
                (env.node.clone(), env.stores.tokens.clone(), env.session(), valid.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tokens.forget(&[hash]).await.expect("Redis answers");
                    let started = Instant::now();
                    std::hint::black_box(dispatch(&node, &mut session, &valid).await);
                    total += started.elapsed();
                }
                total
            }
        })
    });
    group.bench_function("negative_hit", repeat(&unknown));
    group.finish();

    // The same checks after the runs: the figures above were the paths they claim.
    rt.block_on(async {
        let mut session = env.session();
        check(&env.node, &mut session, &valid, "auth_success").await;
        check(&env.node, &mut session, &unknown, "Invalid or expired token").await;
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let env = match rt.block_on(Env::setup()) {
        Ok(env) => env,
        Err(missing) => {
            eprintln!(
                "\ntoken_auth bench SKIPPED: it needs real PostgreSQL and Redis.\n{missing}\n{}\n",
                how_to_start()
            );
            let required = std::env::var("OPENCHAMPPS_BENCH_REQUIRE_STORES").is_ok_and(|v| v == "1");
            std::process::exit(if required { 1 } else { 0 });
        }
    };
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    // A panic (a failed check) must still remove the database and keys.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bench(&mut c, &rt, &env)));
    c.final_summary();
    rt.block_on(env.teardown());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
