//! PostgreSQL: users and tokens, the durable truth.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::{Conflict, Health, StoreResult, TokenRecord, UserRecord, UserStore};
use crate::auth::TokenHash;
use crate::error::StoreError;
use crate::metrics as m;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock that serialises migrations across nodes starting at once.
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"ocpsmigr");
/// Key of the advisory lock that lets one node at a time prune old tokens.
const PRUNE_LOCK: i64 = i64::from_be_bytes(*b"ocpsprun");
/// Tokens deleted per statement while pruning, so no statement holds locks for long.
const PRUNE_BATCH: i64 = 5_000;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub fn connect(url: &str, max_size: usize) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))?;
        // Fail fast when PostgreSQL is unreachable instead of hanging a login.
        config.connect_timeout(Duration::from_secs(2));
        if config.get_application_name().is_none() {
            config.application_name("openchampps");
        }
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(1)))
            .build()
            .map_err(|e| StoreError::Other(format!("PostgreSQL pool: {e}")))?;
        Ok(PgStore { pool })
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            m::store_error("postgres");
            e.into()
        })
    }
}

/// The token hashes in the first column of `rows`.
fn hashes(rows: &[tokio_postgres::Row]) -> Vec<TokenHash> {
    rows.iter().filter_map(|r| r.get::<_, &[u8]>(0).try_into().ok().map(TokenHash)).collect()
}

