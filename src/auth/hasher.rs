//! Argon2id hashing on a bounded pool. A hash costs tens of milliseconds of CPU and
//! ~19 MiB, so at most `workers` run at once (on threads of the pool's own, never on
//! the async workers) and at most `queue` more wait; past that callers get `Busy`
//! at once instead of piling up memory and latency. The pool's threads run at a
//! lower CPU priority (`HASH_NICE`): under a login flood the hashes take the cores
//! the rest of the node leaves, and a `token_auth` or a chat message does not wait
//! for the kernel to take a core back from a hash.
//!
//! The pool is shared fairly between clients ([`fair`](super::fair)): a login first
//! lines up behind its own address's logins in progress, then its network's
//! ([`line_up`](HashPool::line_up)), so one address, or one network, holds at most a
//! few places, and waiting hashes get the workers network by network in turn.
//!
//! Stored bcrypt hashes (`$2a$`, `$2b$`, `$2y$`: accounts taken over from the Go
//! server) verify on the same pool, and a login that verifies one replaces it with
//! argon2id (`needs_rehash`).

use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use argon2::password_hash::phc::Output;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::fair::{InProgress, Lines, Workers};
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

/// A place in the pool, running or queued, for the client network it counts
/// against. Taken before any store work, so a request refused as busy costs none;
/// one the throttles refuse gives it back before any hash.
pub struct Admission {
    _place: OwnedSemaphorePermit,
    _registration: Option<OwnedSemaphorePermit>,
    network: String,
}

/// A login's turn: its places in its address's and its network's lines.
pub struct Turn {
    _address: InProgress,
    network: InProgress,
}

pub struct HashPool {
    inner: Arc<Inner>,
    admitted: Arc<Semaphore>,
    /// Registrations may hold at most a quarter of the places, so a registration
    /// flood never starves logins.
    registrations: Arc<Semaphore>,
    /// Each address's and each network's logins and registrations in progress.
    addresses: Arc<Lines>,
    networks: Arc<Lines>,
    workers: Arc<Workers>,
    threads: Threads,
}

struct Inner {
    argon2: Argon2<'static>,
    params: Params,
    /// Verified against when the user does not exist, so that costs a real hash too:
    /// a copy of the last real hash verified (argon2id or bcrypt), so that while stored
    /// hashes change parameters or scheme, unknown users cost what known ones cost.
    dummy_hash: RwLock<String>,
    /// Block buffers of finished verifications; at most one per worker ever exists.
    buffers: Mutex<Vec<Vec<Block>>>,
}

impl HashPool {
    /// `per_address`, `per_network`: logins one client address, and one network
    /// (`address::network_key`), may have in progress at once; `nice`: the hash
    /// threads' nice value (0 to 19; Linux only, elsewhere ignored).
    pub fn new(
        params: Params,
        workers: usize,
        queue: usize,
        per_address: usize,
        per_network: usize,
        nice: i32,
    ) -> HashPool {
        let workers = if workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { workers };
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy_hash = argon2
            .hash_password(b"openchampps-dummy-password")
            .expect("argon2 hashing with validated parameters")
            .to_string();
        HashPool {
            inner: Arc::new(Inner { argon2, params, dummy_hash: RwLock::new(dummy_hash), buffers: Mutex::default() }),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            registrations: Arc::new(Semaphore::new(((workers + queue) / 4).max(1))),
            addresses: Lines::new(per_address),
            networks: Lines::new(per_network),
            workers: Workers::new(workers),
            threads: Threads::start(workers, nice),
        }
    }

    /// Waits until the client at `ip`, and its network, have fewer than their
    /// shares of logins in progress; hold the result for the whole login or
    /// registration.
    pub async fn line_up(&self, ip: IpAddr) -> Turn {
        let address = self.addresses.enter(crate::address::address_key(ip)).await;
        let network = self.networks.enter(crate::address::network_key(ip)).await;
        Turn { _address: address, network }
    }

    /// Takes a place without waiting; `Busy` when every worker and queue slot is taken.
    pub fn admit(&self, turn: &Turn) -> Result<Admission, Busy> {
        let place = self.admitted.clone().try_acquire_owned().map_err(|_| Busy)?;
        Ok(Admission { _place: place, _registration: None, network: turn.network.key().to_owned() })
    }

