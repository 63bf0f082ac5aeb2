//! The contract of what moderation added to the store roles, run against the
//! in-memory twins and the real stores, as `contract.rs` does for the rest:
//! `ModerationStore` (and the standing that `UserStore`'s lookups join), presence's
//! node facts, the login throttle's failure count, and the queue overview.

use crate::common::stores::PrivateRedisCluster;
use crate::common::*;
use crate::contract::{case, policy};
use openchampps::auth::Token;
use openchampps::store::memory::{MemoryShared, MemoryUsers};
use openchampps::store::postgres::PgStore;
use openchampps::store::redis::RedisStore;
use openchampps::store::*;

async fn users_contract<U: UserStore + ModerationStore>(label: &str, s: &U) {
    case(label, "accounts: lookup and search", accounts(s)).await;
    case(label, "bans: login and token lookups see them", bans(s)).await;
    case(label, "mutes: imposed, replaced, lifted, expired", mutes(s)).await;
    case(label, "kicks wait for one session", kicks(s)).await;
}

async fn shared_contract<S: TokenCache + Presence + Limits + MatchQueue>(label: &str, s: &S) {
    case(label, "token cache: a standing kept, a kick not", cached_standing(s)).await;
    case(label, "presence: node facts", node_facts(s)).await;
    case(label, "login throttle: failures shown", failures(s)).await;
    case(label, "queue: overview", overview(s)).await;
}

#[tokio::test]
async fn the_memory_twins_keep_the_moderation_contract() {
    users_contract("memory", &MemoryUsers::default()).await;
    shared_contract("memory", &MemoryShared::default()).await;
}

#[tokio::test]
async fn postgres_and_redis_keep_the_moderation_contract() {
    let cluster = Cluster::new().await;
    let pg = PgStore::connect(&cluster.db_url, &cluster.db_url, 4).unwrap();
    pg.migrate().await.unwrap();
    users_contract("postgres", &pg).await;
    let redis = RedisStore::connect(&cluster.redis_url, &cluster.prefix, 4).unwrap();
    shared_contract("redis", &redis).await;
}

#[tokio::test]
async fn redis_cluster_keeps_the_moderation_contract() {
    let redis = PrivateRedisCluster::start(3, 0);
    let store = RedisStore::connect(&redis.url(), "contract-moderation:", 4).unwrap();
    shared_contract("redis cluster", &store).await;
}

async fn account_named(s: &impl UserStore, stem: &str) -> (i64, String) {
    let name = unique_name(stem);
    let id = s.create_user(&name, "hash", Some(&format!("{name}@example.com"))).await.unwrap().unwrap();
    (id, name)
}

fn sanction(reason: &str, until: Option<i64>) -> Sanction {
    Sanction { reason: reason.into(), until, by: "alice".into(), at: unix_now() }
}

async fn accounts<U: UserStore + ModerationStore>(s: &U) {
    let (id, name) = account_named(s, "Look").await;
    let found = s.account(&name.to_uppercase()).await.unwrap().expect("found whatever the case");
    assert_eq!((found.id, found.username.as_str()), (id, name.as_str()));
    assert_eq!(found.email.as_deref(), Some(format!("{name}@example.com").as_str()));
    assert!((found.created_at - unix_now()).abs() < 60, "created now: {}", found.created_at);
    assert_eq!(s.account("no-such-account-here").await.unwrap(), None);
    let by_prefix = s.search_accounts(&name[..name.len() - 2].to_lowercase(), 10).await.unwrap();
    assert!(by_prefix.iter().any(|a| a.id == id), "{by_prefix:?}");
    let by_email = s.search_accounts(&format!("{name}@EX"), 10).await.unwrap();
    assert_eq!(by_email.iter().map(|a| a.id).collect::<Vec<_>>(), vec![id]);
    // The prefix's own wildcards are literal.
    assert!(s.search_accounts("%", 10).await.unwrap().is_empty());
    assert!(s.search_accounts("look", 1).await.unwrap().len() <= 1);
}

