//! argon2id verify through the node's `HashPool`, at the configured parameters
//! (the defaults, or ARGON2_MEMORY_KIB / ARGON2_ITERATIONS / ARGON2_PARALLELISM from
//! the environment, exactly as the node reads them). One login costs one verify, so
//! this figure bounds a node's login rate: cores ÷ verify time.
//!
//! `argon2id_core` isolates what one hash costs beyond the algorithm: `fresh_memory`
//! allocates the m_cost KiB of blocks per hash, as `verify_password` does, while
//! `reused_memory` hashes into blocks allocated once. The difference is the page
//! faults and zeroing the kernel does for memory that is handed back after every
//! hash. The process uses the same malloc settings as the node (src/main.rs).
//!
//! `cargo bench --bench hashing`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use openchampps::auth::HashPool;
use openchampps::config::Config;

const PASSWORD: &str = "correct horse battery staple";

fn main() {
    // As the node's main does, so big blocks behave as they do in the node.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let config = Config::from_flags(&[]).unwrap_or_else(|e| {
        eprintln!("hashing bench: invalid node settings in the environment: {e}");
        std::process::exit(2);
    });
    let params = config.argon2_params().unwrap_or_else(|e| {
        eprintln!("hashing bench: {e}");
        std::process::exit(2);
    });
    let label = format!("m={}KiB,t={},p={}", params.m_cost(), params.t_cost(), params.p_cost());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    // One worker, no queue: the figure is one verify, the pool's hand-offs (the
    // address's line and the worker's turn) included.
    let pool = HashPool::new(params.clone(), 1, 1, 1, 1, 0);
    let client = std::net::IpAddr::from([192, 0, 2, 1]);
    let place = || async { pool.admit(&pool.line_up(client).await).expect("an idle pool is never busy") };
    let stored = rt.block_on(async { pool.hash(place().await, PASSWORD.into()).await });

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("argon2id");
    group.bench_function(BenchmarkId::new("verify_correct_password", &label), |b| {
        b.to_async(&rt).iter(|| async { pool.verify(place().await, PASSWORD.into(), Some(stored.clone())).await })
    });
    // Unknown users are checked against a dummy hash: it must cost the same.
    group.bench_function(BenchmarkId::new("verify_unknown_user", &label), |b| {
        b.to_async(&rt).iter(|| async { pool.verify(place().await, PASSWORD.into(), None).await })
    });
    group.finish();

    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params.clone());
    let salt = b"sixteen byte salt";
    let mut out = [0u8; 32];
    let mut group = c.benchmark_group("argon2id_core");
    group.bench_function(BenchmarkId::new("fresh_memory", &label), |b| {
        b.iter(|| argon2.hash_password_into(PASSWORD.as_bytes(), salt, &mut out).expect("valid inputs"))
    });
    let mut blocks = vec![argon2::Block::new(); params.block_count()];
    group.bench_function(BenchmarkId::new("reused_memory", &label), |b| {
        b.iter(|| {
            argon2
                .hash_password_into_with_memory(PASSWORD.as_bytes(), salt, &mut out, &mut blocks)
                .expect("valid inputs")
        })
    });
    group.finish();
    c.final_summary();
}
