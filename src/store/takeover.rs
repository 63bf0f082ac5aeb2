//! Taking over a Go OpenChampPS database in place, so that its accounts keep their
//! passwords and its players keep their tokens.
//!
//! The Go server made `users` and `auth_tokens` with `SERIAL` ids, `VARCHAR` text,
//! `TIMESTAMP` (without time zone) times, raw tokens in `auth_tokens.token` and an
//! `is_revoked` flag. [`take_over`] recognises that schema (a `token` column, no
//! `token_hash`, no migration history) and converts it, in one transaction under the
//! migration lock and before the node's own migrations run, into exactly what
//! `migrations/V1__users_and_tokens.sql` makes: tokens become the SHA-256 of their
//! lower-case text, `is_revoked` becomes `revoked_at`, times become `timestamptz`
//! (read as local times of the session's `TimeZone`, the database's setting unless
//! the connection URL overrides it), ids `bigint`, text `text`, and the indexes and
//! constraints the node's own. V1's `IF NOT EXISTS` statements then find everything
//! in place and refinery records V1. Bcrypt password hashes stay as they are: the
//! hash pool verifies them and a login replaces each with argon2id.
//!
//! What the node's constraints would reject (names or emails that differ only in
//! case, blank names) is refused before anything changes, with one line that says
//! how many and gives a query listing them. `openchampps migrate --check` reports
//! all of it without changing anything; `openchampps migrate` applies it.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, IsolationLevel};

use super::StoreResult;
use crate::error::StoreError;
use crate::names::{unstable_username, MIN_USERNAME_CHARS};

/// How long the takeover waits for its exclusive lock on the two tables: a Go server
/// still running (inside a transaction) would otherwise hold every node's start-up.
const LOCK_TIMEOUT: &str = "10s";

/// What a database holds, as far as the takeover is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No `auth_tokens` table: the node's migrations create the schema.
    Empty,
    /// The node's own schema (its migration history, or a `token_hash` column).
    Node,
    /// The Go server's schema: `auth_tokens.token`, no `token_hash`, no migration history.
    Go,
}

/// Which of the three a database is (tables found through the session's `search_path`,
/// as the migrations' unqualified statements find them).
pub async fn detect(client: &impl GenericClient) -> Result<Found, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL, \
                    to_regclass('auth_tokens') IS NOT NULL, \
                    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('auth_tokens') \
                            AND attname = 'token' AND NOT attisdropped), \
                    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('auth_tokens') \
                            AND attname = 'token_hash' AND NOT attisdropped)",
            &[],
        )
        .await?;
    let (history, tokens, raw, hashed): (bool, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    Ok(if history || hashed {
        Found::Node
    } else if !tokens {
        Found::Empty
    } else if raw {
        Found::Go
    } else {
        Found::Node
    })
}

/// What a Go database holds and what the takeover would do with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    pub users: i64,
    /// Password hashes in bcrypt (`$2a$`, `$2b$`, `$2y$`), rehashed at each next login.
    pub bcrypt: i64,
    pub argon2: i64,
    /// Password hashes in neither format: those accounts cannot log in.
    pub unknown_hashes: i64,
    /// Names shorter than the [`MIN_USERNAME_CHARS`] `login` requires: their tokens still work.
    pub short_usernames: i64,
    pub tokens: i64,
    pub live: i64,
    pub expired: i64,
    pub revoked: i64,
    /// Tokens with no user (`user_id` NULL): useless, deleted.
    pub orphaned: i64,
    /// Accounts whose usernames equal another's regardless of case.
    pub username_collisions: i64,
    pub email_collisions: i64,
    /// Accounts whose username is empty or only whitespace.
    pub blank_usernames: i64,
    /// Tokens (with a user) whose text equals another's regardless of case: they
    /// would have the same hash.
    pub token_collisions: i64,
    /// The session's `TimeZone`: the Go server's times are read as local times there.
    pub time_zone: String,
}