fn counted<T>(r: Result<T, tokio_postgres::Error>) -> StoreResult<T> {
    r.map_err(|e| {
        m::store_error("postgres");
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
        m::pool_connections("postgres", s.size, s.available, s.waiting);
    }
}

#[async_trait]
impl UserStore for PgStore {
    /// Applies pending migrations under an advisory lock, so nodes starting together
    /// run each migration exactly once.
    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let client_ref: &mut tokio_postgres::Client = &mut client;
        let result = embedded::migrations::runner().run_async(client_ref).await;
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result.map(|_| ()).map_err(|e| StoreError::Other(format!("migration failed: {e}")))
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let client = self.client().await?;
        let stmt = counted(
            client
                .prepare_cached("SELECT id, username, password_hash FROM users WHERE lower(username) = lower($1)")
                .await,
        )?;
        let row = counted(client.query_opt(&stmt, &[&username]).await)?;
        Ok(row.map(|r| UserRecord { id: r.get(0), username: r.get(1), password_hash: r.get(2) }))
    }

    async fn email_taken(&self, email: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt =
            counted(client.prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))").await)?;
        Ok(counted(client.query_one(&stmt, &[&email]).await)?.get(0))
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: Option<&str>,
    ) -> StoreResult<Result<i64, Conflict>> {
        let client = self.client().await?;
        let stmt = counted(
            client
                .prepare_cached("INSERT INTO users (username, password_hash, email) VALUES ($1, $2, $3) RETURNING id")
                .await,
        )?;
        match client.query_one(&stmt, &[&username, &password_hash, &email]).await {
            Ok(row) => Ok(Ok(row.get(0))),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or_default();
                Ok(Err(if constraint.contains("email") { Conflict::Email } else { Conflict::Username }))
            }
            Err(e) => counted(Err(e)),
        }
    }

    async fn set_password_hash(&self, user_id: i64, password_hash: &str) -> StoreResult<()> {
        let client = self.client().await?;
        let stmt = counted(client.prepare_cached("UPDATE users SET password_hash = $2 WHERE id = $1").await)?;
        counted(client.execute(&stmt, &[&user_id, &password_hash]).await)?;
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
        let client = self.client().await?;
        let insert = counted(
            client
                .prepare_cached(
                    "WITH login AS (UPDATE users SET last_login = now() WHERE id = $1) \
                     INSERT INTO auth_tokens (user_id, token_hash, ip_address, expires_at) \
                     VALUES ($1, $2, $3, to_timestamp($4))",
                )
                .await,
        )?;
        let expires = expires_at as f64;
        counted(client.execute(&insert, &[&user_id, &token.0.as_slice(), &ip, &expires]).await)?;
        // The newest `max_live` live tokens stay; older ones are revoked.
        let cap = counted(
            client
                .prepare_cached(
                    "UPDATE auth_tokens SET revoked_at = now() WHERE id IN ( \
                       SELECT id FROM auth_tokens \
                       WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() \
                       ORDER BY id DESC OFFSET $2) \
                     RETURNING token_hash",
                )
                .await,
        )?;
        let rows = counted(client.query(&cap, &[&user_id, &i64::from(max_live)]).await)?;
        Ok(hashes(&rows))
    }

    async fn live_tokens(&self, tokens: &[TokenHash]) -> StoreResult<Vec<TokenHash>> {
        let client = self.client().await?;
        let stmt = counted(
            client
                .prepare_cached(
                    "SELECT token_hash FROM auth_tokens \
                     WHERE token_hash = ANY($1) AND revoked_at IS NULL AND expires_at > now()",
                )
                .await,
        )?;
        let wanted: Vec<&[u8]> = tokens.iter().map(|t| t.0.as_slice()).collect();
        Ok(hashes(&counted(client.query(&stmt, &[&wanted]).await)?))
    }

    async fn prune_tokens(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let locked: bool = counted(client.query_one("SELECT pg_try_advisory_lock($1)", &[&PRUNE_LOCK]).await)?.get(0);
        if !locked {
            return Ok(0);
        }
        let mut pruned = 0;
        let result = async {
            loop {
                let n = client
                    .execute(
                        "DELETE FROM auth_tokens WHERE id IN ( \
                           SELECT id FROM auth_tokens \
                           WHERE expires_at < now() OR revoked_at < now() - interval '1 day' \
                           LIMIT $1)",
                        &[&PRUNE_BATCH],
                    )
                    .await?;
                pruned += n;
                if n < PRUNE_BATCH as u64 {
                    return Ok(());
                }
            }
        }
        .await;
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&PRUNE_LOCK]).await;
        counted(result)?;
        Ok(pruned)
    }

    async fn find_token(&self, token: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let client = self.client().await?;
        let stmt = counted(
            client
                .prepare_cached(
                    "SELECT t.user_id, u.username, extract(epoch FROM t.expires_at)::bigint \
                     FROM auth_tokens t JOIN users u ON u.id = t.user_id \
                     WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now()",
                )
                .await,
        )?;
        let row = counted(client.query_opt(&stmt, &[&token.0.as_slice()]).await)?;
        Ok(row.map(|r| TokenRecord { user_id: r.get(0), username: r.get(1), expires_at: r.get(2) }))
    }

    async fn touch_tokens(&self, tokens: &[TokenHash]) -> StoreResult<u64> {
        let client = self.client().await?;
        let stmt = counted(
            client.prepare_cached("UPDATE auth_tokens SET last_used_at = now() WHERE token_hash = ANY($1)").await,
        )?;
        let hashes: Vec<&[u8]> = tokens.iter().map(|t| t.0.as_slice()).collect();
        counted(client.execute(&stmt, &[&hashes]).await)
    }

    async fn revoke_user_tokens(&self, username: &str) -> StoreResult<Vec<TokenHash>> {
        let client = self.client().await?;
        let rows = counted(
            client
                .query(
                    "UPDATE auth_tokens t SET revoked_at = now() FROM users u \
                     WHERE u.id = t.user_id AND lower(u.username) = lower($1) AND t.revoked_at IS NULL \
                     RETURNING t.token_hash",
                    &[&username],
                )
                .await,
        )?;
        Ok(hashes(&rows))
    }

    async fn revoke_token(&self, token: &TokenHash) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = counted(
            client
                .execute(
                    "UPDATE auth_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_hash = $1",
                    &[&token.0.as_slice()],
                )
                .await,
        )?;
        Ok(n > 0)
    }
}
