//! PostgreSQL: users and tokens, the durable truth.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{Conflict, Health, StoreResult, TokenRecord, UserRecord, UserStore};
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
        Ok(rows.first().map(|r| UserRecord { id: r.get(0), username: r.get(1), password_hash: r.get(2) }))
    }

    async fn find_login(&self, username: &str) -> StoreResult<(String, Option<UserRecord>)> {
        let rows = self
            .rows(
                "SELECT lower($1), u.id, u.username, u.password_hash FROM (SELECT 1) AS one \
                 LEFT JOIN users u ON lower(u.username) = lower($1)",
                &[(&username, Type::TEXT)],
            )
            .await?;
        let row = rows.first().ok_or_else(|| StoreError::Other("no row for a login lookup".into()))?;
        let user =
            row.get::<_, Option<i64>>(1).map(|id| UserRecord { id, username: row.get(2), password_hash: row.get(3) });
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
        let rows = self
            .rows(
                "SELECT t.token_hash, t.user_id, u.username, extract(epoch FROM t.expires_at)::bigint \
                 FROM auth_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = ANY($1) AND t.revoked_at IS NULL AND t.expires_at > now()",
                &[(&wanted, Type::BYTEA_ARRAY)],
            )
            .await?;
        let live = hashes(&rows).into_iter().zip(&rows);
        Ok(live
            .map(|(hash, r)| (hash, TokenRecord { user_id: r.get(1), username: r.get(2), expires_at: r.get(3) }))
            .collect())
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
        let rows = self
            .rows(
                "SELECT t.user_id, u.username, extract(epoch FROM t.expires_at)::bigint \
                 FROM auth_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now()",
                &[(&token.0.as_slice(), Type::BYTEA)],
            )
            .await?;
        Ok(rows.first().map(|r| TokenRecord { user_id: r.get(0), username: r.get(1), expires_at: r.get(2) }))
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
