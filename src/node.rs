//! Everything a handler may touch, shared by all connections of this node.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::auth::HashPool;
use crate::cluster::ClusterView;
use crate::config::Config;
use crate::last_used::LastUsed;
use crate::matchmaking::Matchmaker;
use crate::ratelimit::{ChatLimiter, LoginThrottle};
use crate::registry::Registry;
use crate::store::Stores;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

pub struct Node {
    pub config: Config,
    pub node_id: String,
    pub stores: Stores,
    pub hasher: HashPool,
    pub logins: LoginThrottle,
    pub chat: ChatLimiter,
    pub registry: Registry,
    pub matchmaker: Matchmaker,
    /// The other live nodes, as of the last heartbeat.
    pub view: ClusterView,
    pub last_used: LastUsed,
    status: AtomicU8,
}

impl Node {
    pub fn new(config: Config, node_id: String, stores: Stores) -> Node {
        let params = config.argon2_params().expect("validated at start-up");
        let hasher =
            HashPool::new(params, config.hash_workers, config.hash_queue, config.hash_places_per_address as usize);
        let logins = LoginThrottle::new(stores.limits.clone(), &config);
        let chat = ChatLimiter::new(&config);
        let matchmaker = Matchmaker::new(&config, stores.queue.clone());
        Node {
            config,
            node_id,
            stores,
            hasher,
            logins,
            chat,
            registry: Registry::default(),
            matchmaker,
            view: ClusterView::default(),
            last_used: LastUsed::default(),
            status: AtomicU8::new(Status::Starting as u8),
        }
    }

    pub fn status(&self) -> Status {
        match self.status.load(Ordering::Relaxed) {
            1 => Status::Ready,
            2 => Status::Draining,
            _ => Status::Starting,
        }
    }

    pub fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    /// How long a positive token-cache entry may live: never past the token itself.
    pub fn cache_ttl(&self, expires_at: i64) -> u64 {
        crate::store::seconds_until(expires_at).min(self.config.token_cache_ttl_secs)
    }
}
