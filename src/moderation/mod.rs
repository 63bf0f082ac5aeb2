//! Actions on players (ban, mute, kick, name reset, token revocation) and the views
//! of what the cluster holds for one player, node or queue. Knows nothing of
//! operators, HTTP or the audit log (`crate::admin` does); the role policy of
//! MODERATION.md is decided here, because lifting "its own actions" needs to know who
//! acted. See `docs/ADMIN_API.md`.

mod act;
mod views;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Allocator, GameServers};
use crate::error::{store_skipped, StoreError};
pub use crate::protocol::rfc3339;
pub use crate::store::admin::Role;
use crate::store::{unix_now, unix_now_ms, AccountRecord, BusEvent, Joinable, Route, Sanction, SessionInfo, Stores};
pub use views::*;

/// Who acts: an operator of the console or API, or `cli:<os user>` (as admin).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    pub address: Option<IpAddr>,
}

/// What an operator does to a player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `None`: permanent.
    Ban {
        secs: Option<u64>,
    },
    Unban,
    Mute {
        secs: u64,
    },
    Unmute,
    Kick,
    ResetName,
    RevokeTokens,
}

impl Action {
    /// The action's name in the API and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ban { .. } => "ban",
            Action::Unban => "unban",
            Action::Mute { .. } => "mute",
            Action::Unmute => "unmute",
            Action::Kick => "kick",
            Action::ResetName => "reset-name",
            Action::RevokeTokens => "revoke-tokens",
        }
    }
}

/// What an action did: `{"player","action","until","sessions"}` in the API.
#[derive(Debug, Clone, Serialize)]
pub struct Acted {
    pub player: String,
    pub action: &'static str,
    /// RFC 3339 UTC; the end of a ban or mute, `None` for a permanent ban or others.
    pub until: Option<String>,
    /// Live sessions the action reached.
    pub sessions: u64,
}

/// Why an action or view failed; each maps to one HTTP status (`status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModerationError {
    #[error("{0}")]
    BadInput(String),
    #[error("No such player")]
    NoSuchPlayer,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Unavailable(String),
}

impl ModerationError {
    pub fn status(&self) -> u16 {
        match self {
            ModerationError::BadInput(_) => 400,
            ModerationError::Forbidden(_) => 403,
            ModerationError::NoSuchPlayer => 404,
            ModerationError::Conflict(_) => 409,
            ModerationError::Unavailable(_) => 503,
        }
    }
}

pub const NOT_ALLOWED: &str = "Your role does not allow this";
pub const MODERATOR_BAN_LIMIT: &str = "Moderators may ban for at most 30 days";
pub const MODERATOR_LIFTS_OWN: &str = "Moderators may lift only their own actions";
pub const REASON_REQUIRED: &str = "A reason is required (at most 500 characters)";
pub const NO_ACTIVE_BAN: &str = "No active ban";
pub const NO_ACTIVE_MUTE: &str = "No active mute";
/// The longest ban a moderator may set.
pub const MODERATOR_MAX_BAN_SECS: u64 = 30 * 86_400;
/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// How long a view waits for the nodes it asked about their sessions.
const DESCRIBE_WAIT: Duration = Duration::from_millis(800);

/// Acts on players and reads what the cluster holds, from any process that has the
/// stores: a node (for its admin API) or the command line.
pub struct Moderation {
    stores: Stores,
    /// This process's name on the bus: answers to its questions come to a channel
    /// named after it.
    node_id: String,
    /// Queues as configured, with their match sizes.
    queues: Vec<(String, usize)>,
    /// Game servers of the static pool (empty: none, or allocated by Agones).
    servers: Vec<String>,
    /// How long a session's display name is kept (TOKEN_TTL_SECS).
    session_ttl_secs: u64,
}

impl Moderation {
    pub fn new(stores: Stores, node_id: String, config: &crate::config::Config) -> Moderation {
        Moderation {
            stores,
            node_id,
            queues: config.match_queues.0.clone(),
            servers: match config.allocator {
                Allocator::Static => {
                    config.game_servers.0.iter().map(|(host, port)| GameServers::id(host, *port)).collect()
                }
                _ => Vec::new(),
            },
            session_ttl_secs: config.token_ttl_secs,
        }
    }

    /// The player 360 (without audit entries).
    pub async fn player(&self, username: &str) -> Result<PlayerView, ModerationError> {
        let account = self.account(username).await?;
        let names = [account.username.clone()];
        let subject = crate::ratelimit::account_subject(account.id);
        let (standing, mut sessions, matchmaking, failed) = tokio::join!(
            self.stores.moderation.standing(account.id),
            self.sessions(&names),
            self.matchmaking(&account.username),
            self.stores.limits.failed_logins(&subject),
        );
        let standing = standing.map_err(unavailable)?;
        let now = unix_now();
        Ok(PlayerView {
            sessions: sessions.remove(&account.username).unwrap_or_default(),
            matchmaking,
            ban: standing.ban(now).map(sanction_view),
            mute: standing.mute(now).map(sanction_view),
            failed_logins: failed.unwrap_or_else(|e| {
                store_skipped(e, "failed logins shown as 0");
                0
            }),
            account: account_view(&account),
        })
    }

