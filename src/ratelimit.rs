//! Rate limits, so one player cannot lock others out or flood them:
//! - login guesses, throttled per (typed name, client network) with backoff, whether
//!   or not the name is an account's, and capped per account cluster-wide except for
//!   networks the account logged in from before; decided before the password is
//!   checked, with the guesses still in flight counted until they resolve;
//! - registrations per client address, cluster-wide;
//! - connections per client address on this node, so one address cannot take all of
//!   a node's connections (and descriptors) from everyone else;
//! - a token bucket in this node's memory for a connection's messages;
//! - a token bucket per account for its chat, cluster-wide (in Redis, taken from in
//!   the same call that publishes), in this node's memory while Redis is down.
//!
//! A valid token is never limited, and a correct password is never refused because
//! of other accounts' failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::address::{address_block, address_key, network_key};
use crate::bucket::AccountBuckets;
use crate::config::Config;
use crate::store::{Admit, ChatRate, Limits, LoginKey, LoginPolicy, Pair, Resolved, StoreResult};

/// Whom a password guess is at.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An account, whatever spelling of its name was typed.
    Account(i64),
    /// A typed name no account has, folded as the account lookup folds names
    /// (`UserStore::find_login`): throttled alike, every spelling that would find one
    /// account being one name, so replies say nothing about which names exist.
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
    key: LoginKey,
    pair: Pair,
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
            Subject::Account(id) => account_subject(id),
            Subject::Name(name) => format!("n{:.32x}", Sha256::digest(name.as_bytes())),
        };
        let key = LoginKey { subject, network: network_key(ip), address: address_key(ip) };
        let give_up = Instant::now() + WAIT_LIMIT;
        loop {
            match self.limits.login_admit(&key, &self.policy).await {
                Ok(Admit::Check(pair)) => return Some(Guess { key, pair }),
                // Without any store to count in, a guess is not refused.
                Err(_) => return Some(Guess { key, pair: Pair::Network }),
                Ok(Admit::Refuse) => return None,
                Ok(Admit::Wait) if Instant::now() >= give_up => return None,
                Ok(Admit::Wait) => tokio::time::sleep(WAIT_STEP).await,
            }
        }
    }

    /// Settles an admitted guess.
    pub async fn resolved(&self, guess: Guess, how: Resolved) {
        let _ = self.limits.login_resolved(&guess.key, guess.pair, how, &self.policy).await;
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

/// The chat rate of each account, one bucket for the whole cluster (kept in Redis,
/// see `store::ChatBuckets`), and this node's own buckets for while Redis is down.
pub struct ChatLimiter {
    rate: Option<ChatRate>,
    local: AccountBuckets,
}

impl ChatLimiter {
    pub fn new(config: &Config) -> ChatLimiter {
        let rate = ChatRate { per_sec: config.chat_messages_per_sec, burst: config.chat_burst };
        ChatLimiter { rate: (rate.per_sec > 0).then_some(rate), local: AccountBuckets::default() }
    }

    /// `None`: chat is not limited.
    pub fn rate(&self) -> Option<ChatRate> {
        self.rate
    }

    /// Whether account `user_id` may send one more chat message, given what its shared
    /// bucket answered: that answer, or, when the shared store could not answer, this
    /// node's own bucket.
    pub fn settle(&self, user_id: i64, shared: &StoreResult<bool>) -> bool {
        match (shared, self.rate) {
            (_, None) => true,
            (Ok(allowed), _) => *allowed,
            (Err(_), Some(rate)) => self.local.take(user_id, rate.per_sec, rate.burst),
        }
    }

    /// Forgets this node's buckets that have refilled.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }
}

/// The connections each client address (by [`address_key`]) holds on this node, up
/// to a limit (`MAX_CONNECTIONS_PER_ADDRESS`; 0: none).
pub struct AddressSlots {
    limit: u64,
    held: Mutex<HashMap<IpAddr, u64>>,
}

/// One connection's place in [`AddressSlots`], given back when dropped.
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: IpAddr,
}

impl AddressSlots {
    pub fn new(limit: u64) -> Arc<AddressSlots> {
        Arc::new(AddressSlots { limit, held: Mutex::new(HashMap::new()) })
    }

    /// A place for one more connection from `ip`; `None` when it holds the limit.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // Counted by the address's block as an address: no text per connection.
        let key = address_block(ip);
        let mut held = self.held.lock().unwrap();
        let count = held.entry(key).or_insert(0);
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

/// The throttle's subject for account `id` (a `LoginKey`'s `subject`).
pub fn account_subject(id: i64) -> String {
    format!("a{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis down: the node's own bucket still holds the account to its rate.
    #[test]
    fn chat_falls_back_to_the_nodes_own_bucket_while_redis_is_down() {
        let config = Config::from_flags(&["--chat-messages-per-sec", "5", "--chat-burst", "10"]).unwrap();
        let chat = ChatLimiter::new(&config);
        let down = || Err(crate::error::StoreError::RedisUnreachable);
        assert_eq!((0..30).filter(|_| chat.settle(7, &down())).count(), 10);
        // Another account has its own bucket; the shared answer wins when there is one.
        assert!(chat.settle(8, &down()));
        assert!(chat.settle(7, &Ok(true)));
        assert!(!chat.settle(8, &Ok(false)));
        let unlimited = ChatLimiter::new(&Config::from_flags(&["--chat-messages-per-sec", "0"]).unwrap());
        assert!((0..100).all(|_| unlimited.settle(7, &down())));
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
