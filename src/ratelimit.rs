//! Rate limits, so one player cannot lock others out or flood them:
//! - login guesses, throttled per (typed name, client network) with backoff, whether
//!   or not the name is an account's, and capped per account cluster-wide except for
//!   networks the account logged in from before; decided before the password is
//!   checked, with the guesses still in flight counted until they resolve;
//! - registrations per client address, cluster-wide;
//! - connections per client address on this node, so one address cannot take all of
//!   a node's connections (and descriptors) from everyone else;
//! - token buckets in this node's memory for a connection's messages and an
//!   account's chat.
//!
//! A valid token is never limited, and a correct password is never refused because
//! of other accounts' failures.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::{Admit, Limits, LoginPolicy, Resolved};

/// The address a limit counts: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64,
/// the smallest block one subscriber usually holds.
pub fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The network password guesses count against: an IPv4 /24 or an IPv6 /48, the
/// block one attacker is assumed to hold entirely (an IPv6 site gets a /48; an
/// attacker hopping through fresh /64s of it gets no fresh budget with each).
pub fn network_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// Whom a password guess is at.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An account, whatever spelling of its name was typed.
    Account(i64),
    /// A typed name no account has: throttled alike, so replies say nothing about
    /// which names exist.
    Name(&'a str),
}

/// How often a guess that must wait for the pair's guesses in flight asks again,
/// and for how long at most before it is refused.
const WAIT_STEP: Duration = Duration::from_millis(25);
const WAIT_LIMIT: Duration = Duration::from_secs(10);

pub struct LoginThrottle {
    limits: Arc<dyn Limits>,
    policy: LoginPolicy,
}

/// A guess admitted by [`LoginThrottle::admit`]: report how it went.
pub struct Guess {
    subject: String,
    network: String,
}

impl LoginThrottle {
    pub fn new(limits: Arc<dyn Limits>, config: &Config) -> LoginThrottle {
        let policy = LoginPolicy {
            free: config.login_free_failures,
            base_ms: 1000,
            max_ms: config.login_backoff_max_secs * 1000,
            forget_ms: config.login_failure_window_secs * 1000,
            per_subject: config.login_max_failures_per_account,
            window_ms: config.login_failure_window_secs * 1000,
            known_ms: config.login_known_network_days * 86_400_000,
        };
        LoginThrottle { limits, policy }
    }

    /// Reserves one password check at `subject` from `ip`, or `None` when that pair
    /// must wait or the subject has reached its cap. While the pair's other guesses
    /// are being checked, and whether this one is free depends on them, it waits for
    /// them: a player's concurrent logins with the right password all get in.
    pub async fn admit(&self, subject: Subject<'_>, ip: IpAddr) -> Option<Guess> {
        let subject = match subject {
            Subject::Account(id) => format!("a{id}"),
            Subject::Name(name) => format!("n{:.32x}", Sha256::digest(name.to_lowercase().as_bytes())),
        };
        let guess = Guess { subject, network: network_key(ip) };
        let give_up = Instant::now() + WAIT_LIMIT;
        loop {
            match self.limits.login_admit(&guess.subject, &guess.network, &self.policy).await {
                // Without any store to count in, a guess is not refused.
                Ok(Admit::Check) | Err(_) => return Some(guess),
                Ok(Admit::Refuse) => return None,
                Ok(Admit::Wait) if Instant::now() >= give_up => return None,
                Ok(Admit::Wait) => tokio::time::sleep(WAIT_STEP).await,
            }
        }
    }

    /// Settles an admitted guess.
    pub async fn resolved(&self, guess: Guess, how: Resolved) {
        let _ = self.limits.login_resolved(&guess.subject, &guess.network, how, &self.policy).await;
    }
}

/// Whether `ip` may register one more account (counts this one).
pub async fn registration_allowed(limits: &dyn Limits, ip: IpAddr, config: &Config) -> bool {
    if config.registrations_per_address == 0 {
        return true;
    }
    let key = format!("reg:{}", address_key(ip));
    limits.hit(&key, config.registration_window_secs).await.map_or(true, |n| n <= config.registrations_per_address)
}

/// A token bucket: `rate` per second, at most `burst` at once.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `None` when `per_sec` is 0: no limit.
    pub fn new(per_sec: u32, burst: u32) -> Option<Bucket> {
        (per_sec > 0).then(|| Bucket {
            rate: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        })
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self) -> bool {
        self.tokens + self.last.elapsed().as_secs_f64() * self.rate >= self.burst
    }
}

/// Chat buckets per account, on this node: one account's connections share one.
pub struct ChatLimiter {
    template: Option<Bucket>,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

impl ChatLimiter {
    pub fn new(config: &Config) -> ChatLimiter {
        ChatLimiter {
            template: Bucket::new(config.chat_messages_per_sec, config.chat_burst),
            buckets: Mutex::default(),
        }
    }

    /// Whether account `user_id` may send one more chat message now.
    pub fn allow(&self, user_id: i64) -> bool {
        let Some(template) = &self.template else {
            return true;
        };
        self.buckets.lock().unwrap().entry(user_id).or_insert_with(|| template.clone()).take()
    }

    /// Forgets accounts whose bucket has refilled: they are as new.
    pub fn forget_idle(&self) {
        self.buckets.lock().unwrap().retain(|_, bucket| !bucket.is_full());
    }
}

/// The connections each client address (by [`address_key`]) holds on this node, up
/// to a limit (`MAX_CONNECTIONS_PER_ADDRESS`; 0: none).
pub struct AddressSlots {
    limit: u64,
    held: Mutex<HashMap<String, u64>>,
}

/// One connection's place in [`AddressSlots`], given back when dropped.
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: String,
}

impl AddressSlots {
    pub fn new(limit: u64) -> Arc<AddressSlots> {
        Arc::new(AddressSlots { limit, held: Mutex::new(HashMap::new()) })
    }

    /// A place for one more connection from `ip`; `None` when it holds the limit.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut held = self.held.lock().unwrap();
        let count = held.entry(key.clone()).or_insert(0);
        if self.limit != 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { slots: self.clone(), key })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap();
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_by_ipv4_or_ipv6_slash_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = Bucket::new(5, 10).unwrap();
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 10);
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 2);
        assert!(Bucket::new(0, 10).is_none());
    }

    #[test]
    fn guesses_count_by_ipv4_slash_24_or_ipv6_slash_48() {
        let key = |s: &str| network_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.0/24");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.0/24");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:2::1"), key("2001:db8:1::1"));
    }

    #[test]
    fn backoff_doubles_after_the_free_guesses() {
        let p = LoginPolicy {
            free: 5,
            base_ms: 1000,
            max_ms: 900_000,
            forget_ms: 0,
            per_subject: 300,
            window_ms: 0,
            known_ms: 0,
        };
        let waits: Vec<u64> = (1..=8).map(|n| p.wait_after(n)).collect();
        assert_eq!(waits, [0, 0, 0, 0, 1000, 2000, 4000, 8000]);
        assert_eq!(p.wait_after(60), 900_000);
    }
}
