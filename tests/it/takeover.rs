//! Taking over a Go OpenChampPS database in place (`src/store/takeover.rs`): each test
//! builds the Go server's schema with its own DDL in a database of its own, fills it
//! as the Go server did, and starts real node processes (or `openchampps migrate`)
//! on it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// The Go server's schema, as its `config.SetupDatabase` creates it.
const GO_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (id SERIAL PRIMARY KEY, username VARCHAR(50) UNIQUE NOT NULL,
  password_hash VARCHAR(255) NOT NULL, email VARCHAR(255) UNIQUE,
  created_at TIMESTAMP NOT NULL DEFAULT NOW(), last_login TIMESTAMP);
CREATE TABLE IF NOT EXISTS auth_tokens (id SERIAL PRIMARY KEY, user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
  token VARCHAR(255) UNIQUE NOT NULL, ip_address VARCHAR(50), created_at TIMESTAMP NOT NULL DEFAULT NOW(),
  expires_at TIMESTAMP NOT NULL, last_used_at TIMESTAMP, is_revoked BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX IF NOT EXISTS idx_auth_tokens_token ON auth_tokens(token);
CREATE INDEX IF NOT EXISTS idx_auth_tokens_user_id ON auth_tokens(user_id);
";

/// Test vectors from a real bcrypt: Python's `bcrypt` 5.0,
/// `bcrypt.hashpw(password, bcrypt.gensalt(rounds=10))` (`$2b$`) and
/// `bcrypt.gensalt(rounds=10, prefix=b"2a")` (`$2a$`, what Go's
/// `bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)` writes).
const BCRYPT_2B: &str = "$2b$10$T3QydkJ4gud6QPY6HWa9ReDeUqiCjCjPPsB2JJpfE1icCLQGnZ9Au";
const BCRYPT_2B_PASSWORD: &str = "securePassword123";
const BCRYPT_2A: &str = "$2a$10$yvbmJArlf4MFo/xU7Jbdse84UrIPjPGJrd8GV4Yvc8QJZTL/doVOu";
const BCRYPT_2A_PASSWORD: &str = "oldGoPassword!42";

/// Measured on the 2-core development machine with this file's other tests running
/// beside it: `openchampps migrate` on 100,000 users and 200,001 tokens takes 2.1–3.5 s
/// (median of 5 runs 2.7 s; the conversion's own transaction is all but 0.1 s of it).
const BIG_TAKEOVER_BOUND: Duration = Duration::from_secs(15);

/// A database of this test's own with the Go server's schema, and a client on it.
async fn go_database() -> (Cluster, tokio_postgres::Client) {
    let cluster = Cluster::new().await;
    let db = cluster.psql().await;
    db.batch_execute(GO_SCHEMA).await.unwrap();
    (cluster, db)
}

/// What `openchampps` printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `openchampps args…` with the cluster's node environment until it exits.
async fn openchampps(cluster: &Cluster, args: &[&str]) -> Run {
    let env = cluster.env();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_openchampps"))
            .args(&args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openchampps");
        let read = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = read(Box::new(child.stdout.take().unwrap()));
        let stderr = read(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("openchampps {args:?} did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let run = Run { code: status.code(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
        eprintln!("openchampps {args:?} exited {:?}\n{}{}", run.code, run.stdout, run.stderr);
        run
    })
    .await
    .unwrap()
}

/// Everything in the database's public schema, rows and shape, as text: equal
/// snapshots mean nothing changed.
async fn snapshot(db: &tokio_postgres::Client) -> String {
    let rows = db
        .query(
            "SELECT 'row users ' || u::text FROM users u \
             UNION ALL SELECT 'row auth_tokens ' || t::text FROM auth_tokens t \
             UNION ALL SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public' \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut text: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    text.push(shape(db).await);
    text.join("\n")
}

/// The schema of `users` and `auth_tokens`: columns, indexes, constraints, sequences.
async fn shape(db: &tokio_postgres::Client) -> String {
    let rows = db
        .query(
            "SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default) \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name IN ('users', 'auth_tokens') \
             UNION ALL SELECT 'index ' || indexdef FROM pg_indexes \
             WHERE schemaname = 'public' AND tablename IN ('users', 'auth_tokens') \
             UNION ALL SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) \
             FROM pg_constraint WHERE conrelid IN ('users'::regclass, 'auth_tokens'::regclass) \
             UNION ALL SELECT format('sequence %s %s %s', sequencename, data_type, max_value) FROM pg_sequences \
             WHERE schemaname = 'public' \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

/// The node's migrations (`migrations/V*.sql`): each is recorded once when applied.
fn migration_files() -> i64 {
    let dir = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap();
    dir.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".sql")).count() as i64
}

async fn migrations_recorded(db: &tokio_postgres::Client) -> Option<i64> {
    let exists: bool =
        db.query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[]).await.unwrap().get(0);
    if !exists {
        return None;
    }
    Some(db.query_one("SELECT count(*) FROM refinery_schema_history", &[]).await.unwrap().get(0))
}

async fn stored_hash(db: &tokio_postgres::Client, username: &str) -> String {
    db.query_one("SELECT password_hash FROM users WHERE username = $1", &[&username]).await.unwrap().get(0)
}

/// Median time of a failed login, alternating between two users so machine noise
/// hits both alike.
async fn median_failed_logins(client: &mut Client, users: [&str; 2]) -> [f64; 2] {
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..7 {
        for (i, user) in users.iter().enumerate() {
            let start = Instant::now();
            assert_eq!(client.login(user, "wrongPassword").await, auth_error("Invalid username or password"));
            samples[i].push(start.elapsed().as_secs_f64());
        }
    }
    samples.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    })
}

