//! The contract of the admin roles (`Operators`, `Audit`): the same cases against the
//! in-memory twin and PostgreSQL.

use std::time::Duration;

use crate::common::*;
use crate::contract::case;
use openchampps::moderation::Role;
use openchampps::store::admin::*;
use openchampps::store::postgres::PgStore;
use openchampps::store::{MemoryAdmin, UserStore};

async fn admin_contract<S: Operators + Audit>(label: &str, s: &S) {
    case(label, "operators", operators(s)).await;
    case(label, "the first operator", first_operator(s)).await;
    case(label, "sessions", sessions(s)).await;
    case(label, "sessions end with inactivity", session_expiry(s)).await;
    case(label, "audit: append, filter, page", audit(s)).await;
}

#[tokio::test]
async fn the_memory_admin_twin_keeps_the_contract() {
    admin_contract("memory", &MemoryAdmin::default()).await;
}

#[tokio::test]
async fn postgres_keeps_the_admin_contract() {
    let cluster = Cluster::new().await;
    let store = PgStore::connect(&cluster.db_url, &cluster.db_url, 4).unwrap();
    store.migrate().await.unwrap();
    admin_contract("postgres", &store).await;
}

async fn operators(s: &impl Operators) {
    assert_eq!(s.count_operators().await.unwrap(), 0);
    let alice = s.create_operator("Alice", Role::Admin, "$argon2id$hash").await.unwrap().unwrap();
    assert_eq!((alice.name.as_str(), alice.role, alice.disabled), ("Alice", Role::Admin, false));
    assert!((alice.created_at - openchampps::store::unix_now()).abs() < 60);
    // Names are unique regardless of case.
    assert_eq!(s.create_operator("ALICE", Role::Viewer, "x").await.unwrap(), None);
    assert_eq!(s.find_operator("aLiCe").await.unwrap(), Some(alice.clone()));
    assert_eq!(s.find_operator("bob").await.unwrap(), None);
    s.create_operator("bob", Role::Viewer, "h").await.unwrap().unwrap();
    let names: Vec<String> = s.list_operators().await.unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["Alice", "bob"]);

    let change = OperatorChange { role: Some(Role::Moderator), ..Default::default() };
    let bob = s.update_operator("BOB", &change).await.unwrap().unwrap();
    assert_eq!((bob.role, bob.disabled, bob.password_hash.as_str()), (Role::Moderator, false, "h"));
    let change = OperatorChange { disabled: Some(true), password_hash: Some("h2".into()), ..Default::default() };
    let bob = s.update_operator("bob", &change).await.unwrap().unwrap();
    assert_eq!((bob.role, bob.disabled, bob.password_hash.as_str()), (Role::Moderator, true, "h2"));
    assert_eq!(s.update_operator("nobody", &change).await.unwrap(), None);
    assert_eq!(s.count_operators().await.unwrap(), 2);
}

async fn first_operator(s: &impl Operators) {
    // Operators exist (the case before): no first one is created.
    assert_eq!(s.create_first_operator("boot", Role::Admin, "h").await.unwrap(), None);
    assert_eq!(s.find_operator("boot").await.unwrap(), None);
}

