//! Argon2id hashing on a bounded pool. A hash costs tens of milliseconds of CPU and
//! ~19 MiB, so at most `workers` run at once (on tokio's blocking threads, never on
//! the async workers) and at most `queue` more wait; past that callers get `Busy`
//! at once instead of piling up memory and latency.

use std::sync::Arc;
use std::time::Instant;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash was made with other parameters than the configured ones.
    pub needs_rehash: bool,
}

pub struct HashPool {
    inner: Arc<Inner>,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

struct Inner {
    argon2: Argon2<'static>,
    params: Params,
    /// Verified against when the user does not exist, so that costs a real hash too.
    dummy_hash: String,
}

impl HashPool {
    pub fn new(params: Params, workers: usize, queue: usize) -> HashPool {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy_hash = argon2
            .hash_password(b"openchampps-dummy-password")
            .expect("argon2 hashing with validated parameters")
            .to_string();
        HashPool {
            inner: Arc::new(Inner { argon2, params, dummy_hash }),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        self.run(move |inner| {
            inner
                .argon2
                .hash_password(password.as_bytes())
                .expect("argon2 hashing with validated parameters")
                .to_string()
        })
        .await
    }

    /// Checks `password` against `stored` (a PHC string), or against a dummy hash when
    /// there is no such user, so both cases take the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<Verified, Busy> {
        self.run(move |inner| {
            let exists = stored.is_some();
            let phc = stored.as_deref().unwrap_or(&inner.dummy_hash);
            let Ok(parsed) = PasswordHash::new(phc) else {
                tracing::error!("stored password hash is not a PHC string");
                return Verified { ok: false, needs_rehash: false };
            };
            let ok = inner.argon2.verify_password(password.as_bytes(), &parsed).is_ok() && exists;
            let current = parsed.algorithm.as_str() == argon2::ARGON2ID_IDENT.as_str()
                && Params::try_from(&parsed).is_ok_and(|p| {
                    p.m_cost() == inner.params.m_cost()
                        && p.t_cost() == inner.params.t_cost()
                        && p.p_cost() == inner.params.p_cost()
                });
            Verified { ok, needs_rehash: ok && !current }
        })
        .await
    }

    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> R + Send + 'static,
    ) -> Result<R, Busy> {
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| Busy)?;
        m::hash_queue_depth(1.0);
        let running = self.running.clone().acquire_owned().await;
        m::hash_queue_depth(-1.0);
        let _running = running.expect("semaphore never closed");
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let result = work(&inner);
            m::hash_duration(start.elapsed());
            result
        })
        .await
        .map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize, queue: usize) -> HashPool {
        HashPool::new(Params::new(1024, 1, 1, None).unwrap(), workers, queue)
    }

    #[tokio::test]
    async fn verifies_what_it_hashed() {
        let pool = pool(1, 1);
        let phc = pool.hash("secret1".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let ok = pool.verify("secret1".into(), Some(phc.clone())).await.unwrap();
        assert_eq!(ok, Verified { ok: true, needs_rehash: false });
        assert!(!pool.verify("wrong!!".into(), Some(phc)).await.unwrap().ok);
        assert!(!pool.verify("secret1".into(), None).await.unwrap().ok);
    }

    #[tokio::test]
    async fn flags_hashes_made_with_other_parameters() {
        let old = pool(1, 1).hash("secret1".into()).await.unwrap();
        let new = HashPool::new(Params::new(2048, 1, 1, None).unwrap(), 1, 1);
        let v = new.verify("secret1".into(), Some(old)).await.unwrap();
        assert_eq!(v, Verified { ok: true, needs_rehash: true });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_beyond_the_queue() {
        let pool = Arc::new(HashPool::new(Params::new(19456, 2, 1, None).unwrap(), 1, 1));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.hash("secret1".into()).await })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                busy += 1;
            }
        }
        assert!(busy >= 5, "only {busy} of 8 refused with 1 worker + 1 queued");
    }
}
