//! One contract per store role: the same cases run against the in-memory twin (which
//! the in-process tier trusts) and against the real store — Redis standalone, Redis
//! Cluster where keys or scripts differ (the login and matchmaking scripts), and
//! PostgreSQL. A change in one implementation that the other does not follow fails
//! here.

use std::future::Future;
use std::time::Duration;

use crate::common::stores::{PrivateRedis, PrivateRedisCluster};
use crate::common::*;
use futures_util::StreamExt;
use openchampps::auth::Token;
use openchampps::store::memory::{MemoryShared, MemoryUsers};
use openchampps::store::postgres::PgStore;
use openchampps::store::redis::RedisStore;
use openchampps::store::*;

/// Everything the Redis roles are, in one implementation.
trait Shared: TokenCache + Sessions + Presence + Directory + Bus + ChatBuckets + Limits + MatchQueue + Streams {}
impl<S: TokenCache + Sessions + Presence + Directory + Bus + ChatBuckets + Limits + MatchQueue + Streams> Shared for S {}

/// Runs one case, naming it when it fails (the other contract files run theirs so too).
pub(crate) async fn case<F: Future<Output = ()>>(store: &str, name: &str, run: F) {
    eprintln!("{store}: {name}");
    run.await;
}

async fn shared_contract<S: Shared>(label: &str, s: &S) {
    case(label, "token cache", token_cache(s)).await;
    case(label, "directory", directory(s)).await;
    case(label, "presence", presence(s)).await;
    case(label, "bus", bus(s)).await;
    case(label, "chat buckets", chat_buckets(s)).await;
    case(label, "resume streams", streams(s)).await;
    case(label, "resume streams: global chat in one step", global_stream(s)).await;
    case(label, "login throttle", login_throttle(s)).await;
    case(label, "login throttle: guesses in flight", login_in_flight(s)).await;
    case(label, "login throttle: a known address", login_known_address(s)).await;
    case(label, "login throttle: the cap and known networks", login_cap(s)).await;
    case(label, "counters", counters(s)).await;
    case(label, "queue: join, keep, leave", queue_join_leave(s)).await;
    case(label, "queue: first in, first out, put back", queue_fifo_put_back(s)).await;
    case(label, "queue: tries run out", queue_tries(s)).await;
    case(label, "queue: a dead node's tickets and matches", queue_gone_node(s)).await;
    case(label, "queue: start, joinable, end, leases", queue_matches(s)).await;
    case(label, "queue: matches per account", queue_match_cap(s)).await;
    case(label, "queue: a ticket through its player's absence", queue_grace(s)).await;
}

/// The roles whose keys or scripts differ on Cluster.
async fn cluster_contract<S: Shared>(label: &str, s: &S) {
    case(label, "token cache", token_cache(s)).await;
    case(label, "chat buckets", chat_buckets(s)).await;
    case(label, "resume streams", streams(s)).await;
    case(label, "resume streams: global chat in one step", global_stream(s)).await;
    case(label, "directory", directory(s)).await;
    case(label, "login throttle", login_throttle(s)).await;
    case(label, "login throttle: guesses in flight", login_in_flight(s)).await;
    case(label, "login throttle: a known address", login_known_address(s)).await;
    case(label, "login throttle: the cap and known networks", login_cap(s)).await;
    case(label, "queue: join, keep, leave", queue_join_leave(s)).await;
    case(label, "queue: first in, first out, put back", queue_fifo_put_back(s)).await;
    case(label, "queue: tries run out", queue_tries(s)).await;
    case(label, "queue: a dead node's tickets and matches", queue_gone_node(s)).await;
    case(label, "queue: start, joinable, end, leases", queue_matches(s)).await;
    case(label, "queue: matches per account", queue_match_cap(s)).await;
    case(label, "queue: a ticket through its player's absence", queue_grace(s)).await;
}

#[tokio::test]
async fn the_memory_twin_keeps_the_contract() {
    let store = MemoryShared::default();
    shared_contract("memory", &store).await;
    case("memory", "queue: two nodes, a ticket moved", queue_two_nodes(&store, &store)).await;
}

#[tokio::test]
async fn redis_keeps_the_contract() {
    let cluster = Cluster::new().await;
    let store = RedisStore::connect(&cluster.redis_url, &cluster.prefix, 4).unwrap();
    shared_contract("redis", &store).await;
    // Another node's store: what each last saw of a ticket differs.
    let other = RedisStore::connect(&cluster.redis_url, &cluster.prefix, 4).unwrap();
    case("redis", "queue: two nodes, a ticket moved", queue_two_nodes(&store, &other)).await;
}

#[tokio::test]
async fn redis_cluster_keeps_the_contract() {
    let redis = PrivateRedisCluster::start(3, 0);
    let store = RedisStore::connect(&redis.url(), "contract:", 4).unwrap();
    cluster_contract("redis cluster", &store).await;
    let other = RedisStore::connect(&redis.url(), "contract:", 4).unwrap();
    case("redis cluster", "queue: two nodes, a ticket moved", queue_two_nodes(&store, &other)).await;
}

#[tokio::test]
async fn the_memory_user_store_keeps_the_contract() {
    user_store("memory", &MemoryUsers::default()).await;
}

#[tokio::test]
async fn postgres_keeps_the_contract() {
    let cluster = Cluster::new().await;
    let store = PgStore::connect(&cluster.db_url, &cluster.db_url, 4).unwrap();
    store.migrate().await.unwrap();
    user_store("postgres", &store).await;
}

// Token cache and sessions --------------------------------------------------------------

async fn token_cache(s: &(impl TokenCache + Sessions)) {
    let token = Token::generate().hash();
    assert_eq!(s.lookup(&token).await.unwrap(), CacheLookup::Miss { display_name: None });
    s.cache_negative(&token, 30).await.unwrap();
    assert_eq!(s.lookup(&token).await.unwrap(), CacheLookup::Negative);

    let record = TokenRecord {
        user_id: 7,
        username: "Jane".into(),
        expires_at: unix_now() + 3600,
        standing: Standing::default(),
    };
    s.cache(&token, &record, 60, Some("Jane")).await.unwrap();
    let hit = |name: &str| CacheLookup::Hit { token: record.clone(), display_name: Some(name.into()) };
    assert_eq!(s.lookup(&token).await.unwrap(), hit("Jane"));
    // A negative entry never overwrites a valid one.
    s.cache_negative(&token, 30).await.unwrap();
    assert_eq!(s.lookup(&token).await.unwrap(), hit("Jane"));
    s.set_display_name(&token, "Cool \"Gamer\"", 60).await.unwrap();
    assert_eq!(s.lookup(&token).await.unwrap(), hit("Cool \"Gamer\""));
    // Caching again without a name keeps the session's.
    s.cache(&token, &record, 60, None).await.unwrap();
    assert_eq!(s.lookup(&token).await.unwrap(), hit("Cool \"Gamer\""));
    s.forget(&[token]).await.unwrap();
    assert_eq!(s.lookup(&token).await.unwrap(), CacheLookup::Miss { display_name: None });

    // A session's name outlives a cache miss (the token cache entry expired first).
    let other = Token::generate().hash();
    s.set_display_name(&other, "Kept", 60).await.unwrap();
    assert_eq!(s.lookup(&other).await.unwrap(), CacheLookup::Miss { display_name: Some("Kept".into()) });

    // Values are binary-safe (a name that looks like protocol, one larger than any
    // socket read), and many calls in flight at once each get their own answer (Redis
    // pipelines them on one connection).
    for name in ["a\r\n$3\r\nb\r\n*2\r\n", &"x".repeat(200_000)] {
        s.set_display_name(&other, name, 60).await.unwrap();
        assert_eq!(s.lookup(&other).await.unwrap(), CacheLookup::Miss { display_name: Some(name.into()) });
    }
    let many: Vec<_> = (0..300).map(|i| (Token::generate().hash(), format!("p{i}"))).collect();
    futures_util::future::join_all(many.iter().map(|(token, name)| s.set_display_name(token, name, 60)))
        .await
        .into_iter()
        .for_each(|set| set.unwrap());
    let found = futures_util::future::join_all(many.iter().map(|(token, _)| s.lookup(token))).await;
    for ((_, name), found) in many.iter().zip(found) {
        assert_eq!(found.unwrap(), CacheLookup::Miss { display_name: Some(name.as_str().into()) });
    }
}

