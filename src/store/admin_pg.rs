//! The admin roles on PostgreSQL (`migrations/V3__operators_and_audit.sql`).

use async_trait::async_trait;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::admin::Role;
use super::admin::{Audit, Operators};
use super::admin::{AuditEntry, AuditQuery, NewAuditEntry, OperatorChange, OperatorRecord, OperatorSession, Outcome};
use super::postgres::PgStore;
use super::StoreResult;
use crate::error::StoreError;

const OPERATOR_COLUMNS: &str = "name, role, password_hash, disabled, extract(epoch FROM created_at)::bigint";

fn operator(row: &Row) -> StoreResult<OperatorRecord> {
    let role: String = row.get(1);
    Ok(OperatorRecord {
        name: row.get(0),
        role: Role::parse(&role).ok_or_else(|| StoreError::Other(format!("operator with unknown role {role:?}")))?,
        password_hash: row.get(2),
        disabled: row.get(3),
        created_at: row.get(4),
    })
}

fn operators(rows: &[Row]) -> StoreResult<Vec<OperatorRecord>> {
    rows.iter().map(operator).collect()
}

#[async_trait]
impl Operators for PgStore {
    async fn count_operators(&self) -> StoreResult<u64> {
        let rows = self.rows("SELECT count(*) FROM operators", &[]).await?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    async fn find_operator(&self, name: &str) -> StoreResult<Option<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE lower(name) = lower($1)");
        let rows = self.rows(&sql, &[(&name, Type::TEXT)]).await?;
        Ok(operators(&rows)?.into_iter().next())
    }

    async fn list_operators(&self) -> StoreResult<Vec<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY lower(name)");
        operators(&self.rows(&sql, &[]).await?)
    }

    async fn create_operator(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
    ) -> StoreResult<Option<OperatorRecord>> {
        let sql = format!(
            "INSERT INTO operators (name, role, password_hash) VALUES ($1, $2, $3) \
             ON CONFLICT ((lower(name))) DO NOTHING RETURNING {OPERATOR_COLUMNS}"
        );
        let rows =
            self.rows(&sql, &[(&name, Type::TEXT), (&role.as_str(), Type::TEXT), (&password_hash, Type::TEXT)]).await?;
        Ok(operators(&rows)?.into_iter().next())
    }

    async fn create_first_operator(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
    ) -> StoreResult<Option<OperatorRecord>> {
        // A transaction-scoped lock: nodes starting at once create one admin, not one each.
        let sql = format!(
            "WITH locked AS (SELECT pg_advisory_xact_lock({lock})) \
             INSERT INTO operators (name, role, password_hash) \
             SELECT $1, $2, $3 FROM locked WHERE NOT EXISTS (SELECT 1 FROM operators) \
             ON CONFLICT ((lower(name))) DO NOTHING RETURNING {OPERATOR_COLUMNS}",
            lock = i64::from_be_bytes(*b"ocpsoper")
        );
        let rows =
            self.rows(&sql, &[(&name, Type::TEXT), (&role.as_str(), Type::TEXT), (&password_hash, Type::TEXT)]).await?;
        Ok(operators(&rows)?.into_iter().next())
    }

    async fn update_operator(&self, name: &str, change: &OperatorChange) -> StoreResult<Option<OperatorRecord>> {
        let role = change.role.map(Role::as_str);
        // Disabling an operator or changing its password ends its sessions in the same statement.
        let sql = format!(
            "WITH changed AS ( \
               UPDATE operators SET role = coalesce($2, role), disabled = coalesce($3, disabled), \
                 password_hash = coalesce($4, password_hash) \
               WHERE lower(name) = lower($1) \
               RETURNING id, name, role, password_hash, disabled, created_at), \
             ended AS ( \
               DELETE FROM operator_sessions WHERE operator_id IN ( \
                 SELECT id FROM changed WHERE disabled OR $4::text IS NOT NULL)) \
             SELECT {OPERATOR_COLUMNS} FROM changed"
        );
        let rows = self
            .rows(
                &sql,
                &[
                    (&name, Type::TEXT),
                    (&role, Type::TEXT),
                    (&change.disabled, Type::BOOL),
                    (&change.password_hash, Type::TEXT),
                ],
            )
            .await?;
        Ok(operators(&rows)?.into_iter().next())
    }

    async fn create_session(&self, token_hash: &[u8; 32], name: &str, csrf: &str) -> StoreResult<bool> {
        let rows = self
            .rows(
                "INSERT INTO operator_sessions (token_hash, operator_id, csrf) \
                 SELECT $1, id, $3 FROM operators WHERE lower(name) = lower($2) AND NOT disabled \
                 RETURNING 1",
                &[(&token_hash.as_slice(), Type::BYTEA), (&name, Type::TEXT), (&csrf, Type::TEXT)],
            )
            .await?;
        // Sessions idle for a day are long dead whatever ADMIN_SESSION_SECS is; cleared here.
        self.rows("DELETE FROM operator_sessions WHERE last_seen < now() - interval '1 day'", &[]).await?;
        Ok(!rows.is_empty())
    }

    async fn session(&self, token_hash: &[u8; 32], idle_secs: u64) -> StoreResult<Option<OperatorSession>> {
        let rows = self
            .rows(
                "UPDATE operator_sessions s SET last_seen = now() FROM operators o \
                 WHERE s.token_hash = $1 AND o.id = s.operator_id AND NOT o.disabled \
                   AND s.last_seen > now() - make_interval(secs => $2) \
                 RETURNING o.name, o.role, s.csrf",
                &[(&token_hash.as_slice(), Type::BYTEA), (&(idle_secs as f64), Type::FLOAT8)],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let role: String = row.get(1);
        let role =
            Role::parse(&role).ok_or_else(|| StoreError::Other(format!("operator with unknown role {role:?}")))?;
        Ok(Some(OperatorSession { operator: row.get(0), role, csrf: row.get(2) }))
    }

    async fn end_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        self.rows("DELETE FROM operator_sessions WHERE token_hash = $1", &[(&token_hash.as_slice(), Type::BYTEA)])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Audit for PgStore {
    async fn record(&self, e: &NewAuditEntry) -> StoreResult<i64> {
        let rows = self
            .rows(
                "INSERT INTO audit_log (operator, action, target, reason, outcome, address, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING id",
                &[
                    (&e.operator, Type::TEXT),
                    (&e.action, Type::TEXT),
                    (&e.target, Type::TEXT),
                    (&e.reason, Type::TEXT),
                    (&e.outcome.as_str(), Type::TEXT),
                    (&e.address, Type::TEXT),
                    (&e.detail, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    async fn entries(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let rows = self
            .rows(
                "SELECT id, extract(epoch FROM at)::bigint, operator, action, target, reason, outcome, address \
                 FROM audit_log \
                 WHERE ($1::text IS NULL OR lower(target) = lower($1)) \
                   AND ($2::text IS NULL OR lower(operator) = lower($2)) \
                   AND ($3::bigint IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4",
                &[
                    (&q.player, Type::TEXT),
                    (&q.operator, Type::TEXT),
                    (&q.before, Type::INT8),
                    (&i64::from(q.limit), Type::INT8),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let outcome: String = r.get(6);
                Ok(AuditEntry {
                    id: r.get(0),
                    at: r.get(1),
                    operator: r.get(2),
                    action: r.get(3),
                    target: r.get(4),
                    reason: r.get(5),
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| StoreError::Other(format!("audit entry with unknown outcome {outcome:?}")))?,
                    address: r.get(7),
                })
            })
            .collect()
    }
}