#[tokio::test]
async fn old_passwords_log_in_and_are_rehashed_to_argon2id() {
    let (cluster, db) = go_database().await;
    db.execute(
        "INSERT INTO users (username, password_hash, email) VALUES ('Jane.Go', $1, 'jane@example.org'), \
         ('old.bob', $2, NULL)",
        &[&BCRYPT_2B, &BCRYPT_2A],
    )
    .await
    .unwrap();
    let node = cluster.node_with(&[("LOGIN_FREE_FAILURES", "30")]).await;
    let mut client = node.client().await;

    // A wrong password against a bcrypt row answers like any wrong password, and
    // leaves the hash alone.
    assert_eq!(client.login("old.bob", "wrongPassword").await, auth_error("Invalid username or password"));
    assert_eq!(stored_hash(&db, "old.bob").await, BCRYPT_2A);
    // An unknown user costs a bcrypt verification too while bcrypt rows are being
    // verified (argon2id at the test cost would take ~1 ms against bcrypt's ~50 ms).
    let [known, unknown] = median_failed_logins(&mut client, ["old.bob", &unique_name("nobody")]).await;
    let ratio = unknown / known;
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:.4}s vs known bcrypt {known:.4}s");

    // The right passwords log in (names in any case), and the rows become argon2id.
    for (login_as, account, password, old) in
        [("jane.go", "Jane.Go", BCRYPT_2B_PASSWORD, BCRYPT_2B), ("OLD.BOB", "old.bob", BCRYPT_2A_PASSWORD, BCRYPT_2A)]
    {
        let reply = client.login(login_as, password).await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
        assert_eq!(reply["payload"]["username"], account);
        let rehashed = stored_hash(&db, account).await;
        assert_ne!(rehashed, old);
        assert!(rehashed.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{rehashed}");
        // And they keep working with the new hash.
        assert_eq!(node.client().await.login(account, password).await["type"], "auth_success");
        assert_eq!(
            node.client().await.login(account, "wrongPassword").await,
            auth_error("Invalid username or password")
        );
    }
}