async fn bans<U: UserStore + ModerationStore>(s: &U) {
    let (id, name) = account_named(s, "Ban").await;
    let token = Token::generate().hash();
    s.insert_token(id, &token, None, unix_now() + 3600, 10).await.unwrap();
    assert!(s.standing(id).await.unwrap().is_clear());
    let (_, user) = s.find_login(&name).await.unwrap();
    assert!(user.unwrap().standing.is_clear());

    let ban = sanction("spam", Some(unix_now() + 3600));
    s.impose(id, SanctionKind::Ban, &ban).await.unwrap();
    let revoked = s.revoke_user_tokens(&name).await.unwrap();
    assert_eq!(revoked, vec![token]);
    let (_, user) = s.find_login(&name).await.unwrap();
    assert_eq!(user.unwrap().standing.ban.as_deref(), Some(&ban));
    // A token the ban revoked is still found while the ban holds: its holder is told.
    let record = s.find_token(&token).await.unwrap().expect("banned token found");
    assert_eq!(record.standing.ban.as_deref(), Some(&ban));
    let live = s.live_tokens(&[token]).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(s.account_tokens(id).await.unwrap(), vec![token]);

    assert_eq!(s.lift(id, SanctionKind::Mute, "bob", "none").await.unwrap(), None);
    assert_eq!(s.lift(id, SanctionKind::Ban, "bob", "appeal").await.unwrap(), Some(ban));
    assert_eq!(s.lift(id, SanctionKind::Ban, "bob", "again").await.unwrap(), None);
    // Lifted: the revoked token stays revoked.
    assert_eq!(s.find_token(&token).await.unwrap(), None);
    assert!(s.live_tokens(&[token]).await.unwrap().is_empty());
    assert!(s.standing(id).await.unwrap().is_clear());

    // A permanent ban.
    s.impose(id, SanctionKind::Ban, &sanction("cheating", None)).await.unwrap();
    let standing = s.standing(id).await.unwrap();
    assert_eq!(standing.ban(unix_now()).map(|b| b.until), Some(None));
}

async fn mutes<U: UserStore + ModerationStore>(s: &U) {
    let (id, name) = account_named(s, "Mute").await;
    let token = Token::generate().hash();
    s.insert_token(id, &token, None, unix_now() + 3600, 10).await.unwrap();
    let first = sanction("caps", Some(unix_now() + 600));
    s.impose(id, SanctionKind::Mute, &first).await.unwrap();
    let second = sanction("slurs", Some(unix_now() + 7200));
    s.impose(id, SanctionKind::Mute, &second).await.unwrap();
    // The newer one replaced the one before.
    assert_eq!(s.standing(id).await.unwrap().mute.as_deref(), Some(&second));
    assert_eq!(s.find_token(&token).await.unwrap().unwrap().standing.mute.as_deref(), Some(&second));
    let (_, user) = s.find_login(&name).await.unwrap();
    assert_eq!(user.unwrap().standing.mute.as_deref(), Some(&second));
    assert_eq!(s.lift(id, SanctionKind::Mute, "bob", "ok").await.unwrap(), Some(second));
    assert!(s.standing(id).await.unwrap().mute.is_none());
    // One that ran out holds no more, without anyone lifting it.
    s.impose(id, SanctionKind::Mute, &sanction("short", Some(unix_now() - 1))).await.unwrap();
    assert!(s.standing(id).await.unwrap().mute.is_none());
    assert_eq!(s.lift(id, SanctionKind::Mute, "bob", "gone").await.unwrap(), None);
}

async fn kicks<U: UserStore + ModerationStore>(s: &U) {
    let (id, _) = account_named(s, "Kick").await;
    assert_eq!(s.take_kick(id).await.unwrap(), None);
    s.pend_kick(id, "afk farming", "alice").await.unwrap();
    assert_eq!(s.standing(id).await.unwrap().kick.as_deref(), Some("afk farming"));
    s.pend_kick(id, "second", "alice").await.unwrap();
    // One kick for the next session: the first reason; then none.
    assert_eq!(s.take_kick(id).await.unwrap().as_deref(), Some("afk farming"));
    assert_eq!(s.take_kick(id).await.unwrap(), None);
    assert!(s.standing(id).await.unwrap().is_clear());
}