/// Reads what the Go tables hold, one query per phase; `progress` gets a line per
/// phase with its row counts and elapsed time.
pub async fn survey(
    client: &impl GenericClient,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Survey, tokio_postgres::Error> {
    let mut s = Survey::default();
    let start = Instant::now();
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), \
                        count(*) FILTER (WHERE char_length(password_hash) = 60 AND (password_hash LIKE '$2a$%' \
                                         OR password_hash LIKE '$2b$%' OR password_hash LIKE '$2y$%')), \
                        count(*) FILTER (WHERE password_hash LIKE '$argon2%'), \
                        count(*) FILTER (WHERE username ~ '[^[:space:]]' AND char_length(username) < {MIN_USERNAME_CHARS}), \
                        current_setting('TimeZone') \
                 FROM users"
            ),
            &[],
        )
        .await?;
    (s.users, s.bcrypt, s.argon2, s.short_usernames, s.time_zone) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    s.unknown_hashes = s.users - s.bcrypt - s.argon2;
    progress(&format!(
        "users: {} ({} bcrypt, {} argon2id, {} in no known format) [{:.2} s]",
        s.users,
        s.bcrypt,
        s.argon2,
        s.unknown_hashes,
        start.elapsed().as_secs_f64()
    ));

    let start = Instant::now();
    let row = client
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE user_id IS NULL), \
                    count(*) FILTER (WHERE user_id IS NOT NULL AND is_revoked), \
                    count(*) FILTER (WHERE user_id IS NOT NULL AND NOT is_revoked \
                                     AND expires_at::timestamptz <= now()), \
                    count(*) FILTER (WHERE user_id IS NOT NULL AND NOT is_revoked \
                                     AND expires_at::timestamptz > now()) \
             FROM auth_tokens",
            &[],
        )
        .await?;
    (s.tokens, s.orphaned, s.revoked, s.expired, s.live) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    progress(&format!(
        "tokens: {} ({} live, {} expired, {} revoked, {} orphaned) [{:.2} s]",
        s.tokens,
        s.live,
        s.expired,
        s.revoked,
        s.orphaned,
        start.elapsed().as_secs_f64()
    ));

    // Tokens that are all lower case already (as the Go server made them) cannot
    // collide: the case-insensitive grouping is only needed when some are not.
    let start = Instant::now();
    let row = client
        .query_one(
            "SELECT \
               (SELECT coalesce(sum(n), 0)::bigint FROM \
                  (SELECT count(*) AS n FROM users GROUP BY lower(username) HAVING count(*) > 1) g), \
               (SELECT coalesce(sum(n), 0)::bigint FROM \
                  (SELECT count(*) AS n FROM users WHERE email IS NOT NULL \
                   GROUP BY lower(email) HAVING count(*) > 1) g), \
               (SELECT count(*) FROM users WHERE username !~ '[^[:space:]]'), \
               CASE WHEN EXISTS (SELECT 1 FROM auth_tokens \
                                 WHERE token COLLATE \"C\" <> lower(token COLLATE \"C\")) \
               THEN (SELECT coalesce(sum(n), 0)::bigint FROM \
                       (SELECT count(*) AS n FROM auth_tokens WHERE user_id IS NOT NULL \
                        GROUP BY lower(token COLLATE \"C\") HAVING count(*) > 1) g) \
               ELSE 0 END",
            &[],
        )
        .await?;
    (s.username_collisions, s.email_collisions, s.blank_usernames, s.token_collisions) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    progress(&format!(
        "checks: {} usernames and {} emails differ only in case from another, {} usernames are blank, \
         {} tokens differ only in case from another [{:.2} s]",
        s.username_collisions,
        s.email_collisions,
        s.blank_usernames,
        s.token_collisions,
        start.elapsed().as_secs_f64()
    ));
    Ok(s)
}

