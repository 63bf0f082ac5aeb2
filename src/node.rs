//! Everything a handler may touch, shared by all connections of this node.

use std::sync::Arc;

use crate::auth::HashPool;
use crate::cluster::Cluster;
use crate::config::{Config, Settings};
use crate::last_used::LastUsed;
use crate::matchmaking::{Asks, Matchmaker, Releases};
use crate::ratelimit::LoginThrottle;
use crate::registry::{Registry, RouteChanges};
use crate::store::Stores;

pub use crate::cluster::Status;

pub struct Node {
    pub config: Config,
    pub node_id: String,
    pub stores: Stores,
    pub hasher: HashPool,
    pub logins: LoginThrottle,
    /// This node's live sessions.
    pub registry: Arc<Registry>,
    /// Presence, the directory, the chat bus and routing to other nodes.
    pub cluster: Arc<Cluster>,
    pub matchmaker: Arc<Matchmaker>,
    pub last_used: LastUsed,
}

/// What the node's background tasks consume, handed over once at start-up.
pub struct Feeds {
    /// The routes this node's sessions take and leave (for `Cluster::run_directory`).
    pub route_changes: RouteChanges,
    /// The tickets of ended connections (for `Matchmaker::run`).
    pub releases: Releases,
    /// New sessions asking for their match (for `Matchmaker::run_resends`).
    pub asks: Asks,
}

impl Node {
    /// The node `settings` describe (checked and derived by `Config::validate`).
    pub fn new(settings: Settings, node_id: String, stores: Stores) -> (Node, Feeds) {
        let Settings { config, argon2, allocator } = settings;
        let (per_address, per_network) =
            (config.hash_places_per_address as usize, config.hash_places_per_network as usize);
        let hasher =
            HashPool::new(argon2, config.hash_workers, config.hash_queue, per_address, per_network, config.hash_nice);
        let logins = LoginThrottle::new(stores.limits.clone(), &config);
        let (registry, route_changes) = Registry::new();
        let registry = Arc::new(registry);
        let cluster = Arc::new(Cluster::new(node_id.clone(), &stores, registry.clone(), &config));
        let (matchmaker, releases, asks) = Matchmaker::new(&config, &allocator, stores.queue.clone(), cluster.clone());
        let node = Node {
            config,
            node_id,
            stores,
            hasher,
            logins,
            registry,
            cluster,
            matchmaker: Arc::new(matchmaker),
            last_used: LastUsed::default(),
        };
        (node, Feeds { route_changes, releases, asks })
    }

    pub fn status(&self) -> Status {
        self.cluster.status()
    }

    pub fn set_status(&self, status: Status) {
        self.cluster.set_status(status);
    }

    /// How long a positive token-cache entry may live: never past the token itself.
    pub fn cache_ttl(&self, expires_at: i64) -> u64 {
        crate::store::seconds_until(expires_at).min(self.config.token_cache_ttl_secs)
    }
}