async fn cached_standing(s: &impl TokenCache) {
    let token = Token::generate().hash();
    let mute = sanction("caps lock", Some(unix_now() + 60));
    let standing = Standing { ban: None, mute: Some(Box::new(mute.clone())), kick: Some("never cached".into()) };
    let record = TokenRecord { user_id: 9, username: "Jane Doe".into(), expires_at: unix_now() + 3600, standing };
    s.cache(&token, &record, 60, None).await.unwrap();
    let CacheLookup::Hit { token: cached, .. } = s.lookup(&token).await.unwrap() else {
        panic!("cached");
    };
    // A waiting kick is PostgreSQL's to hand out once: the cache never holds it.
    assert_eq!(
        cached,
        TokenRecord { standing: Standing { kick: None, mute: Some(Box::new(mute)), ban: None }, ..record }
    );
}

async fn node_facts(s: &impl Presence) {
    let id = unique_name("node");
    let facts = |heartbeat| NodeInfo {
        id: id.clone(),
        version: "1.2.3".into(),
        started: unix_now() - 10,
        players: 7,
        status: "ready".into(),
        redis: "up".into(),
        postgres: "down".into(),
        heartbeat,
    };
    s.announce(&facts(unix_now())).await.unwrap();
    let nodes = s.nodes().await.unwrap();
    let found = nodes.iter().find(|n| n.id == id).expect("a fresh node is listed");
    assert_eq!(found, &facts(found.heartbeat));
    // A node that stopped beating is not listed.
    s.announce(&facts(unix_now() - NODE_INFO_FRESH_SECS - 5)).await.unwrap();
    assert!(s.nodes().await.unwrap().iter().all(|n| n.id != id));
    s.announce(&facts(unix_now())).await.unwrap();
    s.remove(&id).await.unwrap();
    assert!(s.nodes().await.unwrap().iter().all(|n| n.id != id));
}

async fn failures(s: &impl Limits) {
    let subject = format!("a{}", rand_id());
    assert_eq!(s.failed_logins(&subject).await.unwrap(), 0);
    let policy = policy(10, 100);
    let key = LoginKey { subject: subject.clone(), network: "203.0.113.0".into(), address: "203.0.113.9".into() };
    for _ in 0..3 {
        let Admit::Check(pair) = s.login_admit(&key, &policy).await.unwrap() else {
            panic!("a free guess is checked");
        };
        s.login_resolved(&key, pair, Resolved::Wrong, &policy).await.unwrap();
    }
    assert_eq!(s.failed_logins(&subject).await.unwrap(), 3);
}

fn rand_id() -> u64 {
    rand::random::<u32>() as u64 + 1_000_000
}

async fn overview(s: &impl MatchQueue) {
    let (q, other) = (unique_name("q"), unique_name("q"));
    let servers = [unique_name("srv"), unique_name("srv")];
    let ticket = |account: &str, queue: &str| Ticket {
        account: account.into(),
        username: account.into(),
        queue: queue.into(),
        node: "n1".into(),
        conn: 1,
        seq: 0,
        joined_ms: 1_000,
        tries: 0,
        left: false,
        grace_secs: 0,
        away_until_ms: None,
    };
    let empty = s.overview(std::slice::from_ref(&q), &servers).await.unwrap();
    assert_eq!(
        empty,
        vec![QueueOverview { queue: q.clone(), waiting: 0, oldest_joined_ms: None, forming: 0, leased: 0 }]
    );
    let (a, b, c) = (unique_name("a"), unique_name("b"), unique_name("c"));
    s.join(&ticket(&a, &q), 0).await.unwrap();
    s.join(&Ticket { joined_ms: 2_000, ..ticket(&b, &q) }, 0).await.unwrap();
    s.join(&ticket(&c, &other), 0).await.unwrap();
    assert!(s.lease(&servers[0], "m1", 60).await.unwrap());
    let seen = s.overview(&[q.clone(), other.clone()], &servers).await.unwrap();
    assert_eq!(
        seen[0],
        QueueOverview { queue: q.clone(), waiting: 2, oldest_joined_ms: Some(1_000), forming: 0, leased: 1 }
    );
    assert_eq!(seen[1].waiting, 1);
    // Two taken into a forming match: waiting for a game server.
    let taken = s.take(&q, 2, &unique_name("m"), "n1", 30, &[]).await.unwrap();
    assert_eq!(taken.tickets.len(), 2);
    let seen = s.overview(&[q.clone(), other.clone()], &servers).await.unwrap();
    assert_eq!((seen[0].waiting, seen[0].oldest_joined_ms, seen[0].forming), (0, None, 1));
    assert_eq!(seen[1].forming, 0);
}
