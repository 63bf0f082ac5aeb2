//! PostgreSQL: users and tokens, the durable truth.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{
    AccountRecord, Conflict, Health, ModerationStore, Sanction, SanctionKind, Standing, StoreResult, TokenRecord,
    UserRecord, UserStore,
};
use crate::auth::TokenHash;
use crate::error::StoreError;
use crate::metrics as m;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock that serialises migrations across nodes starting at once.
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"ocpsmigr");
/// Key of the transaction-scoped advisory lock that lets one node at a time prune.
const PRUNE_LOCK: i64 = i64::from_be_bytes(*b"ocpsprun");
/// Tokens deleted per statement while pruning, so no statement holds locks for long.
const PRUNE_BATCH: i64 = 5_000;

/// PostgreSQL through a pool. Every statement is sent unnamed with its parameter
/// types (`query_typed`: parse, bind and execute in one round trip), so the node
/// works through a pooler in transaction mode (PgBouncer), where a named prepared
/// statement would not outlive its transaction.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// A direct connection's URL for migrations: their advisory lock is a session's.
    migration_url: String,
}

impl PgStore {
    pub fn connect(url: &str, migration_url: &str, max_size: usize) -> Result<PgStore, StoreError> {
        let target = client_config(url)?;
        client_config(migration_url)?;
        let manager =
            Manager::from_config(target.config, target.tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(1)))
            .build()
            .map_err(|e| StoreError::Other(format!("PostgreSQL pool: {e}")))?;
        Ok(PgStore { pool, migration_url: migration_url.to_owned() })
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            m::store_error(m::Store::Postgres);
            e.into()
        })
    }

    /// Runs one statement and returns its rows.
    pub(super) async fn rows(&self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> StoreResult<Vec<Row>> {
        let client = self.client().await?;
        counted(client.query_typed(sql, params).await)
    }
}

/// The URL's configuration and TLS connector (`sslmode`, `sslrootcert`: crate::tls).
fn client_config(url: &str) -> Result<crate::tls::PgTarget, StoreError> {
    let mut target =
        crate::tls::pg_target(url).map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))?;
    // Fail fast when PostgreSQL is unreachable instead of hanging a login.
    target.config.connect_timeout(Duration::from_secs(2));
    if target.config.get_application_name().is_none() {
        target.config.application_name("openchampps");
    }
    Ok(target)
}

/// The standing of the account `u.id` (MODERATION.md) as JSON in column `standing`,
/// and whether it is banned now in `banned`: joined to every login and token lookup,
/// so a sanction costs them no second query.
const STANDING: &str = "LEFT JOIN LATERAL (SELECT b.j IS NOT NULL AS banned, \
    json_strip_nulls(json_build_object('ban', b.j, 'mute', mu.j, 'kick', k.reason))::text AS standing \
    FROM (SELECT 1) one \
    LEFT JOIN LATERAL (SELECT json_build_object('reason', reason, 'until', extract(epoch FROM until)::bigint, \
        'by', created_by, 'at', extract(epoch FROM created_at)::bigint) j FROM sanctions \
        WHERE user_id = u.id AND kind = 'ban' AND lifted_at IS NULL AND (until IS NULL OR until > now()) \
        ORDER BY id DESC LIMIT 1) b ON true \
    LEFT JOIN LATERAL (SELECT json_build_object('reason', reason, 'until', extract(epoch FROM until)::bigint, \
        'by', created_by, 'at', extract(epoch FROM created_at)::bigint) j FROM sanctions \
        WHERE user_id = u.id AND kind = 'mute' AND lifted_at IS NULL AND until > now() \
        ORDER BY id DESC LIMIT 1) mu ON true \
    LEFT JOIN LATERAL (SELECT reason FROM sanctions \
        WHERE user_id = u.id AND kind = 'kick' AND lifted_at IS NULL ORDER BY id LIMIT 1) k ON true) s ON true";

static FIND_LOGIN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT lower($1), u.id, u.username, u.password_hash, s.standing FROM (SELECT 1) AS one \
         LEFT JOIN users u ON lower(u.username) = lower($1) {STANDING}"
    )
});