/// One kind of row the takeover cannot convert: how to say it and how to list it.
struct Problem {
    count: i64,
    one: &'static str,
    many: &'static str,
    /// A query of `(problem, id, value)` rows.
    query: &'static str,
}

impl Survey {
    fn problems(&self) -> [Problem; 4] {
        [
            Problem {
                count: self.username_collisions,
                one: "user whose username differs only in case from another's",
                many: "users whose usernames differ only in case from another's",
                query: "SELECT 'username differs only in case' AS problem, id, username AS value FROM users \
                        WHERE lower(username) IN (SELECT lower(username) FROM users GROUP BY 1 HAVING count(*) > 1)",
            },
            Problem {
                count: self.email_collisions,
                one: "user whose email differs only in case from another's",
                many: "users whose emails differ only in case from another's",
                query: "SELECT 'email differs only in case', id, email FROM users WHERE lower(email) IN \
                        (SELECT lower(email) FROM users WHERE email IS NOT NULL GROUP BY 1 HAVING count(*) > 1)",
            },
            Problem {
                count: self.blank_usernames,
                one: "user whose username is empty or only whitespace",
                many: "users whose usernames are empty or only whitespace",
                query: "SELECT 'blank username', id, username FROM users WHERE username !~ '[^[:space:]]'",
            },
            Problem {
                count: self.token_collisions,
                one: "token that differs only in case from another",
                many: "tokens that differ only in case from another",
                query: "SELECT 'auth_tokens: token differs only in case', id, token FROM auth_tokens \
                        WHERE user_id IS NOT NULL AND lower(token COLLATE \"C\") IN (SELECT lower(token COLLATE \"C\") FROM auth_tokens \
                        WHERE user_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1)",
            },
        ]
    }

    /// The one-line reason the takeover must not go ahead, if there is one: how many
    /// rows of each kind, and one query that lists them all.
    pub fn refusal(&self) -> Option<String> {
        let found: Vec<Problem> = self.problems().into_iter().filter(|p| p.count > 0).collect();
        if found.is_empty() {
            return None;
        }
        let counts: Vec<String> =
            found.iter().map(|p| format!("{} {}", p.count, if p.count == 1 { p.one } else { p.many })).collect();
        let union: Vec<&str> = found.iter().map(|p| p.query).collect();
        Some(format!(
            "cannot take over the Go server's database (nothing was changed): {}; rename or remove them and start \
             again; list them with: SELECT * FROM ({}) AS p ORDER BY problem, lower(value), id;",
            counts.join(", "),
            union.join(" UNION ALL ")
        ))
    }
}

/// Converts the Go server's schema, when `client`'s database has it, in one
/// transaction; does nothing on any other database. The caller holds the migration
/// lock. A database that cannot be converted as it is gives [`StoreError::Refused`]
/// and is left unchanged.
pub async fn take_over(client: &mut Client) -> StoreResult<()> {
    if detect(&*client).await? != Found::Go {
        return Ok(());
    }
    let started = Instant::now();
    tracing::info!("found the Go server's schema: taking it over in place, in one transaction");
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SET LOCAL statement_timeout = 0; \
         SET LOCAL client_min_messages = warning"
    ))
    .await?;
    // Nothing writes these tables while they are checked and converted: what is
    // checked is what is converted.
    tx.batch_execute("LOCK TABLE users, auth_tokens IN ACCESS EXCLUSIVE MODE").await.map_err(failed)?;
    let survey = survey(&tx, &mut |line| tracing::info!("takeover: {line}")).await.map_err(failed)?;
    if let Some(reason) = survey.refusal() {
        // Dropping the transaction rolls it back: nothing changed.
        return Err(StoreError::Refused(reason));
    }
    if survey.unknown_hashes > 0 || survey.short_usernames > 0 {
        tracing::warn!(
            unknown_password_hashes = survey.unknown_hashes,
            names_under_3_characters = survey.short_usernames,
            "takeover: some accounts cannot log in with a password (their hash is in no known format, or \
             login cannot name them); their tokens still work"
        );
    }
    convert(&tx, &survey).await.map_err(failed)?;
    tx.commit().await?;
    tracing::info!(
        users = survey.users,
        tokens = survey.tokens - survey.orphaned,
        orphaned_deleted = survey.orphaned,
        time_zone = %survey.time_zone,
        elapsed_secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "took over the Go server's database"
    );
    Ok(())
}

