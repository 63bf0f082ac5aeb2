//! TLS to the stores, against real servers: a private PostgreSQL with `ssl = on`
//! (its test databases refuse plain connections) and a private `redis-server` that
//! listens only on a TLS port, both with a certificate from a CA made for the test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::stores::{PrivatePostgres, PrivateRedis, PrivateRedisCluster, TestPki};
use crate::common::*;
use serde_json::Value;

/// `db_url` with libpq TLS parameters appended.
fn with_ssl(db_url: &str, mode: &str, rootcert: Option<&Path>) -> String {
    match rootcert {
        Some(ca) => format!("{db_url}?sslmode={mode}&sslrootcert={}", ca.display()),
        None => format!("{db_url}?sslmode={mode}"),
    }
}

/// The node's connections to its database as `pg_stat_ssl` sees them: (count, all TLS).
async fn node_pg_connections(pg: &PrivatePostgres, database: &str) -> (i64, bool) {
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1 AND a.application_name = 'openchampps'",
            &[&database],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn ready_body(node: &Endpoint) -> (u16, Value) {
    let (status, body) = http(node.public, "GET", "/ready", None, &[]).await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Register, log in again and resume with the token: PostgreSQL and Redis both used.
async fn players_are_served(node: &Endpoint) {
    let name = unique_name("tls");
    let token = node.client().await.signed_up(&name).await;
    assert_eq!(node.client().await.login(&name, PASSWORD).await["type"], "auth_success");
    assert_eq!(node.client().await.token_auth(&token).await["type"], "auth_success");
}

#[tokio::test]
async fn verified_tls_to_both_stores_serves_players() {
    let pki = TestPki::generate();
    let pg = PrivatePostgres::start_tls(&pki);
    let redis = PrivateRedis::start_tls(&pki);
    assert!(redis.url().starts_with("rediss://"));
    let cluster = Cluster::with_stores(&pg.url(), &redis.url()).await;
    let ca = pki.ca().display().to_string();
    let db_conn = with_ssl(&cluster.db_url, "verify-full", Some(&pki.ca()));
    // The migration connection in keyword/value form, with its own sslrootcert.
    let migration = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{ca}'",
        pg.port(),
        cluster.db_name
    );
    let node =
        cluster.node_with(&[("DB_CONN", &db_conn), ("DB_MIGRATION_URL", &migration), ("REDIS_CA_FILE", &ca)]).await;
    players_are_served(&node).await;
    let (status, ready) = ready_body(&node).await;
    assert_eq!((status, &ready["postgres"], &ready["redis"]), (200, &"up".into(), &"up".into()), "{ready}");

    // Encrypted, not merely allowed to be: every connection of the node is TLS (the
    // server would reject a plain one to this database anyway)…
    let (count, all_tls) = node_pg_connections(&pg, &cluster.db_name).await;
    assert!(count >= 1 && all_tls, "{count} node connections to PostgreSQL, all TLS: {all_tls}");
    // …and Redis has no plain port at all (`--port 0`): a plain PING gets nothing.
    let plain = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    plain.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    {
        use std::io::{Read, Write};
        let mut plain = plain;
        let _ = plain.write_all(b"PING\r\n");
        let mut reply = [0u8; 7];
        assert!(plain.read_exact(&mut reply).map(|_| &reply != b"+PONG\r\n").unwrap_or(true));
    }
    // A TLS client trusting the same CA sees the node among its clients.
    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(pki.ca()).unwrap()) };
    let client = redis::Client::build_with_tls(redis.url().as_str(), certs).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
    assert!(clients.lines().count() >= 2, "the node's Redis connections: {clients}");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", cluster.prefix)).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty(), "the node wrote its keys over TLS");
}

#[tokio::test]
async fn sslmode_require_encrypts_without_a_ca() {
    let pki = TestPki::generate();
    let pg = PrivatePostgres::start_tls(&pki);
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    // URL form for the pool, keyword form for the migrations; no sslrootcert in either.
    let db_conn = with_ssl(&cluster.db_url, "require", None);
    let migration =
        format!("host=127.0.0.1 port={} user=postgres dbname={} sslmode=require", pg.port(), cluster.db_name);
    let node = cluster.node_with(&[("DB_CONN", &db_conn), ("DB_MIGRATION_URL", &migration)]).await;
    players_are_served(&node).await;
    let (count, all_tls) = node_pg_connections(&pg, &cluster.db_name).await;
    assert!(count >= 1 && all_tls, "{count} node connections to PostgreSQL, all TLS: {all_tls}");
}

