//! `ALLOCATOR=static`: the `GAME_SERVERS` pool, each server leased in the shared store
//! to one match at a time: for its joinable window (`MATCH_TICKET_TTL_SECS`), for
//! `GAME_SERVER_LEASE_SECS` once its game server confirms it, until it ends. The game
//! server learns its match from `GET /servers/<host:port>/match` (`http.rs`).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Allocate, Failure, Request, Server};
use crate::config::{Allocator, GameServers};
use crate::store::MatchQueue;

pub struct StaticPool {
    servers: Vec<(String, u16)>,
    lease_secs: u64,
    queue: Arc<dyn MatchQueue>,
}

impl StaticPool {
    pub fn new(servers: &[(String, u16)], lease_secs: u64, queue: Arc<dyn MatchQueue>) -> StaticPool {
        StaticPool { servers: servers.to_vec(), lease_secs, queue }
    }
}

#[async_trait]
impl Allocate for StaticPool {
    fn kind(&self) -> Allocator {
        Allocator::Static
    }

    /// A server of the pool nobody else holds, leased to the match.
    async fn allocate(&self, request: &Request<'_>) -> Result<Server, Failure> {
        // Start at a random server, so nodes do not all race for the first.
        let start = if self.servers.is_empty() { 0 } else { rand::random::<u32>() as usize % self.servers.len() };
        for (host, port) in self.servers.iter().cycle().skip(start).take(self.servers.len()) {
            let server_id = GameServers::id(host, *port);
            match self.queue.lease(&server_id, request.match_id, self.lease_secs).await {
                Ok(true) => return Ok(Server { host: host.clone(), port: *port, server_id }),
                Ok(false) => continue,
                Err(e) => return Err(Failure::Failed(format!("cannot lease a game server: {e}"))),
            }
        }
        Err(Failure::Exhausted("every server of the pool is leased".into()))
    }
}