/// The conversion proper, inside the takeover's transaction.
async fn convert(tx: &tokio_postgres::Transaction<'_>, survey: &Survey) -> Result<(), tokio_postgres::Error> {
    let phase = Instant::now();
    // The Go server's case-sensitive unique constraints and its foreign key (re-made
    // once, after both tables have their new types), and every index on the raw token.
    let drops = tx
        .query(
            "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) \
             FROM pg_constraint c, LATERAL (SELECT array_agg(a.attname::text) AS cols FROM pg_attribute a \
                                            WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)) k \
             WHERE (c.conrelid = to_regclass('users') AND c.contype = 'u' \
                    AND k.cols IN (ARRAY['username'], ARRAY['email'])) \
                OR (c.conrelid = to_regclass('auth_tokens') AND ((c.contype = 'u' AND k.cols = ARRAY['token']) \
                                                             OR (c.contype = 'f' AND k.cols = ARRAY['user_id']))) \
             UNION ALL \
             SELECT format('DROP INDEX %s', i.indexrelid::regclass) FROM pg_index i \
             WHERE i.indrelid = to_regclass('auth_tokens') AND NOT i.indisprimary \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
               AND (SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid AND attname = 'token') \
                   = ANY (i.indkey::int2[])",
            &[],
        )
        .await?;
    for drop in &drops {
        tx.batch_execute(drop.get::<_, &str>(0)).await?;
    }
    let orphaned = tx.execute("DELETE FROM auth_tokens WHERE user_id IS NULL", &[]).await?;
    tracing::info!(
        "takeover: the Go server's constraints and indexes dropped: {}; tokens without a user deleted: {orphaned} \
         [{:.2} s]",
        drops.len(),
        phase.elapsed().as_secs_f64()
    );

    // One rewrite per table: every column's new type in one statement.
    let phase = Instant::now();
    tx.batch_execute(
        "ALTER TABLE users \
           ALTER COLUMN id TYPE bigint, \
           ALTER COLUMN username TYPE text, \
           ALTER COLUMN password_hash TYPE text, \
           ALTER COLUMN email TYPE text, \
           ALTER COLUMN created_at DROP DEFAULT, \
           ALTER COLUMN created_at TYPE timestamptz, \
           ALTER COLUMN created_at SET DEFAULT now(), \
           ALTER COLUMN last_login TYPE timestamptz",
    )
    .await?;
    tracing::info!("takeover: users converted: {} [{:.2} s]", survey.users, phase.elapsed().as_secs_f64());

    // The table is rewritten with the hash in place of the token, so no row version
    // anywhere in it still holds a raw token. A token is hashed as the node hashes what
    // a client sends: its ASCII lower-case text (`auth::Token`), hence the C collation.
    let phase = Instant::now();
    tx.batch_execute(
        "ALTER TABLE auth_tokens \
           ALTER COLUMN id TYPE bigint, \
           ALTER COLUMN user_id TYPE bigint, \
           ALTER COLUMN user_id SET NOT NULL, \
           ALTER COLUMN token TYPE bytea USING sha256(convert_to(lower(token COLLATE \"C\"), 'UTF8')), \
           ALTER COLUMN ip_address TYPE text, \
           ALTER COLUMN created_at DROP DEFAULT, \
           ALTER COLUMN created_at TYPE timestamptz, \
           ALTER COLUMN created_at SET DEFAULT now(), \
           ALTER COLUMN expires_at TYPE timestamptz, \
           ALTER COLUMN last_used_at TYPE timestamptz, \
           ALTER COLUMN is_revoked DROP DEFAULT, \
           ALTER COLUMN is_revoked DROP NOT NULL, \
           ALTER COLUMN is_revoked TYPE timestamptz USING CASE WHEN is_revoked THEN now() END; \
         ALTER TABLE auth_tokens RENAME COLUMN token TO token_hash; \
         ALTER TABLE auth_tokens RENAME COLUMN is_revoked TO revoked_at",
    )
    .await?;
    tracing::info!(
        "takeover: tokens hashed and converted: {} [{:.2} s]",
        survey.tokens - survey.orphaned,
        phase.elapsed().as_secs_f64()
    );

    // The ids' sequences count in bigint too, as V1's bigserial ones do.
    let phase = Instant::now();
    let sequences = tx
        .query(
            "SELECT format('ALTER SEQUENCE %s AS bigint', s) FROM (VALUES \
               (pg_get_serial_sequence('users', 'id')), (pg_get_serial_sequence('auth_tokens', 'id'))) v (s) \
             WHERE s IS NOT NULL",
            &[],
        )
        .await?;
    for alter in &sequences {
        tx.batch_execute(alter.get::<_, &str>(0)).await?;
    }
    // The node's own indexes and constraints, named as V1 names them.
    tx.batch_execute(
        "CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username)); \
         CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email)) WHERE email IS NOT NULL; \
         ALTER TABLE auth_tokens ADD CONSTRAINT auth_tokens_token_hash_key UNIQUE (token_hash); \
         ALTER INDEX IF EXISTS idx_auth_tokens_user_id RENAME TO auth_tokens_user_id_idx; \
         CREATE INDEX IF NOT EXISTS auth_tokens_user_id_idx ON auth_tokens (user_id); \
         ALTER TABLE auth_tokens ADD CONSTRAINT auth_tokens_user_id_fkey \
           FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE",
    )
    .await?;
    tracing::info!("takeover: the node's indexes and constraints built [{:.2} s]", phase.elapsed().as_secs_f64());

    // Every user and every token with a user is still there.
    let row = tx.query_one("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM auth_tokens)", &[]).await?;
    let (users, tokens): (i64, i64) = (row.get(0), row.get(1));
    if users != survey.users || tokens != survey.tokens - survey.orphaned {
        // Cannot happen under the exclusive lock; if it does, nothing is committed.
        tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'row counts changed during the takeover'; END $$").await?;
    }
    Ok(())
}