async fn sessions(s: &impl Operators) {
    s.create_operator("carol", Role::Moderator, "h").await.unwrap().unwrap();
    let token = [7u8; 32];
    assert!(s.create_session(&token, "CAROL", "csrf-1").await.unwrap());
    let session = s.session(&token, 60).await.unwrap().unwrap();
    assert_eq!(session, OperatorSession { operator: "carol".into(), role: Role::Moderator, csrf: "csrf-1".into() });
    assert_eq!(s.session(&[8u8; 32], 60).await.unwrap(), None);
    // A role change shows at once; a disabled operator's sessions end and no new one opens.
    let promote = OperatorChange { role: Some(Role::Admin), ..Default::default() };
    s.update_operator("carol", &promote).await.unwrap();
    assert_eq!(s.session(&token, 60).await.unwrap().unwrap().role, Role::Admin);
    let disable = OperatorChange { disabled: Some(true), ..Default::default() };
    s.update_operator("carol", &disable).await.unwrap();
    assert_eq!(s.session(&token, 60).await.unwrap(), None);
    assert!(!s.create_session(&[9u8; 32], "carol", "c").await.unwrap());
    let enable = OperatorChange { disabled: Some(false), ..Default::default() };
    s.update_operator("carol", &enable).await.unwrap();
    assert_eq!(s.session(&token, 60).await.unwrap(), None, "a disabled operator's sessions are gone for good");
    // A new password ends the sessions too; logout ends one.
    assert!(s.create_session(&token, "carol", "c2").await.unwrap());
    let other = [10u8; 32];
    assert!(s.create_session(&other, "carol", "c3").await.unwrap());
    s.end_session(&other).await.unwrap();
    assert_eq!(s.session(&other, 60).await.unwrap(), None);
    assert!(s.session(&token, 60).await.unwrap().is_some());
    let password = OperatorChange { password_hash: Some("new".into()), ..Default::default() };
    s.update_operator("carol", &password).await.unwrap();
    assert_eq!(s.session(&token, 60).await.unwrap(), None);
    assert!(!s.create_session(&[11u8; 32], "nobody", "c").await.unwrap());
}

async fn session_expiry(s: &impl Operators) {
    s.create_operator("dave", Role::Viewer, "h").await.unwrap().unwrap();
    let token = [12u8; 32];
    assert!(s.create_session(&token, "dave", "c").await.unwrap());
    // Each use restarts the clock.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(s.session(&token, 2).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.session(&token, 2).await.unwrap(), None);
}

async fn audit(s: &impl Audit) {
    let entry = |operator: &str, action: &str, target: Option<&str>, outcome: Outcome| NewAuditEntry {
        operator: operator.into(),
        action: action.into(),
        target: target.map(str::to_owned),
        reason: Some("why".into()),
        outcome,
        address: Some("10.0.0.9".into()),
        detail: Some("{\"status\":403}".into()),
    };
    let mut ids = Vec::new();
    for (operator, action, target, outcome) in [
        ("alice", "login", None, Outcome::Ok),
        ("alice", "ban", Some("Bob"), Outcome::Ok),
        ("mod", "unban", Some("bob"), Outcome::Refused),
        ("cli:root", "kick", Some("eve"), Outcome::Failed),
        ("Alice", "mute", Some("eve"), Outcome::Ok),
    ] {
        ids.push(s.record(&entry(operator, action, target, outcome)).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let all = s.entries(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
    let first = all.last().unwrap();
    assert_eq!(
        (first.operator.as_str(), first.action.as_str(), first.target.as_deref(), first.outcome),
        ("alice", "login", None, Outcome::Ok)
    );
    assert_eq!((first.reason.as_deref(), first.address.as_deref()), (Some("why"), Some("10.0.0.9")));
    assert!((first.at - openchampps::store::unix_now()).abs() < 60);

    let query = |player: Option<&str>, operator: Option<&str>, before: Option<i64>, limit: u32| AuditQuery {
        player: player.map(str::to_owned),
        operator: operator.map(str::to_owned),
        before,
        limit,
    };
    let ids_of = |entries: Vec<AuditEntry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids_of(s.entries(&query(Some("BOB"), None, None, 10)).await.unwrap()), [ids[2], ids[1]]);
    assert_eq!(ids_of(s.entries(&query(None, Some("alice"), None, 10)).await.unwrap()), [ids[4], ids[1], ids[0]]);
    assert_eq!(ids_of(s.entries(&query(Some("eve"), Some("alice"), None, 10)).await.unwrap()), [ids[4]]);
    assert_eq!(ids_of(s.entries(&query(None, None, None, 2)).await.unwrap()), [ids[4], ids[3]]);
    assert_eq!(ids_of(s.entries(&query(None, None, Some(ids[3]), 2)).await.unwrap()), [ids[2], ids[1]]);
    assert_eq!(ids_of(s.entries(&query(None, None, Some(ids[0]), 2)).await.unwrap()), Vec::<i64>::new());
}