#[tokio::test]
async fn old_tokens_work_on_any_node_until_their_original_expiry() {
    let cluster = Cluster::new().await;
    // The Go server wrote NOW() into `timestamp` columns in the server's time zone:
    // here New York. Read as UTC, a token good for another hour would be long expired.
    cluster
        .psql()
        .await
        .batch_execute(&format!("ALTER DATABASE {} SET timezone = 'America/New_York'", cluster.db_name))
        .await
        .unwrap();
    let db = cluster.psql().await;
    db.batch_execute(GO_SCHEMA).await.unwrap();
    db.execute("INSERT INTO users (username, password_hash) VALUES ('Jane.Go', $1)", &[&BCRYPT_2B]).await.unwrap();
    let token = || uuid::Uuid::new_v4().to_string();
    let (live, brief, expired, revoked, orphaned) = (token(), token(), token(), token(), token());
    db.execute(
        "INSERT INTO auth_tokens (user_id, token, ip_address, expires_at, is_revoked) VALUES \
           (1, $1, '203.0.113.7', localtimestamp + interval '1 hour', false), \
           (1, $2, NULL, localtimestamp + interval '8 seconds', false), \
           (1, $3, NULL, localtimestamp - interval '1 hour', false), \
           (1, $4, NULL, localtimestamp + interval '1 day', true), \
           (NULL, $5, NULL, localtimestamp + interval '1 day', false)",
        &[&live, &brief, &expired, &revoked, &orphaned],
    )
    .await
    .unwrap();

    // Two nodes start together: one converts, the other waits on the migration lock.
    let (a, b) = (cluster.spawn_node(&[]), cluster.spawn_node(&[]));
    a.wait_ready().await;
    b.wait_ready().await;
    assert_eq!(migrations_recorded(&db).await, Some(migration_files()));

    let mut jane = b.client().await;
    assert_eq!(
        jane.token_auth(&live).await,
        json!({"type": "auth_success", "payload": {"username": "Jane.Go", "token": live}})
    );
    // The session's display name is the account name.
    jane.send(json!({"type": "global_chat", "payload": "back from Go"})).await;
    assert_eq!(jane.recv().await, chat("global_chat", "Jane.Go", "Jane.Go", "back from Go"));
    // On the other node too, in whatever case the client sends it.
    assert_eq!(a.client().await.token_auth(&live.to_uppercase()).await["type"], "auth_success");

    let refused = auth_error("Invalid or expired token");
    for old in [&expired, &revoked, &orphaned] {
        assert_eq!(a.client().await.token_auth(old).await, refused);
        assert_eq!(b.client().await.token_auth(old).await, refused);
    }

    // The expiry is the one the Go server set, read in the database's time zone.
    let left = seconds_left(&db, &live).await;
    assert!((3500.0..3601.0).contains(&left), "the live token has {left} s left, not about an hour");

    // A token good for seconds works until then, and not after, on either node.
    assert_eq!(a.client().await.token_auth(&brief).await["type"], "auth_success");
    let left = seconds_left(&db, &brief).await;
    assert!(left < 9.0, "the brief token has {left} s left");
    tokio::time::sleep(Duration::from_secs_f64(left.max(0.0) + 1.1)).await;
    assert_eq!(a.client().await.token_auth(&brief).await, refused);
    assert_eq!(b.client().await.token_auth(&brief).await, refused);
}

#[tokio::test]
async fn rows_that_cannot_be_converted_refuse_the_start_and_change_nothing() {
    let (cluster, db) = go_database().await;
    // Two tokens that only the case tells apart would have one hash.
    let twin = uuid::Uuid::new_v4().to_string();
    db.batch_execute(&format!(
        "INSERT INTO users (username, password_hash, email) VALUES \
           ('Jane', '{BCRYPT_2B}', NULL), ('JANE', '{BCRYPT_2B}', NULL), \
           ('bob', '{BCRYPT_2B}', 'Bob@Example.org'), ('bobby', '{BCRYPT_2B}', 'bob@example.org'), \
           ('   ', '{BCRYPT_2B}', NULL), ('fine.user', '{BCRYPT_2A}', 'fine@example.org'); \
         INSERT INTO auth_tokens (user_id, token, expires_at) VALUES \
           (6, '{}', localtimestamp + interval '7 days'), \
           (6, '{twin}', localtimestamp + interval '7 days'), (6, '{}', localtimestamp + interval '7 days')",
        uuid::Uuid::new_v4(),
        twin.to_uppercase()
    ))
    .await
    .unwrap();
    let before = snapshot(&db).await;

    let check = openchampps(&cluster, &["migrate", "--check"]).await;
    assert_ne!(check.code, Some(0));
    assert!(check.stdout.contains("users: 6 (6 bcrypt, 0 argon2id, 0 in no known format)"), "{}", check.stdout);
    let refusal = check.stderr.trim_end();
    assert_eq!(refusal.lines().count(), 1, "not one line: {refusal}");
    assert!(
        refusal.starts_with(
            "openchampps: cannot take over the Go server's database (nothing was changed): 2 users whose \
             usernames differ only in case from another's, 2 users whose emails differ only in case from \
             another's, 1 user whose username is empty or only whitespace, 2 tokens that differ only in case \
             from another; "
        ),
        "{refusal}"
    );

    // A node refuses to start with the same line, and so does `migrate`.
    let serve = openchampps(&cluster, &[]).await;
    assert_ne!(serve.code, Some(0));
    assert_eq!(serve.stderr.trim_end(), refusal);
    assert!(!serve.stdout.contains("ready"), "{}", serve.stdout);
    let migrate = openchampps(&cluster, &["migrate"]).await;
    assert_ne!(migrate.code, Some(0));
    assert_eq!(migrate.stderr.trim_end(), refusal);

    assert_eq!(snapshot(&db).await, before, "the refused takeover changed the database");
    assert_eq!(migrations_recorded(&db).await, None);

    // The query in the message lists exactly the rows at fault.
    let query = refusal.split_once("list them with: ").expect("a query in the message").1;
    let listed = db.query(query, &[]).await.unwrap();
    let listed: Vec<(String, i32)> = listed.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        listed,
        [
            ("auth_tokens: token differs only in case", 2),
            ("auth_tokens: token differs only in case", 3),
            ("blank username", 5),
            ("email differs only in case", 3),
            ("email differs only in case", 4),
            ("username differs only in case", 1),
            ("username differs only in case", 2),
        ]
        .map(|(p, id)| (p.to_owned(), id))
    );

    // Once fixed, the same database is taken over.
    db.batch_execute(
        "UPDATE users SET username = 'Jane2' WHERE id = 2; UPDATE users SET email = NULL WHERE id = 4; \
         UPDATE users SET username = 'blank' WHERE id = 5; DELETE FROM auth_tokens WHERE id = 3",
    )
    .await
    .unwrap();
    let node = cluster.node().await;
    assert_eq!(node.client().await.login("jane2", BCRYPT_2B_PASSWORD).await["type"], "auth_success");
    assert_eq!(node.client().await.token_auth(&twin).await["payload"]["username"], "fine.user");
}