// Directory -------------------------------------------------------------------------

async fn directory(s: &impl Directory) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (jane, nobody) = (format!("Jane{id}"), format!("nobody{id}"));
    assert_eq!(s.account_route(&jane).await.unwrap(), (NameLookup::Unknown, vec![]));
    s.remember_account(&jane, Some(&jane)).await.unwrap();
    s.remember_account(&nobody, None).await.unwrap();
    assert_eq!(s.account_route(&nobody).await.unwrap(), (NameLookup::NoAccount, vec![]));
    let account = Route::Account(jane.clone());
    s.join(&account, "node-a").await.unwrap();
    s.join(&account, "node-b").await.unwrap();
    let (lookup, mut nodes) = s.account_route(&jane).await.unwrap();
    nodes.sort();
    assert_eq!((lookup, nodes), (NameLookup::Account(jane.clone()), vec!["node-a".into(), "node-b".into()]));
    s.leave(&account, "node-a").await.unwrap();
    assert_eq!(s.nodes(&account).await.unwrap(), vec!["node-b".to_owned()]);

    // A display name is its own route: the account's nodes are not its nodes.
    let display = Route::DisplayName(jane.clone());
    assert_eq!(s.nodes(&display).await.unwrap(), Vec::<String>::new());
    s.join(&display, "node-c").await.unwrap();
    assert_eq!(s.nodes(&display).await.unwrap(), vec!["node-c".to_owned()]);
    assert_eq!(s.nodes(&account).await.unwrap(), vec!["node-b".to_owned()]);
    s.leave(&display, "node-c").await.unwrap();
    assert_eq!(s.nodes(&display).await.unwrap(), Vec::<String>::new());
}

// Presence --------------------------------------------------------------------------

async fn presence(s: &impl Presence) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (a, b) = (format!("a-{id}"), format!("b-{id}"));
    let first = s.beat(&a, 3).await.unwrap();
    assert!(first.unknown, "a node's first beat is unknown");
    assert!(!s.beat(&a, 3).await.unwrap().unknown);
    let beat = s.beat(&b, 4).await.unwrap();
    assert!(beat.others.contains(&(a.clone(), 3)), "{beat:?}");
    assert!(!beat.others.iter().any(|(n, _)| *n == b), "a node is not among the others");
    s.remove(&a).await.unwrap();
    let beat = s.beat(&b, 4).await.unwrap();
    assert!(!beat.others.iter().any(|(n, _)| *n == a), "a withdrawn node still counts: {beat:?}");
    assert!(!beat.gone.contains(&a), "a withdrawn node is not dead");
}

// Bus -------------------------------------------------------------------------------

async fn bus(s: &impl Bus) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (a, b) = (format!("a-{id}"), format!("b-{id}"));
    let mut on_a = s.subscribe(&a).await.unwrap();
    let mut on_b = s.subscribe(&b).await.unwrap();
    let at = Some(Appended { pos: StreamId { ms: 2, seq: 1 }, prev: StreamId { ms: 1, seq: 0 } });
    let global = BusEvent::Global { from: "Jane".into(), account: "jane".into(), message: "hi all".into(), at };
    let private = BusEvent::Private {
        from: "Jane".into(),
        account: "jane".into(),
        to: Route::Account("bob".into()),
        message: "hi bob".into(),
        at,
    };
    // `dequeued` for one connection only, numbered in the account's personal stream.
    let only = BusEvent::Frame {
        to: FrameTarget::ConnectionOnly(7),
        text: r#"{"type":"dequeued"}"#.into(),
        at: at.map(|at| ("jane".to_owned(), at)),
    };
    // A subscription may take a moment to be in place on the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.publish_to(&b, &private).await.unwrap();
    s.publish_to(&b, &only).await.unwrap();
    s.publish(&global).await.unwrap();
    assert_eq!(next(&mut on_b).await, Some(private));
    assert_eq!(next(&mut on_b).await, Some(only));
    assert_eq!(next(&mut on_b).await, Some(global.clone()));
    // Node a gets the global event only.
    assert_eq!(next(&mut on_a).await, Some(global));
}

async fn next(stream: &mut futures_util::stream::BoxStream<'static, BusEvent>) -> Option<BusEvent> {
    tokio::time::timeout(Duration::from_secs(5), stream.next()).await.ok().flatten()
}

// Chat buckets ----------------------------------------------------------------------