#[tokio::test]
async fn verify_full_with_another_ca_is_refused() {
    let (pki, other) = (TestPki::generate(), TestPki::generate());
    let pg = PrivatePostgres::start_tls(&pki);
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    let db_conn = with_ssl(&cluster.db_url, "verify-full", Some(&other.ca()));
    let node = cluster.spawn_node(&[("DB_CONN", &db_conn)]);
    let refused = eventually(Duration::from_secs(10), || async {
        node.log().contains("database not ready") && node.log().contains("certificate")
    })
    .await;
    assert!(refused, "no certificate error in the node's log:\n{}", node.log());
    let (status, ready) = ready_body(&node).await;
    assert_eq!((status, &ready["status"]), (503, &"starting".into()), "{ready}");
    assert_eq!(node_pg_connections(&pg, &cluster.db_name).await.0, 0);
}

/// `sslrootcert=system` alone means verify-full against the system's roots (libpq ≥ 16):
/// a server whose certificate no system root signed is refused, not merely encrypted to.
#[tokio::test]
async fn sslrootcert_system_checks_the_certificate() {
    let pki = TestPki::generate();
    let pg = PrivatePostgres::start_tls(&pki);
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    let node = cluster.spawn_node(&[("DB_CONN", &format!("{}?sslrootcert=system", cluster.db_url))]);
    let refused = eventually(Duration::from_secs(10), || async {
        node.log().contains("database not ready") && node.log().contains("UnknownIssuer")
    })
    .await;
    assert!(refused, "sslrootcert=system accepted a certificate no system root signed:\n{}", node.log());
    assert_eq!(ready_body(&node).await.0, 503);
    assert_eq!(node_pg_connections(&pg, &cluster.db_name).await.0, 0);
}

#[tokio::test]
async fn verify_ca_skips_the_host_name_that_verify_full_checks() {
    // The server's certificate names another host than the 127.0.0.1 the node dials.
    let pki = TestPki::generate_for(&["db.invalid"]);
    let pg = PrivatePostgres::start_tls(&pki);
    let cluster = Cluster::with_stores(&pg.url(), &redis_url()).await;
    let full = cluster.spawn_node(&[("DB_CONN", &with_ssl(&cluster.db_url, "verify-full", Some(&pki.ca())))]);
    let refused =
        eventually(Duration::from_secs(10), || async { full.log().contains("certificate not valid for name") }).await;
    assert!(refused, "verify-full accepted a certificate for another host:\n{}", full.log());
    assert_eq!(ready_body(&full).await.0, 503);
    drop(full);
    // The chain is good: verify-ca (and require with an sslrootcert, as in libpq) connect.
    for mode in ["verify-ca", "require"] {
        let node = cluster.node_with(&[("DB_CONN", &with_ssl(&cluster.db_url, mode, Some(&pki.ca())))]).await;
        players_are_served(&node).await;
    }
    // require with an sslrootcert checks the chain: another CA is refused.
    let other = TestPki::generate();
    let node = cluster.spawn_node(&[("DB_CONN", &with_ssl(&cluster.db_url, "require", Some(&other.ca())))]);
    let refused = eventually(Duration::from_secs(10), || async { node.log().contains("UnknownIssuer") }).await;
    assert!(refused, "require with an sslrootcert accepted another CA's certificate:\n{}", node.log());
}

#[tokio::test]
async fn rediss_with_another_ca_fails() {
    let (pki, other) = (TestPki::generate(), TestPki::generate());
    let redis = PrivateRedis::start_tls(&pki);
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis.url()).await;
    let ca = other.ca().display().to_string();
    let node = cluster.node_with(&[("REDIS_CA_FILE", &ca)]).await;
    // The node serves alone (PostgreSQL is fine) and reports Redis down: the handshake
    // fails on the certificate.
    let failed = eventually(Duration::from_secs(10), || async {
        ready_body(&node).await.1["redis"] == "down" && node.log().contains("Redis unreachable")
    })
    .await;
    assert!(failed, "Redis was not reported down:\n{}", node.log());
    assert!(node.log().contains("certificate"), "no certificate error in the node's log:\n{}", node.log());
    // The system roots do not know the test CA either.
    let node = cluster.node().await;
    assert!(
        eventually(Duration::from_secs(10), || async { ready_body(&node).await.1["redis"] == "down" }).await,
        "rediss:// trusted an unknown CA with the system roots"
    );
}