/// A token's owner and expiry: a live token, or one revoked while its account is
/// banned now (its holder is told of the ban, not of a bad token).
static TOKEN_LOOKUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.token_hash, t.user_id, u.username, extract(epoch FROM t.expires_at)::bigint, s.standing \
         FROM auth_tokens t JOIN users u ON u.id = t.user_id {STANDING} \
         WHERE t.token_hash = ANY($1) AND t.expires_at > now() AND (t.revoked_at IS NULL OR s.banned)"
    )
});

fn standing(raw: Option<&str>) -> Standing {
    raw.and_then(|raw| serde_json::from_str(raw).ok()).unwrap_or_default()
}

/// Rows of [`TOKEN_LOOKUP`] as records.
fn token_records(rows: &[Row]) -> Vec<(TokenHash, TokenRecord)> {
    let records = rows.iter().map(|r| TokenRecord {
        user_id: r.get(1),
        username: r.get(2),
        expires_at: r.get(3),
        standing: standing(r.get(4)),
    });
    hashes(rows).into_iter().zip(records).collect()
}

fn account(r: &Row) -> AccountRecord {
    AccountRecord { id: r.get(0), username: r.get(1), email: r.get(2), created_at: r.get(3), last_login: r.get(4) }
}

const ACCOUNT_COLUMNS: &str = "id, username, email, extract(epoch FROM created_at)::bigint, \
    extract(epoch FROM last_login)::bigint";

/// The token hashes in the first column of `rows`.
fn hashes(rows: &[Row]) -> Vec<TokenHash> {
    rows.iter().filter_map(|r| r.get::<_, &[u8]>(0).try_into().ok().map(TokenHash)).collect()
}

fn counted<T>(r: Result<T, tokio_postgres::Error>) -> StoreResult<T> {
    r.map_err(|e| {
        m::store_error(m::Store::Postgres);
        e.into()
    })
}

#[async_trait]
impl Health for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        counted(client.simple_query("SELECT 1").await)?;
        Ok(())
    }

    fn export_pool_gauges(&self) {
        let s = self.pool.status();
        m::pool_connections(m::Store::Postgres, s.size, s.available, s.waiting);
    }
}