async fn chat_buckets(s: &(impl ChatBuckets + Bus)) {
    let user = rand::random::<u32>() as i64;
    let rate = ChatRate { per_sec: 1, burst: 3 };
    let taken: Vec<bool> = futures_util::future::join_all((0..4).map(|_| s.take_message(user, rate)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(taken.iter().filter(|t| **t).count(), 3, "a burst of 3: {taken:?}");
}

// Resume streams --------------------------------------------------------------------

async fn streams(s: &impl Streams) {
    let account = unique_name("stream");
    let limits = StreamLimits { window_ms: 60_000, global_cap: 1000, personal_cap: 3 };
    let me = StreamOf::Personal(&account);
    let zero = StreamId::ZERO;
    assert_eq!(s.last(me).await.unwrap(), zero);
    let empty = s.read_after(me, zero, None, 10).await.unwrap();
    assert_eq!(empty, History { entries: vec![], complete: true });

    let a1 = s.append(me, "f1", &limits).await.unwrap();
    let a2 = s.append(me, "f2", &limits).await.unwrap();
    assert_eq!(a1.prev, zero);
    assert_eq!(a2.prev, a1.pos, "each entry names the one before it");
    assert!(a2.pos > a1.pos);
    assert_eq!(s.last(me).await.unwrap(), a2.pos);
    let all = s.read_after(me, zero, None, 10).await.unwrap();
    assert_eq!(all.entries, vec![(a1.pos, "f1".to_owned()), (a2.pos, "f2".to_owned())]);
    assert!(all.complete);
    assert_eq!(s.read_after(me, a1.pos, None, 10).await.unwrap().entries, vec![(a2.pos, "f2".to_owned())]);
    let upto = s.read_after(me, zero, Some(a1.pos), 10).await.unwrap();
    assert_eq!(upto.entries, vec![(a1.pos, "f1".to_owned())], "up to an id, included");
    assert_eq!(s.read_after(me, zero, None, 1).await.unwrap().entries.len(), 1, "at most the limit");

    // Past the cap the oldest go; a position before them is no longer complete.
    let a3 = s.append(me, "f3", &limits).await.unwrap();
    let a4 = s.append(me, "f4", &limits).await.unwrap();
    let kept = s.read_after(me, zero, None, 10).await.unwrap();
    assert_eq!(kept.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![a2.pos, a3.pos, a4.pos]);
    assert!(!kept.complete, "f1 was trimmed: history does not reach back to 0-0");
    let from_a1 = s.read_after(me, a1.pos, None, 10).await.unwrap();
    assert!(from_a1.complete, "everything after f1 is still there");
    assert_eq!(from_a1.entries.len(), 3);

    // Another account's stream is another stream.
    let other = unique_name("stream");
    assert_eq!(s.last(StreamOf::Personal(&other)).await.unwrap(), zero);

    // Past the window the old go too.
    let brief = StreamLimits { window_ms: 1, ..limits };
    let b1 = s.append(StreamOf::Personal(&other), "b1", &brief).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b2 = s.append(StreamOf::Personal(&other), "b2", &brief).await.unwrap();
    assert_eq!(b2.prev, b1.pos);
    let windowed = s.read_after(StreamOf::Personal(&other), zero, None, 10).await.unwrap();
    assert_eq!(windowed, History { entries: vec![(b2.pos, "b2".to_owned())], complete: false });
    assert!(s.read_after(StreamOf::Personal(&other), b1.pos, None, 10).await.unwrap().complete);

    // A targeted entry (`dequeued` for one connection) is kept byte for byte, numbered
    // like any other: the header the node reads back must come back as written.
    let targeted = openchampps::outbox::targeted_entry("node-\"x\"", 7, r#"{"type":"dequeued"}"#);
    let t1 = s.append(StreamOf::Personal(&other), &targeted, &limits).await.unwrap();
    let t2 = s.append(StreamOf::Personal(&other), "after", &limits).await.unwrap();
    assert_eq!(t2.prev, t1.pos, "a targeted entry has its place in the stream");
    let read = s.read_after(StreamOf::Personal(&other), b2.pos, None, 10).await.unwrap();
    assert_eq!(read.entries, vec![(t1.pos, targeted.clone()), (t2.pos, "after".to_owned())]);
    let (to, frame) = openchampps::outbox::split_entry(&read.entries[0].1);
    assert_eq!((to, frame), (Some((r#"node-"x""#.to_owned(), 7)), r#"{"type":"dequeued"}"#));
}

async fn global_stream(s: &(impl Streams + Bus)) {
    let limits = StreamLimits { window_ms: 60_000, global_cap: 1000, personal_cap: 3 };
    let node = format!("n-{}", uuid::Uuid::new_v4().simple());
    let mut on_node = s.subscribe(&node).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let user = rand::random::<u32>() as i64;
    let rate = Some(ChatRate { per_sec: 1, burst: 2 });
    let mut appended = Vec::new();
    for i in 0..3 {
        let event =
            BusEvent::Global { from: "Jane".into(), account: "jane".into(), message: format!("g{i}"), at: None };
        appended.push(s.take_append_publish(user, rate, &format!("frame{i}"), &event, &limits).await.unwrap());
    }
    assert!(appended[0].is_some() && appended[1].is_some() && appended[2].is_none(), "{appended:?}");
    let (first, second) = (appended[0].unwrap(), appended[1].unwrap());
    assert_eq!(second.prev, first.pos);
    for (i, want) in [first, second].into_iter().enumerate() {
        let Some(BusEvent::Global { message, at, .. }) = next(&mut on_node).await else { panic!("g{i} not published") };
        assert_eq!((message, at), (format!("g{i}"), Some(want)), "published with its position");
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), on_node.next()).await;
    assert!(extra.is_err(), "published past the rate: {extra:?}");
    let kept = s.read_after(StreamOf::Global, first.prev, Some(second.pos), 10).await.unwrap();
    assert_eq!(kept.entries, vec![(first.pos, "frame0".to_owned()), (second.pos, "frame1".to_owned())]);
    // Without a rate, nothing is refused.
    let event = BusEvent::Global { from: "Jane".into(), account: "jane".into(), message: "free".into(), at: None };
    assert!(s.take_append_publish(user, None, "free", &event, &limits).await.unwrap().is_some());
}

// Limits ----------------------------------------------------------------------------

pub(crate) fn policy(free: u32, per_subject: u64) -> LoginPolicy {
    LoginPolicy {
        free,
        base_ms: 60_000,
        max_ms: 600_000,
        forget_ms: 60_000,
        per_subject,
        window_ms: 60_000,
        known_ms: 60_000,
    }
}

fn subject() -> String {
    format!("test{}", uuid::Uuid::new_v4().simple())
}

/// A guess at `subject` from `address` of `network`.
fn from(subject: &str, network: &str, address: &str) -> LoginKey {
    LoginKey { subject: subject.into(), network: network.into(), address: address.into() }
}

const NET: Admit = Admit::Check(Pair::Network);

/// `times` guesses from `key`, each admitted on `pair` and wrong.
async fn wrong_guesses(s: &impl Limits, key: &LoginKey, pair: Pair, times: usize, p: &LoginPolicy) {
    for _ in 0..times {
        assert_eq!(s.login_admit(key, p).await.unwrap(), Admit::Check(pair));
        s.login_resolved(key, pair, Resolved::Wrong, p).await.unwrap();
    }
}

async fn login_throttle(s: &impl Limits) {
    let (who, p) = (subject(), policy(3, 100));
    let attacker = from(&who, "203.0.113.0/24", "203.0.113.7");
    wrong_guesses(s, &attacker, Pair::Network, 3, &p).await;
    // The third failure imposes a wait on that network, any address of it, only.
    assert_eq!(s.login_admit(&from(&who, "203.0.113.0/24", "203.0.113.8"), &p).await.unwrap(), Admit::Refuse);
    let elsewhere = from(&who, "198.51.100.0/24", "198.51.100.1");
    assert_eq!(s.login_admit(&elsewhere, &p).await.unwrap(), NET);
    // A right guess forgives its pair.
    s.login_resolved(&elsewhere, Pair::Network, Resolved::Right, &p).await.unwrap();
    assert_eq!(s.login_admit(&attacker, &p).await.unwrap(), Admit::Refuse);
}

async fn login_known_address(s: &impl Limits) {
    let (who, p) = (subject(), policy(3, 100));
    // Jane logs in from .8; later a neighbour in her /24 uses up its budget.
    let jane = from(&who, "203.0.113.0/24", "203.0.113.8");
    assert_eq!(s.login_admit(&jane, &p).await.unwrap(), NET);
    s.login_resolved(&jane, Pair::Network, Resolved::Right, &p).await.unwrap();
    let neighbour = from(&who, "203.0.113.0/24", "203.0.113.7");
    wrong_guesses(s, &neighbour, Pair::Network, 3, &p).await;
    assert_eq!(s.login_admit(&neighbour, &p).await.unwrap(), Admit::Refuse);
    // Jane's own address has its own pair, with its own budget.
    wrong_guesses(s, &jane, Pair::Address, 3, &p).await;
    assert_eq!(s.login_admit(&jane, &p).await.unwrap(), Admit::Refuse);
}

async fn login_in_flight(s: &impl Limits) {
    let (who, p) = (subject(), policy(3, 100));
    let client = from(&who, "203.0.113.0/24", "203.0.113.7");
    for _ in 0..3 {
        assert_eq!(s.login_admit(&client, &p).await.unwrap(), NET);
    }
    // Free only if the three in flight turn out right: wait for them.
    assert_eq!(s.login_admit(&client, &p).await.unwrap(), Admit::Wait);
    s.login_resolved(&client, Pair::Network, Resolved::Right, &p).await.unwrap();
    // Now a known address: its own pair.
    assert_eq!(s.login_admit(&client, &p).await.unwrap(), Admit::Check(Pair::Address));
    let other = from(&subject(), "203.0.113.0/24", "203.0.113.7");
    for _ in 0..3 {
        assert_eq!(s.login_admit(&other, &p).await.unwrap(), NET);
    }
    for _ in 0..3 {
        s.login_resolved(&other, Pair::Network, Resolved::Wrong, &p).await.unwrap();
    }
    assert_eq!(s.login_admit(&other, &p).await.unwrap(), Admit::Refuse);
}

async fn login_cap(s: &impl Limits) {
    let (who, p) = (subject(), policy(1, 4));
    let home = from(&who, "home/24", "home.1");
    assert_eq!(s.login_admit(&home, &p).await.unwrap(), NET);
    s.login_resolved(&home, Pair::Network, Resolved::Right, &p).await.unwrap();
    for attacker in 0..4 {
        let attacker = from(&who, &format!("attacker{attacker}/24"), &format!("attacker{attacker}.1"));
        wrong_guesses(s, &attacker, Pair::Network, 1, &p).await;
    }
    assert_eq!(s.login_admit(&from(&who, "stranger/24", "stranger.1"), &p).await.unwrap(), Admit::Refuse);
    // The cap never refuses the known address, nor another address of its network.
    assert_eq!(s.login_admit(&home, &p).await.unwrap(), Admit::Check(Pair::Address));
    assert_eq!(s.login_admit(&from(&who, "home/24", "home.2"), &p).await.unwrap(), NET);
}

async fn counters(s: &impl Limits) {
    let key = format!("reg:{}", subject());
    assert_eq!(s.hit(&key, 60).await.unwrap(), 1);
    assert_eq!(s.hit(&key, 60).await.unwrap(), 2);
    assert_eq!(s.hit(&format!("{key}:other"), 60).await.unwrap(), 1);
}

// Matchmaking queue ---------------------------------------------------------------------

fn ticket(queue: &str, account: &str, node: &str, conn: u64) -> Ticket {
    Ticket {
        account: account.into(),
        username: account.into(),
        queue: queue.into(),
        node: node.into(),
        conn,
        seq: 0,
        joined_ms: 1,
        tries: 0,
        left: false,
        grace_secs: 0,
        away_until_ms: None,
    }
}

/// A queue name of this case's own (the stores are shared by the cases).
fn queue() -> String {
    format!("q{}", uuid::Uuid::new_v4().simple())
}

fn accounts(tickets: &[Ticket]) -> Vec<&str> {
    tickets.iter().map(|t| t.account.as_str()).collect()
}

async fn queue_join_leave(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let jane = format!("jane{id}");
    assert_eq!(s.join(&ticket(&q, &jane, "n1", 1), 0).await.unwrap(), Joined::New);
    // Joining again from another connection keeps the place and says who held it.
    assert_eq!(s.join(&ticket(&q, &jane, "n2", 7), 0).await.unwrap(), Joined::Kept { node: "n1".into(), conn: 1 });
    let (held, position) = s.position(&jane).await.unwrap().unwrap();
    assert_eq!((held.node.as_str(), held.conn, position), ("n2", 7, 1));
    // Only its holder's leave removes it, when a holder is named.
    assert_eq!(s.leave(&jane, Some(("n1", 1))).await.unwrap(), Left::NoTicket);
    assert!(matches!(s.leave(&jane, Some(("n2", 7))).await.unwrap(), Left::Removed(t) if t.account == jane));
    assert_eq!(s.leave(&jane, None).await.unwrap(), Left::NoTicket);
    assert_eq!(s.position(&jane).await.unwrap(), None);
    assert_eq!(s.length(&q).await.unwrap(), 0);
    // Joining another queue moves the ticket: out of the old queue (the one script
    // key Redis names from the ticket it reads), to the back of the new one.
    let other = queue();
    s.join(&ticket(&other, &format!("john{id}"), "n3", 1), 0).await.unwrap();
    assert_eq!(s.join(&ticket(&q, &jane, "n1", 1), 0).await.unwrap(), Joined::New);
    assert_eq!(s.join(&ticket(&other, &jane, "n1", 1), 0).await.unwrap(), Joined::New);
    assert_eq!((s.length(&q).await.unwrap(), s.length(&other).await.unwrap()), (0, 2));
    let (held, position) = s.position(&jane).await.unwrap().unwrap();
    assert_eq!((held.queue.as_str(), position), (other.as_str(), 2));
    assert!(matches!(s.leave(&jane, None).await.unwrap(), Left::Removed(t) if t.queue == other));
    assert_eq!(s.length(&other).await.unwrap(), 1);
}

async fn queue_fifo_put_back(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let names: Vec<String> = (0..3).map(|i| format!("p{i}{id}")).collect();
    for (i, name) in names.iter().enumerate() {
        s.join(&ticket(&q, name, "n1", i as u64), 0).await.unwrap();
    }
    assert_eq!(s.length(&q).await.unwrap(), 3);
    assert_eq!(s.position(&names[2]).await.unwrap().unwrap().1, 3);
    let match_id = format!("m{id}");
    let taken = s.take(&q, 2, &match_id, "n1", 60, &[]).await.unwrap();
    assert_eq!(accounts(&taken.tickets), [names[0].as_str(), names[1].as_str()]);
    // A player of a forming match cannot queue again, nor leave without its holder.
    assert_eq!(s.join(&ticket(&q, &names[0], "n1", 0), 0).await.unwrap(), Joined::MatchPending);
    assert_eq!(s.leave(&names[1], None).await.unwrap(), Left::MatchPending);
    // Not enough left for another.
    let none = s.take(&q, 2, &format!("m2{id}"), "n1", 60, &[]).await.unwrap();
    assert!(none.tickets.is_empty());
    // Put back at their places, ahead of the one who queued after them, a try spent.
    assert_eq!(s.put_back(&match_id, 3).await.unwrap(), 2);
    assert_eq!(s.position(&names[0]).await.unwrap().unwrap().1, 1);
    let (back, position) = s.position(&names[1]).await.unwrap().unwrap();
    assert_eq!((position, back.tries), (2, 1));
    assert_eq!(s.position(&names[2]).await.unwrap().unwrap().1, 3);
}

async fn queue_tries(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let (a, b) = (format!("a{id}"), format!("b{id}"));
    s.join(&ticket(&q, &a, "n1", 1), 0).await.unwrap();
    s.join(&ticket(&q, &b, "n1", 2), 0).await.unwrap();
    for attempt in 1..=2u32 {
        let match_id = format!("m{attempt}{id}");
        assert_eq!(s.take(&q, 2, &match_id, "n1", 60, &[]).await.unwrap().tickets.len(), 2);
        let back = s.put_back(&match_id, 2).await.unwrap();
        // The second failed try is the last: those tickets end.
        assert_eq!(back, if attempt < 2 { 2 } else { 0 }, "try {attempt}");
    }
    assert_eq!(s.length(&q).await.unwrap(), 0);
    // A ticket that left while its match was forming is not put back.
    s.join(&ticket(&q, &a, "n1", 1), 0).await.unwrap();
    s.join(&ticket(&q, &b, "n1", 2), 0).await.unwrap();
    let match_id = format!("m3{id}");
    s.take(&q, 2, &match_id, "n1", 60, &[]).await.unwrap();
    assert!(matches!(s.leave(&a, Some(("n1", 1))).await.unwrap(), Left::Removed(_)));
    assert_eq!(s.put_back(&match_id, 5).await.unwrap(), 1);
    assert_eq!(s.position(&a).await.unwrap(), None);
    assert!(s.position(&b).await.unwrap().is_some());
}

async fn queue_grace(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let graced = |account: &str, node: &str, conn: u64, secs: u64| Ticket {
        grace_secs: secs,
        ..ticket(&q, account, node, conn)
    };
    let [away, plain, late, orphan] = ["away", "plain", "late", "orphan"].map(|n| format!("{n}{id}"));
    s.join(&graced(&away, "n1", 1, 30), 0).await.unwrap();
    assert_eq!(s.park(&away, ("n1", 2)).await.unwrap(), Parked::None, "another connection's ticket");
    assert_eq!(s.park(&away, ("n1", 1)).await.unwrap(), Parked::Kept);
    let (kept, place) = s.position(&away).await.unwrap().unwrap();
    assert!(kept.away_until_ms.is_some() && place == 1, "{kept:?}");
    // Its player back on another node: held there, at its place.
    assert_eq!(s.reclaim(&away, ("n2", 5)).await.unwrap(), Some(("n1".to_owned(), 1)));
    let (held, place) = s.position(&away).await.unwrap().unwrap();
    assert_eq!((held.node.as_str(), held.conn, held.away_until_ms, place), ("n2", 5, None, 1));
    // A ticket without grace is never reclaimed.
    s.join(&ticket(&q, &plain, "n1", 3), 0).await.unwrap();
    assert_eq!(s.reclaim(&plain, ("n2", 6)).await.unwrap(), None);
    // Past its grace: not reclaimed, and dropped before any match.
    s.join(&graced(&late, "n1", 4, 1), 0).await.unwrap();
    assert_eq!(s.park(&late, ("n1", 4)).await.unwrap(), Parked::Kept);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.reclaim(&late, ("n2", 7)).await.unwrap(), None);
    let taken = s.take(&q, 3, &format!("m1{id}"), "n1", 60, &[]).await.unwrap();
    assert_eq!((taken.tickets.len(), taken.expired, taken.dropped), (0, 1, 0), "{taken:?}");
    assert_eq!(s.position(&late).await.unwrap(), None);
    // A gone node's ticket with a grace waits that long for its player (and can be
    // matched meanwhile); its player reclaims it.
    s.join(&graced(&orphan, "dead", 9, 30), 0).await.unwrap();
    let taken = s.take(&q, 4, &format!("m2{id}"), "n1", 60, &["dead".to_owned()]).await.unwrap();
    assert_eq!((taken.tickets.len(), taken.dropped, taken.expired), (0, 0, 0), "{taken:?}");
    assert!(s.position(&orphan).await.unwrap().unwrap().0.away_until_ms.is_some());
    assert_eq!(s.reclaim(&orphan, ("n1", 11)).await.unwrap(), Some(("dead".to_owned(), 9)));
    let taken = s.take(&q, 3, &format!("m3{id}"), "n1", 60, &["dead".to_owned()]).await.unwrap();
    assert_eq!(accounts(&taken.tickets), [away.as_str(), plain.as_str(), orphan.as_str()]);
    // A ticket whose match is forming cannot wait.
    assert_eq!(s.park(&away, ("n2", 5)).await.unwrap(), Parked::Forming);
}

async fn queue_gone_node(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let (dead, alive) = (format!("dead{id}"), format!("alive{id}"));
    let names: Vec<String> = (0..4).map(|i| format!("p{i}{id}")).collect();
    s.join(&ticket(&q, &names[0], &dead, 1), 0).await.unwrap();
    s.join(&ticket(&q, &names[1], &alive, 2), 0).await.unwrap();
    s.join(&ticket(&q, &names[2], &alive, 3), 0).await.unwrap();
    // The dead node was forming a match of two players of the live node.
    let forming = format!("m1{id}");
    let taken = s.take(&q, 2, &forming, &dead, 60, &[]).await.unwrap();
    assert_eq!(accounts(&taken.tickets), [names[0].as_str(), names[1].as_str()]);
    s.join(&ticket(&q, &names[3], &alive, 4), 0).await.unwrap();
    // The next formation drops the dead node's tickets and puts the live ones back.
    let taken = s.take(&q, 2, &format!("m2{id}"), &alive, 60, std::slice::from_ref(&dead)).await.unwrap();
    assert_eq!((taken.dropped, taken.put_back), (1, 1));
    assert_eq!(accounts(&taken.tickets), [names[1].as_str(), names[2].as_str()]);
    assert_eq!(s.position(&names[0]).await.unwrap(), None);
    assert_eq!(s.position(&names[3]).await.unwrap().unwrap().1, 1);
}

async fn queue_matches(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let (a, b) = (format!("a{id}"), format!("b{id}"));
    s.join(&ticket(&q, &a, "n1", 1), 0).await.unwrap();
    s.join(&ticket(&q, &b, "n1", 2), 0).await.unwrap();
    let (match_id, server) = (format!("m{id}"), format!("10.0.0.1:{id}"));
    s.take(&q, 2, &match_id, "n1", 60, &[]).await.unwrap();
    assert_eq!(s.joinable(&a).await.unwrap(), Joinable::Forming);
    assert!(s.lease(&server, &match_id, 60).await.unwrap());
    assert!(!s.lease(&server, &format!("other{id}"), 60).await.unwrap(), "a leased server is leased twice");
    let frames = [(a.clone(), format!("found {match_id} a")), (b.clone(), format!("found {match_id} b"))];
    assert!(s.start(&match_id, &server, &frames, 60).await.unwrap());
    assert!(!s.start(&match_id, &server, &frames, 60).await.unwrap(), "started twice");
    assert_eq!(s.current(&server).await.unwrap(), Some((match_id.clone(), vec![a.clone(), b.clone()])));
    assert!(s.confirm(&match_id, 120).await.unwrap());
    assert!(!s.confirm(&format!("nomatch{id}"), 120).await.unwrap());
    assert_eq!(s.joinable(&a).await.unwrap(), Joinable::Found(frames[0].1.clone()));
    // Many accounts in one read: an answer per account, in their order.
    let nobody = format!("c{id}");
    let many = s.joinable_many(&[b.as_str(), nobody.as_str(), a.as_str()]).await.unwrap();
    let found = |i: usize| Joinable::Found(frames[i].1.clone());
    assert_eq!(many, [found(1), Joinable::None, found(0)]);
    assert_eq!(s.joinable_many(&[]).await.unwrap(), []);
    assert_eq!(s.join(&ticket(&q, &a, "n1", 1), 0).await.unwrap(), Joined::MatchPending);
    assert!(s.end(&match_id).await.unwrap());
    assert!(!s.end(&match_id).await.unwrap(), "ended twice");
    assert_eq!(s.joinable(&a).await.unwrap(), Joinable::None);
    assert_eq!(s.current(&server).await.unwrap(), None);
    assert_eq!(s.join(&ticket(&q, &a, "n1", 1), 0).await.unwrap(), Joined::New);
    // Ending the match freed its server.
    assert!(s.lease(&server, &format!("next{id}"), 60).await.unwrap());
    // A lease is freed only by the match holding it.
    s.unlease(&server, &match_id).await.unwrap();
    assert!(!s.lease(&server, &format!("third{id}"), 60).await.unwrap());
    s.unlease(&server, &format!("next{id}")).await.unwrap();
    assert!(s.lease(&server, &format!("third{id}"), 60).await.unwrap());
}

async fn queue_match_cap(s: &impl MatchQueue) {
    let (q, id) = (queue(), uuid::Uuid::new_v4().simple().to_string());
    let (a, b) = (format!("a{id}"), format!("b{id}"));
    for round in 0..2 {
        assert_eq!(s.join(&ticket(&q, &a, "n1", 1), 2).await.unwrap(), Joined::New, "round {round}");
        s.join(&ticket(&q, &b, "n1", 2), 0).await.unwrap();
        let match_id = format!("m{round}{id}");
        s.take(&q, 2, &match_id, "n1", 60, &[]).await.unwrap();
        let frames = [(a.clone(), "found".to_owned()), (b.clone(), "found".to_owned())];
        assert!(s.start(&match_id, "", &frames, 60).await.unwrap());
        assert!(s.end(&match_id).await.unwrap());
    }
    // Two matches formed: a third is refused to a, not to b, who has no cap.
    assert_eq!(s.join(&ticket(&q, &a, "n1", 1), 2).await.unwrap(), Joined::Limited);
    assert_eq!(s.join(&ticket(&q, &b, "n1", 2), 0).await.unwrap(), Joined::New);
    assert!(matches!(s.leave(&b, None).await.unwrap(), Left::Removed(_)));

    // Only matches no game server confirmed count: confirmed (played) ones are given back, once.
    let (c, d) = (format!("c{id}"), format!("d{id}"));
    for round in 0..3 {
        assert_eq!(s.join(&ticket(&q, &c, "n1", 3), 2).await.unwrap(), Joined::New, "round {round}");
        s.join(&ticket(&q, &d, "n1", 4), 0).await.unwrap();
        let match_id = format!("c{round}{id}");
        s.take(&q, 2, &match_id, "n1", 60, &[]).await.unwrap();
        let frames = [(c.clone(), "found".to_owned()), (d.clone(), "found".to_owned())];
        assert!(s.start(&match_id, "", &frames, 60).await.unwrap());
        assert!(s.confirm(&match_id, 60).await.unwrap());
        assert!(s.confirm(&match_id, 60).await.unwrap());
        assert!(s.end(&match_id).await.unwrap());
    }
    assert_eq!(s.join(&ticket(&q, &c, "n1", 3), 2).await.unwrap(), Joined::New);
}

/// Two nodes sharing the queue, each with its own view of where a ticket is: a
/// ticket moved by one is found, moved back and removed by the other (on Redis the
/// queue key is named from what that node last saw: a stale guess is named again),
/// and a forming or started match whose record changed meanwhile is put back or ended
/// whole.
async fn queue_two_nodes(a: &impl MatchQueue, b: &impl MatchQueue) {
    let (q1, q2, id) = (queue(), queue(), uuid::Uuid::new_v4().simple().to_string());
    let lengths = async |q1: &str, q2: &str| (a.length(q1).await.unwrap(), a.length(q2).await.unwrap());
    let jane = format!("jane{id}");
    assert_eq!(a.join(&ticket(&q1, &jane, "n1", 1), 0).await.unwrap(), Joined::New);
    assert_eq!(b.join(&ticket(&q2, &jane, "n2", 2), 0).await.unwrap(), Joined::New);
    assert_eq!(lengths(&q1, &q2).await, (0, 1));
    // a last saw the ticket in q1.
    let (held, position) = a.position(&jane).await.unwrap().unwrap();
    assert_eq!((held.queue.as_str(), held.node.as_str(), position), (q2.as_str(), "n2", 1));
    assert_eq!(b.join(&ticket(&q1, &jane, "n2", 2), 0).await.unwrap(), Joined::New);
    // Not its holder's: kept. Then any holder's: removed from q1, where b moved it.
    assert_eq!(a.leave(&jane, Some(("n1", 1))).await.unwrap(), Left::NoTicket);
    assert!(matches!(a.leave(&jane, None).await.unwrap(), Left::Removed(t) if t.queue == q1));
    assert_eq!(lengths(&q1, &q2).await, (0, 0));
    assert_eq!(b.position(&jane).await.unwrap(), None);

    // A forming match whose record changed (a player's connection ended): the rest go back.
    let (x, y) = (format!("x{id}"), format!("y{id}"));
    a.join(&ticket(&q1, &x, "n1", 1), 0).await.unwrap();
    a.join(&ticket(&q1, &y, "n1", 2), 0).await.unwrap();
    let forming = format!("m1{id}");
    assert_eq!(a.take(&q1, 2, &forming, "n1", 60, &[]).await.unwrap().tickets.len(), 2);
    assert!(matches!(b.leave(&x, Some(("n1", 1))).await.unwrap(), Left::Removed(_)));
    assert_eq!(b.put_back(&forming, 3).await.unwrap(), 1);
    assert_eq!(lengths(&q1, &q2).await, (1, 0));
    assert_eq!(a.position(&y).await.unwrap().unwrap().1, 1);

    // A started match confirmed through one node (its record rewritten) ends through the other.
    assert_eq!(b.join(&ticket(&q1, &x, "n2", 3), 0).await.unwrap(), Joined::New);
    let (started, server) = (format!("m2{id}"), format!("10.0.0.2:{id}"));
    let taken = b.take(&q1, 2, &started, "n2", 60, &[]).await.unwrap();
    assert_eq!(accounts(&taken.tickets), [y.as_str(), x.as_str()]);
    assert!(a.lease(&server, &started, 60).await.unwrap());
    let frames = [(y.clone(), format!("found {started} y")), (x.clone(), format!("found {started} x"))];
    assert!(a.start(&started, &server, &frames, 60).await.unwrap());
    assert!(b.confirm(&started, 120).await.unwrap());
    assert_eq!(a.current(&server).await.unwrap(), Some((started.clone(), vec![y.clone(), x.clone()])));
    assert!(a.end(&started).await.unwrap());
    assert_eq!(b.current(&server).await.unwrap(), None);
    assert_eq!(b.joinable(&x).await.unwrap(), Joinable::None);
    assert!(b.lease(&server, &format!("m3{id}"), 60).await.unwrap(), "ending the match freed its server");
}

/// Scripts run (`EVALSHA`s that ran, not those that met an unloaded script) on a
/// private Redis so far.
async fn scripts_run(redis: &mut ::redis::aio::MultiplexedConnection) -> u64 {
    let info: String = ::redis::cmd("INFO").arg("commandstats").query_async(redis).await.unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("cmdstat_evalsha:")).unwrap_or("");
    let stat = |name: &str| {
        line.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok()).unwrap_or(0)
    };
    stat("calls") - stat("failed_calls")
}

/// `op`'s result and the scripts it ran: its round trips to a script.
async fn counted<T>(
    redis: &mut ::redis::aio::MultiplexedConnection,
    op: impl Future<Output = StoreResult<T>>,
) -> (T, u64) {
    let before = scripts_run(redis).await;
    let out = op.await.unwrap();
    (out, scripts_run(redis).await - before)
}

/// On Redis each key a matchmaking script touches is named before it runs, from a
/// hint: one script on the common path, one more when the hint is stale (counted);
/// and a script given a stale hint changes nothing and answers the fresh one.
#[tokio::test]
async fn redis_names_matchmaking_keys_from_hints() {
    let private = PrivateRedis::start();
    let url = private.url();
    let stores = [RedisStore::connect(&url, "mm:", 4).unwrap(), RedisStore::connect(&url, "mm:", 4).unwrap()];
    let (a, b): (&dyn MatchQueue, &dyn MatchQueue) = (&stores[0], &stores[1]);
    let mut redis = ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let r = &mut redis;
    let key = |rest: &str| format!("mm:{{mm}}:{rest}");

    // Moves: a stale guess at the old queue costs one more script, nothing else.
    assert_eq!(counted(r, a.join(&ticket("q1", "jane", "n1", 1), 0)).await, (Joined::New, 1));
    assert_eq!(counted(r, b.join(&ticket("q2", "jane", "n2", 2), 0)).await, (Joined::New, 2), "b never saw jane");
    let (found, trips) = counted(r, a.position("jane")).await;
    assert_eq!((found.map(|(t, p)| (t.queue, p)), trips), (Some(("q2".into(), 1)), 2), "a saw jane in q1");
    assert_eq!(counted(r, a.position("jane")).await.1, 1);
    assert_eq!(counted(r, b.join(&ticket("q1", "jane", "n2", 2), 0)).await, (Joined::New, 1));
    let (left, trips) = counted(r, a.leave("jane", None)).await;
    assert!(matches!(left, Left::Removed(t) if t.queue == "q1") && trips == 2, "{trips}");
    assert_eq!(counted(r, a.leave("jane", None)).await, (Left::NoTicket, 1));
    assert_eq!((a.length("q1").await.unwrap(), a.length("q2").await.unwrap()), (0, 0));

    // Take: one script while too few are queued, two to form a match.
    for (i, name) in ["x", "y"].into_iter().enumerate() {
        assert_eq!(counted(r, a.join(&ticket("q1", name, "n1", i as u64), 0)).await.1, 1);
    }
    let (taken, trips) = counted(r, a.take("q1", 3, "m1", "n1", 60, &[])).await;
    assert_eq!((taken.tickets.len(), trips), (0, 1));
    let (taken, trips) = counted(r, a.take("q1", 2, "m1", "n1", 60, &[])).await;
    assert_eq!((accounts(&taken.tickets), trips), (vec!["x", "y"], 2));
    assert_eq!(counted(r, b.put_back("m1", 3)).await, (2, 1), "after reading the record");
    // A gone node's forming match: handed back, put back, then the take again.
    a.take("q1", 2, "m2", "dead", 60, &[]).await.unwrap();
    let (taken, trips) = counted(r, b.take("q1", 2, "m3", "n2", 60, &["dead".into()])).await;
    assert_eq!((taken.put_back, taken.dropped, accounts(&taken.tickets), trips), (2, 0, vec!["x", "y"], 4));

    // A forming record that changed after it was read: put back named again.
    let forming: String = ::redis::cmd("HGET").arg(key("forming")).arg("m3").query_async(r).await.unwrap();
    assert!(matches!(b.leave("x", Some(("n1", 0))).await.unwrap(), Left::Removed(_)));
    let put_back = ::redis::Script::new(include_str!("../../src/store/redis/lua/mm_put_back.lua"));
    let mut inv = put_back.key(key("tickets"));
    inv.key(key("forming")).key(key("pending:x")).key(key("q:q1")).key(key("pending:y")).key(key("q:q1"));
    let reply: Vec<String> = inv.arg("m3").arg(&forming).arg(1).arg(3).invoke_async(r).await.unwrap();
    let now: String = ::redis::cmd("HGET").arg(key("forming")).arg("m3").query_async(r).await.unwrap();
    assert_eq!(reply, ["retry", now.as_str()]);
    assert_ne!(now, forming);
    let pending: Vec<Option<String>> =
        ::redis::cmd("MGET").arg(key("pending:x")).arg(key("pending:y")).query_async(r).await.unwrap();
    assert_eq!((pending, a.length("q1").await.unwrap()), (vec![Some("m3".into()), Some("m3".into())], 0), "changed");
    assert_eq!(a.put_back("m3", 3).await.unwrap(), 1);

    // A started match: confirm and end given a stale record change nothing.
    a.join(&ticket("q1", "x", "n1", 0), 0).await.unwrap();
    b.take("q1", 2, "m4", "n2", 60, &[]).await.unwrap();
    assert!(a.lease("s1", "m4", 60).await.unwrap());
    let frames = [("y".to_owned(), "found m4 y".to_owned()), ("x".to_owned(), "found m4 x".to_owned())];
    assert!(a.start("m4", "s1", &frames, 60).await.unwrap());
    let record: String = ::redis::cmd("GET").arg(key("match:m4")).query_async(r).await.unwrap();
    let confirm = ::redis::Script::new(include_str!("../../src/store/redis/lua/mm_confirm.lua"));
    let mut inv = confirm.key(key("match:m4"));
    inv.key(key("lease:other")).key(key("formed:x")).key(key("formed:z"));
    let stale = record.replace("s1", "other");
    let reply: Vec<String> = inv.arg("m4").arg(120).arg(&stale).invoke_async(r).await.unwrap();
    assert_eq!(reply, ["retry", record.as_str()]);
    let formed: Vec<u64> = ::redis::cmd("MGET").arg(key("formed:x")).arg(key("formed:y")).query_async(r).await.unwrap();
    assert_eq!(formed, [1, 1], "a stale confirm gave matches back");
    assert_eq!(counted(r, b.confirm("m4", 120)).await, (true, 1));
    let confirmed: String = ::redis::cmd("GET").arg(key("match:m4")).query_async(r).await.unwrap();
    assert_ne!(confirmed, record);
    let end = ::redis::Script::new(include_str!("../../src/store/redis/lua/mm_end.lua"));
    let mut inv = end.key(key("match:m4"));
    inv.key(key("lease:s1")).key(key("found:y")).key(key("pending:y")).key(key("found:x")).key(key("pending:x"));
    let reply: Vec<String> = inv.arg("m4").arg(&record).invoke_async(r).await.unwrap();
    assert_eq!(reply, ["retry", confirmed.as_str()]);
    assert_eq!(a.joinable("x").await.unwrap(), Joinable::Found("found m4 x".into()), "a stale end ended it");
    let current = ::redis::Script::new(include_str!("../../src/store/redis/lua/mm_current.lua"));
    let reply: Vec<String> = current.key(key("lease:s1")).key(key("match:m1")).arg("m1").invoke_async(r).await.unwrap();
    assert_eq!(reply, ["retry", "m4"]);
    let (now, trips) = counted(r, b.current("s1")).await;
    assert_eq!((now, trips), (Some(("m4".into(), vec!["y".into(), "x".into()])), 1));
    assert_eq!(counted(r, a.end("m4")).await, (true, 1));
    assert_eq!(a.joinable("x").await.unwrap(), Joinable::None);
    assert!(a.lease("s1", "m5", 60).await.unwrap());
}

/// Nodes racing over the same tickets: two move them back and forth between two
/// queues while a third removes them, each node's guess at a ticket's queue going
/// stale under it. Keys are named again (more scripts run than operations); no
/// snapshot taken meanwhile, nor the end, shows a stray queue entry (one whose ticket
/// is not in that queue); and a node that never saw the tickets removes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_moves_and_leaves_leave_no_stray_queue_entries() {
    let private = PrivateRedis::start();
    let url = private.url();
    let mut redis = ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    const ROUNDS: usize = 150;
    let names: Vec<String> = (0..3).map(|i| format!("p{i}")).collect();
    let before = scripts_run(&mut redis).await;
    let node = || -> Box<dyn MatchQueue> { Box::new(RedisStore::connect(&url, "race:", 4).unwrap()) };
    let racer = |step: u8| {
        let (store, names) = (node(), names.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..ROUNDS {
                for name in &names {
                    let done = match step {
                        0 => store.leave(name, None).await.map(drop),
                        queue => store.join(&ticket(&format!("q{queue}"), name, "n", queue.into()), 0).await.map(drop),
                    };
                    // Only "changed too often" may refuse (it did not in practice).
                    if let Err(e) = done {
                        assert!(e.to_string().contains("changed too often"), "{e}");
                        refused += 1;
                    }
                }
            }
            refused
        })
    };
    let racers = [racer(1), racer(2), racer(0)];
    let racing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (racing, mut redis) = (racing.clone(), redis.clone());
        tokio::spawn(async move {
            let mut snapshots = 0;
            while racing.load(std::sync::atomic::Ordering::Relaxed) {
                let strays = stray_entries(&mut redis).await;
                assert!(strays.is_empty(), "stray queue entries mid-race: {strays:?}");
                snapshots += 1;
            }
            snapshots
        })
    };
    let refused: u64 = futures_util::future::join_all(racers).await.into_iter().map(Result::unwrap).sum();
    racing.store(false, std::sync::atomic::Ordering::Relaxed);
    let snapshots = sampler.await.unwrap();
    let operations = (3 * ROUNDS * names.len()) as u64;
    let run = scripts_run(&mut redis).await - before;
    assert!(run > operations, "{run} scripts for {operations} operations: no key was named again");
    assert_eq!(stray_entries(&mut redis).await, Vec::<String>::new());
    let fresh = node();
    for name in &names {
        fresh.leave(name, None).await.unwrap();
    }
    assert_eq!((fresh.length("q1").await.unwrap(), fresh.length("q2").await.unwrap()), (0, 0));
    eprintln!("{run} scripts for {operations} operations, {refused} refused, {snapshots} snapshots");
}