    /// Accounts whose username or email starts with `prefix`, at most `limit`.
    pub async fn players(&self, prefix: &str, limit: u32) -> Result<Vec<PlayerSummary>, ModerationError> {
        let found = self.stores.moderation.search_accounts(prefix, limit).await.map_err(unavailable)?;
        let names: Vec<String> = found.iter().map(|a| a.username.clone()).collect();
        let mut online = self.sessions(&names).await;
        Ok(found
            .into_iter()
            .map(|a| PlayerSummary {
                online: online.remove(&a.username).map_or(0, |s| s.len() as u64),
                id: a.id,
                username: a.username,
                email: a.email,
            })
            .collect())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ModerationError> {
        let nodes = self.stores.presence.nodes().await.map_err(unavailable)?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeView {
                id: n.id,
                version: n.version,
                started: rfc3339(n.started),
                players: n.players,
                status: n.status,
                redis: n.redis,
                postgres: n.postgres,
                last_heartbeat: rfc3339(n.heartbeat),
            })
            .collect())
    }

    pub async fn queues(&self) -> Result<Vec<QueueView>, ModerationError> {
        let names: Vec<String> = self.queues.iter().map(|(name, _)| name.clone()).collect();
        let overview = self.stores.queue.overview(&names, &self.servers).await.map_err(unavailable)?;
        let now_ms = unix_now_ms();
        let pool = self.servers.len() as u64;
        Ok(overview
            .into_iter()
            .map(|q| QueueView {
                queue: q.queue,
                waiting: q.waiting,
                oldest_wait_secs: q.oldest_joined_ms.map(|joined| now_ms.saturating_sub(joined) / 1000),
                pending_allocation: q.forming,
                servers_leased: (pool > 0).then_some(q.leased),
                servers_free: (pool > 0).then(|| pool.saturating_sub(q.leased)),
            })
            .collect())
    }

    async fn account(&self, username: &str) -> Result<AccountRecord, ModerationError> {
        let found = self.stores.moderation.account(username).await.map_err(unavailable)?;
        found.ok_or(ModerationError::NoSuchPlayer)
    }

    /// The live sessions of each account (names as stored), asked of the nodes the
    /// directory says hold them; a node that does not answer in time is left out.
    async fn sessions(&self, accounts: &[String]) -> HashMap<String, Vec<SessionView>> {
        let mut found: HashMap<String, Vec<SessionView>> = HashMap::new();
        let mut asked: HashMap<u64, (String, Vec<String>)> = HashMap::new();
        // Every account's nodes at once: a search lists up to 100.
        let routes: Vec<Route> = accounts.iter().map(|account| Route::Account(account.clone())).collect();
        let found_nodes =
            futures_util::future::join_all(routes.iter().map(|route| self.stores.directory.nodes(route))).await;
        for (request, (account, nodes)) in accounts.iter().zip(found_nodes).enumerate() {
            match nodes {
                Ok(nodes) if !nodes.is_empty() => {
                    asked.insert(request as u64, (account.clone(), nodes));
                }
                Ok(_) => {}
                Err(e) => store_skipped(e, "sessions not listed"),
            }
        }
        if asked.is_empty() {
            return found;
        }
        let reply_to = format!("{}.moderation.{}", self.node_id, uuid::Uuid::new_v4().simple());
        let mut answers = match self.stores.bus.subscribe(&reply_to).await {
            Ok(answers) => answers,
            Err(e) => {
                store_skipped(e, "sessions not listed");
                return found;
            }
        };
        for (request, (account, nodes)) in &asked {
            let question =
                BusEvent::Describe { account: account.clone(), reply_to: reply_to.clone(), request: *request };
            for node in nodes {
                if let Err(e) = self.stores.bus.publish_to(node, &question).await {
                    store_skipped(e, "a node not asked about its sessions");
                }
            }
        }
        let mut waiting: usize = asked.values().map(|(_, nodes)| nodes.len()).sum();
        let deadline = tokio::time::Instant::now() + DESCRIBE_WAIT;
        while waiting > 0 {
            let Ok(Some(event)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            let BusEvent::Described { request, node, sessions } = event else {
                continue;
            };
            let Some((account, _)) = asked.get(&request) else {
                continue;
            };
            waiting -= 1;
            let views = sessions.into_iter().map(|s| session_view(&node, s));
            found.entry(account.clone()).or_default().extend(views);
        }
        found
    }

    async fn matchmaking(&self, account: &str) -> Option<MatchmakingView> {
        let queue = &self.stores.queue;
        let (position, joinable) = tokio::join!(queue.position(account), queue.joinable(account));
        let pending_match = match joinable {
            Ok(Joinable::Found(frame)) => Some(match_id(&frame).unwrap_or_else(|| "unknown".into())),
            Ok(Joinable::Forming) => Some("forming".into()),
            _ => None,
        };
        let (queue, position, waiting_secs) = match position {
            Ok(Some((ticket, position))) => {
                let waited = unix_now_ms().saturating_sub(ticket.joined_ms) / 1000;
                (Some(ticket.queue), Some(position), Some(waited))
            }
            _ => (None, None, None),
        };
        let any = queue.is_some() || pending_match.is_some();
        any.then_some(MatchmakingView { queue, position, waiting_secs, pending_match })
    }
}

fn unavailable(e: StoreError) -> ModerationError {
    ModerationError::Unavailable(format!("A store is unreachable, try again ({e})"))
}

fn account_view(a: &AccountRecord) -> Account {
    Account {
        id: a.id,
        username: a.username.clone(),
        email: a.email.clone(),
        created: rfc3339(a.created_at),
        last_login: a.last_login.map(rfc3339),
    }
}

fn sanction_view(s: &Sanction) -> SanctionView {
    SanctionView { reason: s.reason.clone(), until: s.until.map(rfc3339), by: s.by.clone(), at: rfc3339(s.at) }
}

fn session_view(node: &str, s: SessionInfo) -> SessionView {
    SessionView {
        node: node.to_owned(),
        display_name: s.display_name,
        address: s.address,
        connected_since: rfc3339(s.since),
        auth: s.via,
    }
}

/// The match id of a `match_found` frame.
fn match_id(frame: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(frame).ok()?;
    value["payload"]["match_id"].as_str().map(str::to_owned)
}