#[async_trait]
impl UserStore for PgStore {
    /// Applies pending migrations over a direct connection, under an advisory lock,
    /// so nodes starting together run each migration exactly once.
    async fn migrate(&self) -> StoreResult<()> {
        let target = client_config(&self.migration_url)?;
        let (mut client, connection) = target.config.connect(target.tls).await?;
        let connection = tokio::spawn(connection);
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        // A Go server's database is converted first, under the same lock (takeover.rs).
        let result = match super::takeover::take_over(&mut client).await {
            Ok(()) => embedded::migrations::runner()
                .run_async(&mut client)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::Other(format!("migration failed: {e}"))),
            Err(e) => Err(e),
        };
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
        drop(client);
        let _ = connection.await;
        result?;
        unlocked?;
        Ok(())
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let rows = self
            .rows(
                "SELECT id, username, password_hash FROM users WHERE lower(username) = lower($1)",
                &[(&username, Type::TEXT)],
            )
            .await?;
        Ok(rows.first().map(|r| UserRecord {
            id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            standing: Standing::default(),
        }))
    }

    async fn find_login(&self, username: &str) -> StoreResult<(String, Option<UserRecord>)> {
        let rows = self.rows(&FIND_LOGIN, &[(&username, Type::TEXT)]).await?;
        let row = rows.first().ok_or_else(|| StoreError::Other("no row for a login lookup".into()))?;
        let user = row.get::<_, Option<i64>>(1).map(|id| UserRecord {
            id,
            username: row.get(2),
            password_hash: row.get(3),
            standing: standing(row.get(4)),
        });
        Ok((row.get(0), user))
    }

    async fn email_taken(&self, email: &str) -> StoreResult<bool> {
        let rows = self
            .rows("SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))", &[(&email, Type::TEXT)])
            .await?;
        Ok(rows[0].get(0))
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: Option<&str>,
    ) -> StoreResult<Result<i64, Conflict>> {
        let client = self.client().await?;
        let inserted = client
            .query_typed(
                "INSERT INTO users (username, password_hash, email) VALUES ($1, $2, $3) RETURNING id",
                &[(&username, Type::TEXT), (&password_hash, Type::TEXT), (&email, Type::TEXT)],
            )
            .await;
        match inserted {
            Ok(rows) => Ok(Ok(rows[0].get(0))),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or_default();
                Ok(Err(if constraint.contains("email") { Conflict::Email } else { Conflict::Username }))
            }
            Err(e) => counted(Err(e)),
        }
    }

    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> StoreResult<()> {
        self.rows(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            &[(&user_id, Type::INT8), (&password_hash, Type::TEXT)],
        )
        .await?;
        Ok(())
    }

    async fn insert_token(
        &self,
        user_id: i64,
        token: &TokenHash,
        ip: Option<&str>,
        expires_at: i64,
        max_live: u32,
    ) -> StoreResult<Vec<TokenHash>> {
        // One statement: stamp the login, store the token, and revoke the user's
        // oldest live tokens beyond the newest `max_live` (the new one counts).
        let rows = self
            .rows(
                "WITH login AS (UPDATE users SET last_login = now() WHERE id = $1), \
                 new AS (INSERT INTO auth_tokens (user_id, token_hash, ip_address, expires_at) \
                         VALUES ($1, $2, $3, to_timestamp($4)) RETURNING id) \
                 UPDATE auth_tokens SET revoked_at = now() WHERE id IN ( \
                   SELECT id FROM auth_tokens \
                   WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() \
                   ORDER BY id DESC OFFSET $5 - 1) \
                 RETURNING token_hash",
                &[
                    (&user_id, Type::INT8),
                    (&token.0.as_slice(), Type::BYTEA),
                    (&ip, Type::TEXT),
                    (&(expires_at as f64), Type::FLOAT8),
                    (&i64::from(max_live), Type::INT8),
                ],
            )
            .await?;
        Ok(hashes(&rows))
    }

    async fn live_tokens(&self, tokens: &[TokenHash]) -> StoreResult<Vec<(TokenHash, TokenRecord)>> {
        let wanted: Vec<&[u8]> = tokens.iter().map(|t| t.0.as_slice()).collect();
        let rows = self.rows(&TOKEN_LOOKUP, &[(&wanted, Type::BYTEA_ARRAY)]).await?;
        Ok(token_records(&rows))
    }

    async fn prune_tokens(&self) -> StoreResult<u64> {
        // Each batch is a transaction holding a transaction-scoped lock (a session
        // lock would not survive a pooler in transaction mode): one node at a time.
        let mut client = self.client().await?;
        let mut pruned = 0;
        loop {
            let tx = counted(client.transaction().await)?;
            let locked: bool =
                counted(tx.query_typed("SELECT pg_try_advisory_xact_lock($1)", &[(&PRUNE_LOCK, Type::INT8)]).await)?[0]
                    .get(0);
            if !locked {
                return Ok(pruned);
            }
            let n = counted(
                tx.query_typed(
                    "DELETE FROM auth_tokens WHERE id IN ( \
                       SELECT id FROM auth_tokens \
                       WHERE expires_at < now() OR revoked_at < now() - interval '1 day' \
                       LIMIT $1) \
                     RETURNING 1",
                    &[(&PRUNE_BATCH, Type::INT8)],
                )
                .await,
            )?
            .len() as u64;
            counted(tx.commit().await)?;
            pruned += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(pruned);
            }
        }
    }

    async fn find_token(&self, token: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let wanted = [token.0.as_slice()];
        let rows = self.rows(&TOKEN_LOOKUP, &[(&wanted.as_slice(), Type::BYTEA_ARRAY)]).await?;
        Ok(token_records(&rows).into_iter().next().map(|(_, record)| record))
    }

    async fn touch_tokens(&self, tokens: &[TokenHash]) -> StoreResult<u64> {
        let hashes: Vec<&[u8]> = tokens.iter().map(|t| t.0.as_slice()).collect();
        let rows = self
            .rows(
                "UPDATE auth_tokens SET last_used_at = now() WHERE token_hash = ANY($1) RETURNING 1",
                &[(&hashes, Type::BYTEA_ARRAY)],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    async fn revoke_user_tokens(&self, username: &str) -> StoreResult<Vec<TokenHash>> {
        let rows = self
            .rows(
                "UPDATE auth_tokens t SET revoked_at = now() FROM users u \
                 WHERE u.id = t.user_id AND lower(u.username) = lower($1) AND t.revoked_at IS NULL \
                 RETURNING t.token_hash",
                &[(&username, Type::TEXT)],
            )
            .await?;
        Ok(hashes(&rows))
    }

    async fn revoke_token(&self, token: &TokenHash) -> StoreResult<bool> {
        let rows = self
            .rows(
                "UPDATE auth_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_hash = $1 RETURNING 1",
                &[(&token.0.as_slice(), Type::BYTEA)],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}

#[async_trait]
impl ModerationStore for PgStore {
    async fn account(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE lower(username) = lower($1)");
        Ok(self.rows(&sql, &[(&username, Type::TEXT)]).await?.first().map(account))
    }

    async fn search_accounts(&self, prefix: &str, limit: u32) -> StoreResult<Vec<AccountRecord>> {
        // The prefix's own wildcards are literal.
        let pattern =
            format!("{}%", prefix.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE lower(username) LIKE $1 OR lower(email) LIKE $1 \
             ORDER BY lower(username) LIMIT $2"
        );
        let rows = self.rows(&sql, &[(&pattern, Type::TEXT), (&i64::from(limit), Type::INT8)]).await?;
        Ok(rows.iter().map(account).collect())
    }

    async fn standing(&self, user_id: i64) -> StoreResult<Standing> {
        let sql = format!("SELECT s.standing FROM users u {STANDING} WHERE u.id = $1");
        let rows = self.rows(&sql, &[(&user_id, Type::INT8)]).await?;
        Ok(standing(rows.first().and_then(|r| r.get(0))))
    }

    async fn impose(&self, user_id: i64, kind: SanctionKind, sanction: &Sanction) -> StoreResult<()> {
        // One statement: the one before is lifted and the new one put in force together.
        self.rows(
            "WITH lifted AS (UPDATE sanctions SET lifted_at = now(), lifted_by = $4, lift_reason = 'replaced' \
                 WHERE user_id = $1 AND kind = $2 AND lifted_at IS NULL) \
             INSERT INTO sanctions (user_id, kind, reason, created_by, created_at, until) \
             VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($6))",
            &[
                (&user_id, Type::INT8),
                (&kind.as_str(), Type::TEXT),
                (&sanction.reason, Type::TEXT),
                (&sanction.by, Type::TEXT),
                (&(sanction.at as f64), Type::FLOAT8),
                (&sanction.until.map(|u| u as f64), Type::FLOAT8),
            ],
        )
        .await?;
        Ok(())
    }

    async fn lift(&self, user_id: i64, kind: SanctionKind, by: &str, reason: &str) -> StoreResult<Option<Sanction>> {
        let rows = self
            .rows(
                "UPDATE sanctions SET lifted_at = now(), lifted_by = $3, lift_reason = $4 \
                 WHERE user_id = $1 AND kind = $2 AND lifted_at IS NULL AND (until IS NULL OR until > now()) \
                 RETURNING reason, extract(epoch FROM until)::bigint, created_by, extract(epoch FROM created_at)::bigint",
                &[(&user_id, Type::INT8), (&kind.as_str(), Type::TEXT), (&by, Type::TEXT), (&reason, Type::TEXT)],
            )
            .await?;
        Ok(rows.first().map(|r| Sanction { reason: r.get(0), until: r.get(1), by: r.get(2), at: r.get(3) }))
    }

    async fn pend_kick(&self, user_id: i64, reason: &str, by: &str) -> StoreResult<()> {
        self.rows(
            "INSERT INTO sanctions (user_id, kind, reason, created_by) VALUES ($1, 'kick', $2, $3)",
            &[(&user_id, Type::INT8), (&reason, Type::TEXT), (&by, Type::TEXT)],
        )
        .await?;
        Ok(())
    }

    async fn take_kick(&self, user_id: i64) -> StoreResult<Option<String>> {
        // Every waiting kick is delivered by this one: one `kicked` frame, the first reason.
        let rows = self
            .rows(
                "UPDATE sanctions SET lifted_at = now(), lifted_by = 'delivered' \
                 WHERE user_id = $1 AND kind = 'kick' AND lifted_at IS NULL RETURNING id, reason",
                &[(&user_id, Type::INT8)],
            )
            .await?;
        Ok(rows.iter().min_by_key(|r| r.get::<_, i64>(0)).map(|r| r.get(1)))
    }

    async fn account_tokens(&self, user_id: i64) -> StoreResult<Vec<TokenHash>> {
        let rows = self
            .rows(
                "SELECT token_hash FROM auth_tokens WHERE user_id = $1 AND expires_at > now()",
                &[(&user_id, Type::INT8)],
            )
            .await?;
        Ok(hashes(&rows))
    }
}