/// The entries of queues `q1` and `q2` (prefix `race:`) whose account's ticket is
/// not in that queue, and the tickets missing from their queue, at one instant.
async fn stray_entries(redis: &mut ::redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut snapshot = ::redis::pipe();
    snapshot.atomic().hgetall("race:{mm}:tickets");
    snapshot.zrange("race:{mm}:q:q1", 0, -1).zrange("race:{mm}:q:q2", 0, -1);
    let (tickets, q1, q2): (std::collections::HashMap<String, String>, Vec<String>, Vec<String>) =
        snapshot.query_async(redis).await.unwrap();
    let mut wrong = Vec::new();
    for (queue, queued) in [("q1", q1), ("q2", q2)] {
        for name in &queued {
            if tickets.get(name).is_none_or(|t| serde_json::from_str::<Ticket>(t).unwrap().queue != queue) {
                wrong.push(format!("{name} in {queue}"));
            }
        }
        for (name, t) in &tickets {
            if serde_json::from_str::<Ticket>(t).unwrap().queue == queue && !queued.contains(name) {
                wrong.push(format!("{name}'s ticket not in {queue}"));
            }
        }
    }
    wrong
}

// Users and tokens ----------------------------------------------------------------------

async fn user_store(label: &str, s: &dyn UserStore) {
    eprintln!("{label}: users and tokens");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let jane = format!("Jane{id}");
    let created = s.create_user(&jane, "hash1", Some(&format!("jane{id}@example.org"))).await.unwrap();
    let user_id = created.expect("a new name is free");
    assert_eq!(s.create_user(&jane.to_uppercase(), "hash2", None).await.unwrap(), Err(Conflict::Username));
    let other = format!("other{id}");
    let email_again = s.create_user(&other, "hash2", Some(&format!("JANE{id}@example.org"))).await.unwrap();
    assert_eq!(email_again, Err(Conflict::Email));
    assert!(s.email_taken(&format!("Jane{id}@Example.org")).await.unwrap());
    // Found case-insensitively, as stored.
    let found = s.find_user(&jane.to_lowercase()).await.unwrap().unwrap();
    assert_eq!((found.id, found.username.as_str(), found.password_hash.as_str()), (user_id, jane.as_str(), "hash1"));
    s.set_password_hash(user_id, "hash3").await.unwrap();
    assert_eq!(s.find_user(&jane).await.unwrap().unwrap().password_hash, "hash3");
    assert!(s.find_user(&format!("nobody{id}")).await.unwrap().is_none());
    // A login's lookup: the name folded as the lookup folds it, and the account.
    let (folded, found) = s.find_login(&jane.to_uppercase()).await.unwrap();
    assert_eq!((folded, found.map(|u| u.id)), (jane.to_lowercase(), Some(user_id)));
    let (folded, found) = s.find_login(&format!("NoBody{id}")).await.unwrap();
    assert_eq!((folded, found.map(|u| u.id)), (format!("nobody{id}"), None));

    // Live tokens are capped: past the cap the oldest is revoked.
    let expires_at = unix_now() + 3600;
    let tokens: Vec<_> = (0..3).map(|_| Token::generate().hash()).collect();
    for (i, token) in tokens.iter().enumerate() {
        let revoked = s.insert_token(user_id, token, Some("203.0.113.7"), expires_at, 2).await.unwrap();
        assert_eq!(revoked, if i < 2 { vec![] } else { vec![tokens[0]] }, "token {i}");
        // Tokens issued in one second still have an order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let record = TokenRecord { user_id, username: jane.clone(), expires_at, standing: Standing::default() };
    assert_eq!(s.find_token(&tokens[0]).await.unwrap(), None);
    assert_eq!(s.find_token(&tokens[1]).await.unwrap(), Some(record.clone()));
    let mut live: Vec<_> = s.live_tokens(&tokens).await.unwrap().into_iter().map(|(t, _)| t).collect();
    live.sort_by_key(|t| tokens.iter().position(|x| x == t));
    assert_eq!(live, tokens[1..].to_vec());
    assert_eq!(s.touch_tokens(&tokens[1..]).await.unwrap(), 2);

    assert!(s.revoke_token(&tokens[1]).await.unwrap());
    assert_eq!(s.find_token(&tokens[1]).await.unwrap(), None);
    assert!(!s.revoke_token(&Token::generate().hash()).await.unwrap());
    assert_eq!(s.revoke_user_tokens(&jane.to_lowercase()).await.unwrap(), vec![tokens[2]]);
    assert!(s.live_tokens(&tokens).await.unwrap().is_empty());

    // An expired token is no token.
    let expired = Token::generate().hash();
    s.insert_token(user_id, &expired, None, unix_now() - 1, 20).await.unwrap();
    assert_eq!(s.find_token(&expired).await.unwrap(), None);
}