    /// Like [`admit`](Self::admit), within the registrations' share of the pool.
    pub fn admit_registration(&self, turn: &Turn) -> Result<Admission, Busy> {
        let registration = self.registrations.clone().try_acquire_owned().map_err(|_| Busy)?;
        let place = self.admitted.clone().try_acquire_owned().map_err(|_| Busy)?;
        Ok(Admission { _place: place, _registration: Some(registration), network: turn.network.key().to_owned() })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, place: Admission, password: String) -> String {
        self.run(place, move |inner| {
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
    pub async fn verify(&self, place: Admission, password: String, stored: Option<String>) -> Verified {
        self.run(place, move |inner| inner.verify(&password, stored.as_deref())).await
    }

    async fn run<R: Send + 'static>(&self, place: Admission, work: impl FnOnce(&Inner) -> R + Send + 'static) -> R {
        m::hash_queue_depth(1.0);
        let worker = self.workers.acquire(&place.network).await;
        m::hash_queue_depth(-1.0);
        let inner = self.inner.clone();
        // The worker and the place go with the hash: a caller that stops waiting
        // does not free them while the hash still runs.
        let (done, result) = tokio::sync::oneshot::channel();
        self.threads.run(Box::new(move || {
            let _held = (place, worker);
            let start = Instant::now();
            let result = work(&inner);
            m::hash_duration(start.elapsed());
            let _ = done.send(result);
        }));
        result.await.expect("hashing does not panic")
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The pool's threads, one per worker (`Workers` lets no more hashes run at once
/// than there are threads, so a job never waits here). They end with the pool.
struct Threads {
    jobs: mpsc::Sender<Job>,
}

impl Threads {
    fn start(count: usize, nice: i32) -> Threads {
        let (jobs, queued) = mpsc::channel::<Job>();
        let queued = Arc::new(Mutex::new(queued));
        for i in 0..count {
            let queued = queued.clone();
            std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        let job = queued.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        // A panicking hash fails its caller (its result is never sent),
                        // not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .expect("spawning a hash thread");
        }
        Threads { jobs }
    }

    fn run(&self, job: Job) {
        // The threads end only when `jobs` is dropped, with the pool.
        let _ = self.jobs.send(job);
    }
}

/// Sets the calling thread's nice value (on Linux, nice is per thread).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0 {
        // SAFETY: setpriority has no memory effects; `0` is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "cannot lower the hash threads' priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Whether `hash` is a bcrypt hash of a variant the Go server's library made or
/// reads: `$2a$`, `$2b$` or `$2y$`, a cost from 4 to 31, 53 characters of salt and hash.
fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60
        && b.starts_with(b"$2")
        && matches!(b[2], b'a' | b'b' | b'y')
        && b[3] == b'$'
        && b[4..6].iter().all(u8::is_ascii_digit)
        && (4..=31).contains(&((b[4] - b'0') * 10 + (b[5] - b'0')))
        && b[6] == b'$'
}

/// The scheme and cost part of a stored hash: `$argon2id$v=19$m=…,t=…,p=…` of a PHC
/// string, `$2b$10` of a bcrypt hash.
fn parameters(hash: &str) -> &str {
    if is_bcrypt(hash) {
        return &hash[..6];
    }
    hash.rsplitn(3, '$').nth(2).unwrap_or(hash)
}

impl Inner {
    fn verify(&self, password: &str, stored: Option<&str>) -> Verified {
        let exists = stored.is_some();
        let dummy;
        let hash = match stored {
            Some(stored) => {
                // Only a hash this pool can verify is worth copying: an unknown user
                // must cost a real verification.
                let verifiable = is_bcrypt(stored) || PasswordHash::new(stored).is_ok();
                if verifiable && parameters(stored) != parameters(&self.dummy_hash.read().unwrap()) {
                    *self.dummy_hash.write().unwrap() = stored.to_owned();
                }
                stored
            }
            None => {
                dummy = self.dummy_hash.read().unwrap().clone();
                &dummy
            }
        };
        if is_bcrypt(hash) {
            // Compares in constant time; a password past 72 bytes counts by its first
            // 72, as it did when the Go server hashed it.
            let matches = bcrypt::verify(password, hash).unwrap_or_else(|e| {
                tracing::error!(error = %e, "stored bcrypt password hash is malformed");
                false
            });
            let ok = matches && exists;
            return Verified { ok, needs_rehash: ok };
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            tracing::error!("stored password hash is neither a PHC string nor bcrypt");
            return Verified { ok: false, needs_rehash: false };
        };
        let current = parsed.algorithm.as_str() == argon2::ARGON2ID_IDENT.as_str()
            && parsed.version.is_none_or(|v| v == u32::from(Version::V0x13))
            && Params::try_from(&parsed).is_ok_and(|p| {
                p.m_cost() == self.params.m_cost()
                    && p.t_cost() == self.params.t_cost()
                    && p.p_cost() == self.params.p_cost()
            });
        let matches = if current {
            self.verify_in_reused_memory(password, &parsed)
        } else {
            self.argon2.verify_password(password.as_bytes(), &parsed).is_ok()
        };
        let ok = matches && exists;
        Verified { ok, needs_rehash: ok && !current }
    }

    /// Verifies a hash made with the configured parameters in a reused block buffer:
    /// a fresh 19 MiB allocation per login costs as much again in page faults as the
    /// hash itself.
    fn verify_in_reused_memory(&self, password: &str, parsed: &PasswordHash) -> bool {
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        let mut blocks =
            self.buffers.lock().unwrap().pop().unwrap_or_else(|| vec![Block::default(); self.params.block_count()]);
        let computed = self.argon2.hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), out, &mut blocks);
        self.buffers.lock().unwrap().push(blocks);
        // `Output` compares in constant time.
        computed.is_ok() && Output::new(out).is_ok_and(|out| out == *expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize, queue: usize) -> HashPool {
        HashPool::new(Params::new(1024, 1, 1, None).unwrap(), workers, queue, 2, 8, 0)
    }

    impl HashPool {
        /// A place for a request from nowhere in particular.
        async fn place(&self) -> Admission {
            self.admit(&self.line_up(IpAddr::from([192, 0, 2, 1])).await).unwrap()
        }
    }

    /// Under a login flood the hashes take what the rest of the node leaves: they run
    /// on threads of their own at the configured nice value, and the node's other
    /// threads keep theirs.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_at_a_lower_priority_on_threads_of_their_own() {
        let nice_here = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice_here();
        let pool = HashPool::new(Params::new(1024, 1, 1, None).unwrap(), 2, 1, 2, 8, 7);
        let (nice, name) = pool
            .run(pool.place().await, move |_| (nice_here(), std::thread::current().name().map(str::to_owned)))
            .await;
        assert_eq!(nice, before.max(7), "the hash thread's nice value");
        assert!(name.is_some_and(|n| n.starts_with("hash-")), "ran on a hash thread");
        assert_eq!(nice_here(), before, "the caller's thread keeps its priority");
    }

    #[tokio::test]
    async fn a_panicking_hash_fails_its_caller_not_the_pool() {
        let pool = Arc::new(pool(1, 1));
        let panicking = pool.clone();
        let failed = tokio::spawn(async move {
            let place = panicking.place().await;
            let _: () = panicking.run(place, |_| panic!("a hash that panics")).await;
        })
        .await;
        assert!(failed.is_err(), "the caller sees the failure");
        // The pool's one thread and one worker are still there.
        let phc = pool.hash(pool.place().await, "secret1".into()).await;
        assert!(phc.starts_with("$argon2id$"));
    }

    #[tokio::test]
    async fn verifies_what_it_hashed() {
        let pool = pool(1, 1);
        let phc = pool.hash(pool.place().await, "secret1".into()).await;
        assert!(phc.starts_with("$argon2id$"));
        let ok = pool.verify(pool.place().await, "secret1".into(), Some(phc.clone())).await;
        assert_eq!(ok, Verified { ok: true, needs_rehash: false });
        assert!(!pool.verify(pool.place().await, "wrong!!".into(), Some(phc)).await.ok);
        assert!(!pool.verify(pool.place().await, "secret1".into(), None).await.ok);
    }

    #[tokio::test]
    async fn flags_hashes_made_with_other_parameters() {
        let old_pool = pool(1, 1);
        let old = old_pool.hash(old_pool.place().await, "secret1".into()).await;
        let new = HashPool::new(Params::new(2048, 1, 1, None).unwrap(), 1, 1, 2, 8, 0);
        let v = new.verify(new.place().await, "secret1".into(), Some(old)).await;
        assert_eq!(v, Verified { ok: true, needs_rehash: true });
    }

    /// Made by Python's `bcrypt` 5.0 (`hashpw(pw, gensalt(rounds=10[, prefix=b"2a"]))`),
    /// as Go's `bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)` makes them.
    const BCRYPT_2B: &str = "$2b$10$T3QydkJ4gud6QPY6HWa9ReDeUqiCjCjPPsB2JJpfE1icCLQGnZ9Au"; // securePassword123
    const BCRYPT_2A: &str = "$2a$10$yvbmJArlf4MFo/xU7Jbdse84UrIPjPGJrd8GV4Yvc8QJZTL/doVOu"; // oldGoPassword!42

    #[tokio::test]
    async fn verifies_bcrypt_hashes_and_asks_for_argon2id() {
        let pool = pool(1, 1);
        let bcrypt_2y = BCRYPT_2B.replacen("$2b$", "$2y$", 1);
        for (hash, password) in
            [(BCRYPT_2B, "securePassword123"), (BCRYPT_2A, "oldGoPassword!42"), (&bcrypt_2y, "securePassword123")]
        {
            let v = pool.verify(pool.place().await, password.into(), Some(hash.into())).await;
            assert_eq!(v, Verified { ok: true, needs_rehash: true }, "{hash}");
            let v = pool.verify(pool.place().await, "wrongPassword".into(), Some(hash.into())).await;
            assert_eq!(v, Verified { ok: false, needs_rehash: false }, "{hash}");
        }
        // `$2x$` (crypt_blowfish's bug-compatible variant) was never made by Go.
        let v = pool
            .verify(pool.place().await, "securePassword123".into(), Some(BCRYPT_2B.replacen("$2b$", "$2x$", 1)))
            .await;
        assert!(!v.ok);
    }

    #[tokio::test]
    async fn unknown_users_cost_a_bcrypt_verification_after_a_bcrypt_account() {
        let pool = pool(1, 1);
        pool.verify(pool.place().await, "wrongPassword".into(), Some(BCRYPT_2B.into())).await;
        assert_eq!(*pool.inner.dummy_hash.read().unwrap(), BCRYPT_2B);
        // The right password of the copied hash still does not let an unknown user in.
        let v = pool.verify(pool.place().await, "securePassword123".into(), None).await;
        assert_eq!(v, Verified { ok: false, needs_rehash: false });
        // A stored hash in no known format is not copied: unknown users keep costing a hash.
        pool.verify(pool.place().await, "whatever1".into(), Some("not-a-hash".into())).await;
        assert_eq!(*pool.inner.dummy_hash.read().unwrap(), BCRYPT_2B);
        let phc = pool.hash(pool.place().await, "secret1".into()).await;
        pool.verify(pool.place().await, "secret1".into(), Some(phc.clone())).await;
        assert_eq!(*pool.inner.dummy_hash.read().unwrap(), phc);
    }

    #[test]
    fn parameters_name_scheme_and_cost() {
        assert_eq!(parameters(BCRYPT_2B), "$2b$10");
        assert_eq!(parameters("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA"), "$argon2id$v=19$m=1024,t=1,p=1");
        assert!(!is_bcrypt("$2b$10$short"));
        assert!(!is_bcrypt(&BCRYPT_2B.replacen("$2b$10", "$2b$1x", 1)));
        assert!(!is_bcrypt(&BCRYPT_2B.replacen("$2b$10", "$2b$32", 1)));
        assert!(is_bcrypt(&BCRYPT_2B.replacen("$2b$10", "$2b$04", 1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_beyond_the_queue() {
        let pool = Arc::new(HashPool::new(Params::new(19456, 2, 1, None).unwrap(), 1, 1, 1, 1, 0));
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let turn = pool.line_up(IpAddr::from([192, 0, i, 1])).await;
                    let place = pool.admit(&turn)?;
                    Ok::<_, Busy>(pool.hash(place, "secret1".into()).await)
                })
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