#[tokio::test]
async fn check_changes_nothing_and_migrate_keeps_every_row() {
    let (cluster, db) = go_database().await;
    use argon2::PasswordHasher;
    let argon2 = argon2::Argon2::default().hash_password(b"argonPassword1").unwrap().to_string();
    db.execute(
        "INSERT INTO users (username, password_hash, email, created_at, last_login) VALUES \
           ('Jane.Go', $1, 'Jane@Example.org', '2024-03-01 12:00:00.123456', '2025-01-02 03:04:05'), \
           ('old.bob', $2, NULL, '2024-03-02 08:30:00', NULL), \
           ('argon.carol', $3, 'carol@example.org', DEFAULT, localtimestamp - interval '1 hour')",
        &[&BCRYPT_2B, &BCRYPT_2A, &argon2],
    )
    .await
    .unwrap();
    let tokens: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    db.execute(
        "INSERT INTO auth_tokens (user_id, token, ip_address, created_at, expires_at, last_used_at, is_revoked) VALUES \
           (1, $1, '198.51.100.1', '2025-01-02 03:04:05', localtimestamp + interval '6 days', localtimestamp, false), \
           (3, $2, NULL, DEFAULT, localtimestamp + interval '1 day', NULL, false), \
           (2, $3, '2001:db8::1', '2024-03-02 08:30:00', '2024-03-09 08:30:00', '2024-03-03 10:00:00', false), \
           (1, $4, NULL, DEFAULT, localtimestamp + interval '5 days', NULL, true), \
           (NULL, $5, NULL, DEFAULT, localtimestamp + interval '5 days', NULL, false)",
        &[&tokens[0], &tokens[1], &tokens[2], &tokens[3], &tokens[4]],
    )
    .await
    .unwrap();
    let before = snapshot(&db).await;

    // The dry run reports and changes nothing.
    let check = openchampps(&cluster, &["migrate", "--check"]).await;
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    for line in [
        "users: 3 (2 bcrypt, 1 argon2id, 0 in no known format)",
        "tokens: 5 (2 live, 1 expired, 1 revoked, 1 orphaned)",
        "checks: 0 usernames and 0 emails differ only in case from another, 0 usernames are blank, 0 tokens differ \
         only in case from another",
        "timestamps: read as local times in TimeZone 'Etc/UTC'",
        "the takeover would succeed; nothing was changed",
    ] {
        assert!(check.stdout.contains(line), "no {line:?} in:\n{}", check.stdout);
    }
    assert_eq!(snapshot(&db).await, before, "--check changed the database");

    // What every row must still say afterwards, computed from the Go rows (times read
    // in the database's time zone, tokens as the SHA-256 of their lower-case text).
    let users_sql = "SELECT id::bigint, username::text, password_hash::text, email::text, \
                            extract(epoch FROM created_at::timestamptz)::float8, \
                            extract(epoch FROM last_login::timestamptz)::float8 FROM users ORDER BY id";
    let tokens_sql = |hash: &str, revoked: &str| {
        format!(
            "SELECT id::bigint, user_id::bigint, {hash}, ip_address::text, \
                    extract(epoch FROM created_at::timestamptz)::float8, \
                    extract(epoch FROM expires_at::timestamptz)::float8, \
                    extract(epoch FROM last_used_at::timestamptz)::float8, {revoked} \
             FROM auth_tokens WHERE user_id IS NOT NULL ORDER BY id"
        )
    };
    type UserRow = (i64, String, String, Option<String>, f64, Option<f64>);
    type TokenRow = (i64, i64, Vec<u8>, Option<String>, f64, f64, Option<f64>, bool);
    let users = |rows: Vec<tokio_postgres::Row>| -> Vec<UserRow> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect()
    };
    let token_rows = |rows: Vec<tokio_postgres::Row>| -> Vec<TokenRow> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7))).collect()
    };
    let go_users = users(db.query(users_sql, &[]).await.unwrap());
    let go_tokens =
        token_rows(db.query(&tokens_sql("sha256(convert_to(lower(token), 'UTF8'))", "is_revoked"), &[]).await.unwrap());
    assert_eq!((go_users.len(), go_tokens.len()), (3, 4));

    let migrate = openchampps(&cluster, &["migrate"]).await;
    assert_eq!(migrate.code, Some(0), "{}", migrate.stderr);
    assert!(migrate.stdout.contains("took over the Go server's database"), "{}", migrate.stdout);
    assert_eq!(migrations_recorded(&db).await, Some(migration_files()));
    assert_eq!(users(db.query(users_sql, &[]).await.unwrap()), go_users);
    assert_eq!(
        token_rows(db.query(&tokens_sql("token_hash", "revoked_at IS NOT NULL"), &[]).await.unwrap()),
        go_tokens
    );
    // Revoked at the takeover; no raw token anywhere in the table.
    let revoked: bool = db
        .query_one("SELECT revoked_at > now() - interval '1 minute' FROM auth_tokens WHERE revoked_at IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    let dump: Vec<String> =
        db.query("SELECT t::text FROM auth_tokens t", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for token in &tokens {
        assert!(!dump.iter().any(|row| row.contains(token.as_str())), "raw token {token} left in {dump:?}");
    }

    // The schema is exactly the one the node makes on an empty database.
    let fresh = Cluster::new().await;
    assert_eq!(openchampps(&fresh, &["migrate"]).await.code, Some(0));
    assert_eq!(shape(&db).await, shape(&fresh.psql().await).await);

    // A second run does nothing.
    let converted = snapshot(&db).await;
    let again = openchampps(&cluster, &["migrate"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(!again.stdout.contains("took over"), "{}", again.stdout);
    assert_eq!(snapshot(&db).await, converted);
    let check = openchampps(&cluster, &["migrate", "--check"]).await;
    assert_eq!(check.code, Some(0));
    assert!(check.stdout.contains("already has the node's schema"), "{}", check.stdout);
}

#[tokio::test]
async fn a_hundred_thousand_users_and_two_hundred_thousand_tokens_convert_in_seconds() {
    let (cluster, db) = go_database().await;
    let known = uuid::Uuid::new_v4().to_string();
    // Loaded as a restore would: every user_id exists by construction, so the foreign
    // key's per-row check is skipped (session_replication_role) to keep the test short.
    let filled = Instant::now();
    db.batch_execute(&format!(
        "INSERT INTO users (username, password_hash, email, created_at, last_login) \
           SELECT 'player' || i, '{BCRYPT_2B}', CASE WHEN i % 2 = 0 THEN 'player' || i || '@example.org' END, \
                  localtimestamp - i * interval '1 minute', \
                  CASE WHEN i % 3 = 0 THEN localtimestamp - i * interval '1 second' END \
           FROM generate_series(1, 100000) AS i; \
         SET session_replication_role = replica; \
         INSERT INTO auth_tokens (user_id, token, ip_address, created_at, expires_at, last_used_at, is_revoked) \
           SELECT CASE WHEN i % 1000 = 0 THEN NULL ELSE i % 100000 + 1 END, \
                  lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'), \
                  '192.0.2.' || i % 250, localtimestamp - interval '1 day', \
                  localtimestamp + (i % 14 - 4) * interval '1 day', \
                  CASE WHEN i % 2 = 0 THEN localtimestamp END, i % 50 = 0 \
           FROM generate_series(1, 200000) AS i; \
         RESET session_replication_role; \
         INSERT INTO auth_tokens (user_id, token, expires_at) VALUES (1, '{known}', localtimestamp + interval '7 days'); \
         ANALYZE users; ANALYZE auth_tokens"
    ))
    .await
    .unwrap();
    eprintln!("filled the Go tables in {:.2} s", filled.elapsed().as_secs_f64());

    let check = openchampps(&cluster, &["migrate", "--check"]).await;
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(check.stdout.contains("users: 100000 (100000 bcrypt"), "{}", check.stdout);
    assert!(check.stdout.contains("tokens: 200001 ("), "{}", check.stdout);

    let start = Instant::now();
    let migrate = openchampps(&cluster, &["migrate"]).await;
    let took = start.elapsed();
    assert_eq!(migrate.code, Some(0), "{}", migrate.stderr);
    println!("openchampps migrate on 100,000 users and 200,001 tokens took {:.2} s", took.as_secs_f64());
    assert!(took < BIG_TAKEOVER_BOUND, "the takeover took {took:?}, over {BIG_TAKEOVER_BOUND:?}");
    let counts =
        db.query_one("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM auth_tokens)", &[]).await.unwrap();
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (100_000, 200_001 - 200));

    // A node starting on it now changes nothing, and serves the old accounts.
    let converted = shape(&db).await;
    let node = cluster.node().await;
    assert_eq!(migrations_recorded(&db).await, Some(migration_files()));
    assert_eq!(shape(&db).await, converted);
    let reply = node.client().await.token_auth(&known).await;
    assert_eq!(reply, json!({"type": "auth_success", "payload": {"username": "player1", "token": known}}));
    assert_eq!(node.client().await.login("player2", BCRYPT_2B_PASSWORD).await["type"], "auth_success");
}

/// Seconds until `token` expires, as stored.
async fn seconds_left(db: &tokio_postgres::Client, token: &str) -> f64 {
    db.query_one(
        "SELECT extract(epoch FROM expires_at - now())::float8 FROM auth_tokens \
         WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
        &[&token],
    )
    .await
    .unwrap()
    .get(0)
}

/// `migrate --check` lists the Go usernames that are not stable identifiers by the
/// rule of registration, and says what the takeover does with them: keeps them, as
/// stored, loginable as stored.
#[tokio::test]
async fn check_lists_usernames_that_are_not_stable_identifiers() {
    let (cluster, db) = go_database().await;
    let unstable = ["cafe\u{301}", "evil\u{202E}gnp", " padded", "tab\tname", "zero\u{200B}width"];
    for name in unstable.iter().chain(&["plain.user", "Ünïcödé"]) {
        db.execute("INSERT INTO users (username, password_hash) VALUES ($1, $2)", &[name, &BCRYPT_2B]).await.unwrap();
    }
    let check = openchampps(&cluster, &["migrate", "--check"]).await;
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(
        check.stdout.contains("users whose usernames are not stable identifiers (registration would refuse or re-spell them), kept as stored"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("works: 5\n"), "{}", check.stdout);
    for name in unstable {
        assert!(check.stdout.contains(&format!("{name:?}")), "{name:?} not listed:\n{}", check.stdout);
    }
    assert!(check.stdout.contains("(not in Unicode NFC)"), "{}", check.stdout);
    for stable in ["plain.user", "Ünïcödé"] {
        assert!(!check.stdout.contains(&format!("{stable:?}")), "{stable} listed:\n{}", check.stdout);
    }

    // As said: taken over as stored, and the name as stored logs in.
    assert_eq!(openchampps(&cluster, &["migrate"]).await.code, Some(0));
    let node = cluster.node().await;
    let reply = node.client().await.login("cafe\u{301}", BCRYPT_2B_PASSWORD).await;
    assert_eq!(
        (reply["type"].as_str(), reply["payload"]["username"].as_str()),
        (Some("auth_success"), Some("cafe\u{301}"))
    );
}