/// Sorts an error of the takeover's transaction: what a retry may cure (the
/// connection, a lock held by a Go server still running) stays an error the node
/// retries; anything else the database refuses will fail the same way every time,
/// so it is [`StoreError::Refused`].
fn failed(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return e.into();
    };
    let code = db.code();
    if *code == SqlState::LOCK_NOT_AVAILABLE {
        return StoreError::Other(format!(
            "takeover: could not lock users and auth_tokens within {LOCK_TIMEOUT}; \
             stop the Go server (and anything else using them) first"
        ));
    }
    // Connection, transaction rollback, resources, operator intervention, system.
    if ["08", "40", "53", "57", "58"].iter().any(|class| code.code().starts_with(class)) {
        return e.into();
    }
    let mut reason = db.message().to_owned();
    if let Some(detail) = db.detail() {
        reason.push_str(" (");
        reason.push_str(detail);
        reason.push(')');
    }
    StoreError::Refused(format!(
        "cannot take over the Go server's database (nothing was changed): {}",
        reason.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// Unstable usernames `migrate --check` lists by name (it counts them all).
const UNSTABLE_LISTED: usize = 50;

/// The users (id, name, why) whose names are not stable identifiers, by the rule of
/// registration (`unstable_username`); blank names are refused apart. Only names
/// outside printable ASCII or with an edge space can be: PostgreSQL picks those.
async fn unstable_usernames(
    client: &impl GenericClient,
) -> Result<Vec<(i64, String, &'static str)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id::bigint, username::text FROM users \
             WHERE (username ~ '[^ -~]' OR username LIKE ' %' OR username LIKE '% ') AND username ~ '[^[:space:]]' \
             ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(1);
            unstable_username(&name).map(|why| (row.get(0), name, why))
        })
        .collect())
}