#[tokio::test]
async fn rediss_cluster_serves_players_over_tls() {
    let pki = TestPki::generate();
    let redis = PrivateRedisCluster::start_tls(3, 0, &pki);
    assert!(redis.url().starts_with("rediss+cluster://"));
    let cluster = Cluster::with_stores(&pg_admin_url(), &redis.url()).await;
    let ca = pki.ca().display().to_string();
    let (a, b) =
        (cluster.node_with(&[("REDIS_CA_FILE", &ca)]).await, cluster.node_with(&[("REDIS_CA_FILE", &ca)]).await);
    for node in [&a, &b] {
        let (status, ready) = ready_body(node).await;
        assert_eq!((status, &ready["redis"]), (200, &"up".into()), "{ready}");
    }
    // Every server listens only on TLS (`--port 0`, TLS bus): a token issued on one
    // node is accepted on the other, through the cluster's shards.
    let name = unique_name("tlsc");
    let token = a.client().await.signed_up(&name).await;
    assert_eq!(b.client().await.token_auth(&token).await["type"], "auth_success");
    assert_eq!(b.client().await.login(&name, PASSWORD).await["type"], "auth_success");
}

/// `openchampps` with `env` only, as a failing start: its exit code and stderr.
fn failed_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_openchampps"))
        .env_clear()
        .envs(env.iter().copied())
        .envs([("LISTEN_ADDR", "127.0.0.1:0"), ("METRICS_ADDR", "127.0.0.1:0")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_ca_files_stop_the_node_with_one_line() {
    let pki = TestPki::generate();
    let not_pem = pki.dir().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem = not_pem.display().to_string();
    let ca = pki.ca().display().to_string();
    let pg = format!("{}?sslmode=verify-full&sslrootcert=", pg_admin_url());
    for (env, says) in [
        (vec![("REDIS_URL", "rediss://127.0.0.1:6380/0"), ("REDIS_CA_FILE", "/nonexistent/ca.pem")], "REDIS_CA_FILE"),
        (vec![("REDIS_URL", "rediss://127.0.0.1:6380/0"), ("REDIS_CA_FILE", not_pem.as_str())], "REDIS_CA_FILE"),
        (vec![("REDIS_URL", "redis://127.0.0.1:6379/0"), ("REDIS_CA_FILE", ca.as_str())], "rediss://"),
        (vec![("DB_CONN", &format!("{pg}/nonexistent/ca.pem"))], "sslrootcert"),
        (vec![("DB_CONN", &format!("{pg}{not_pem}"))], "sslrootcert"),
        (vec![("DB_CONN", "host=127.0.0.1 sslmode=verify-full sslrootcert=/nonexistent/ca.pem")], "sslrootcert"),
        (vec![("DB_MIGRATION_URL", &format!("{pg}{not_pem}"))], "DB_MIGRATION_URL"),
        (vec![("DB_CONN", "postgres://127.0.0.1/x?sslmode=verify")], "sslmode"),
        // libpq ≥ 16: nothing weaker than verify-full with the system's roots.
        (vec![("DB_CONN", "postgres://127.0.0.1/x?sslmode=require&sslrootcert=system")], r#"weak sslmode "require""#),
        (vec![("DB_CONN", "host=127.0.0.1 sslmode=prefer sslrootcert=system")], r#"weak sslmode "prefer""#),
        (vec![("DB_MIGRATION_URL", "postgres://127.0.0.1/x?sslmode=verify-ca&sslrootcert=system")], "weak sslmode"),
    ] {
        let (code, stderr) = failed_start(&env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: not one line: {stderr}");
        assert!(stderr.contains(says), "{env:?}: {stderr}");
    }
}
