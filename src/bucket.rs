//! Token buckets in this process's memory: one, and one per account.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

/// Token buckets per account, in this process's memory.
#[derive(Default)]
pub struct AccountBuckets {
    buckets: Mutex<HashMap<i64, Bucket>>,
}

impl AccountBuckets {
    /// Takes one token from account `user_id`'s bucket (`per_sec`, `burst`: see
    /// [`Bucket::new`]), if it has one.
    pub fn take(&self, user_id: i64, per_sec: u32, burst: u32) -> bool {
        let Some(fresh) = Bucket::new(per_sec, burst) else {
            return true;
        };
        self.buckets.lock().unwrap().entry(user_id).or_insert(fresh).take()
    }

    /// Forgets accounts whose bucket has refilled: they are as new.
    pub fn forget_idle(&self) {
        self.buckets.lock().unwrap().retain(|_, bucket| !bucket.is_full());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = Bucket::new(5, 10).unwrap();
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 10);
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 2);
        assert!(Bucket::new(0, 10).is_none());
    }

    #[test]
    fn each_account_has_its_own_bucket() {
        let buckets = AccountBuckets::default();
        assert_eq!((0..20).filter(|_| buckets.take(1, 5, 10)).count(), 10);
        assert!(buckets.take(2, 5, 10));
        assert!((0..20).all(|_| buckets.take(3, 0, 10)), "0 a second: no limit");
    }
}