/// `migrate --check`: one read-only snapshot, a line per phase, then what the
/// takeover would do, or the refusal it would give.
pub async fn check(url: &str) -> Result<(), String> {
    let crate::tls::PgTarget { mut config, tls, .. } =
        crate::tls::pg_target(url).map_err(|e| format!("invalid PostgreSQL URL (DB_CONN/DATABASE_URL): {e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("openchampps migrate --check");
    }
    let (mut client, connection) =
        config.connect(tls).await.map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    let connection = tokio::spawn(connection);
    let result = report(&mut client).await;
    drop(client);
    let _ = connection.await;
    result
}

async fn report(client: &mut Client) -> Result<(), String> {
    // The same one-line reasons a start-up would give.
    let pg = |e: tokio_postgres::Error| failed(e).to_string();
    match detect(&*client).await.map_err(pg)? {
        Found::Node => {
            println!("the database already has the node's schema: there is nothing to take over");
            return Ok(());
        }
        Found::Empty => {
            println!("no Go server schema here (no auth_tokens table): the node will create its own schema");
            return Ok(());
        }
        Found::Go => println!(
            "found the Go server's schema (auth_tokens.token, no migration history); reading it without changing \
             anything"
        ),
    }
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    tx.batch_execute("SET LOCAL statement_timeout = 0").await.map_err(pg)?;
    let s = survey(&tx, &mut |line| println!("{line}")).await.map_err(pg)?;
    let unstable = unstable_usernames(&tx).await.map_err(pg)?;
    tx.rollback().await.map_err(pg)?;
    println!("what the takeover would do, in one transaction:");
    println!("  users kept: {} (bcrypt hashes, replaced by argon2id at each one's next login: {})", s.users, s.bcrypt);
    if s.unknown_hashes > 0 {
        println!("  users whose password hash is in no known format (they cannot log in): {}", s.unknown_hashes);
    }
    if s.short_usernames > 0 {
        println!(
            "  users named with fewer than {MIN_USERNAME_CHARS} characters (their tokens work; a password login \
             cannot name them): {}",
            s.short_usernames
        );
    }
    println!(
        "  tokens kept, as the SHA-256 of their lower-case text (no raw token is left): {} ({} live; {} expired, \
         pruned by the nodes; {} revoked, revoked_at = the takeover's time)",
        s.tokens - s.orphaned,
        s.live,
        s.expired,
        s.revoked
    );
    if !unstable.is_empty() {
        println!(
            "  users whose usernames are not stable identifiers (registration would refuse or re-spell them), kept \
             as stored: their tokens work and a login typing the name as stored (any letter case) works: {}",
            unstable.len()
        );
        for (id, name, why) in unstable.iter().take(UNSTABLE_LISTED) {
            println!("    id {id}: {name:?} ({why})");
        }
        if unstable.len() > UNSTABLE_LISTED {
            println!("    … and {} more", unstable.len() - UNSTABLE_LISTED);
        }
    }
    println!("  tokens without a user, deleted: {}", s.orphaned);
    println!(
        "  timestamps: read as local times in TimeZone '{}' (this session's: the database's setting unless the \
         URL's options set it) and stored as timestamptz",
        s.time_zone
    );
    if let Some(refusal) = s.refusal() {
        return Err(refusal);
    }
    println!("the takeover would succeed; nothing was changed");
    Ok(())
}
