//! In-memory twins of the admin roles, with the same contract as PostgreSQL's
//! (case-insensitive names, inactivity expiry, an append-only log).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::admin::{
    Audit, AuditEntry, AuditQuery, NewAuditEntry, OperatorChange, OperatorRecord, OperatorSession, Operators, Role,
};
use super::{unix_now, StoreResult};

/// Operators, their sessions and the audit log.
#[derive(Default)]
pub struct MemoryAdmin {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    operators: Vec<OperatorRecord>,
    /// Token hash → (operator name folded, CSRF token, last request).
    sessions: HashMap<[u8; 32], (String, String, Instant)>,
    audit: Vec<AuditEntry>,
}

impl Inner {
    fn find(&mut self, name: &str) -> Option<&mut OperatorRecord> {
        let wanted = name.to_lowercase();
        self.operators.iter_mut().find(|o| o.name.to_lowercase() == wanted)
    }

    fn create(&mut self, name: &str, role: Role, password_hash: &str) -> Option<OperatorRecord> {
        if self.find(name).is_some() {
            return None;
        }
        let record = OperatorRecord {
            name: name.to_owned(),
            role,
            password_hash: password_hash.to_owned(),
            disabled: false,
            created_at: unix_now(),
        };
        self.operators.push(record.clone());
        Some(record)
    }
}

#[async_trait]
impl Operators for MemoryAdmin {
    async fn count_operators(&self) -> StoreResult<u64> {
        Ok(self.inner.lock().unwrap().operators.len() as u64)
    }

    async fn find_operator(&self, name: &str) -> StoreResult<Option<OperatorRecord>> {
        Ok(self.inner.lock().unwrap().find(name).cloned())
    }

    async fn list_operators(&self) -> StoreResult<Vec<OperatorRecord>> {
        let mut all = self.inner.lock().unwrap().operators.clone();
        all.sort_by_key(|o| o.name.to_lowercase());
        Ok(all)
    }

    async fn create_operator(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
    ) -> StoreResult<Option<OperatorRecord>> {
        Ok(self.inner.lock().unwrap().create(name, role, password_hash))
    }

    async fn create_first_operator(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
    ) -> StoreResult<Option<OperatorRecord>> {
        let mut inner = self.inner.lock().unwrap();
        if !inner.operators.is_empty() {
            return Ok(None);
        }
        Ok(inner.create(name, role, password_hash))
    }

    async fn update_operator(&self, name: &str, change: &OperatorChange) -> StoreResult<Option<OperatorRecord>> {
        let mut inner = self.inner.lock().unwrap();
        let Some(record) = inner.find(name) else { return Ok(None) };
        if let Some(role) = change.role {
            record.role = role;
        }
        if let Some(disabled) = change.disabled {
            record.disabled = disabled;
        }
        if let Some(hash) = &change.password_hash {
            record.password_hash = hash.clone();
        }
        let record = record.clone();
        if record.disabled || change.password_hash.is_some() {
            let folded = record.name.to_lowercase();
            inner.sessions.retain(|_, (name, _, _)| *name != folded);
        }
        Ok(Some(record))
    }

    async fn create_session(&self, token_hash: &[u8; 32], name: &str, csrf: &str) -> StoreResult<bool> {
        let mut inner = self.inner.lock().unwrap();
        let Some(record) = inner.find(name) else { return Ok(false) };
        if record.disabled {
            return Ok(false);
        }
        let folded = record.name.to_lowercase();
        inner.sessions.insert(*token_hash, (folded, csrf.to_owned(), Instant::now()));
        Ok(true)
    }

    async fn session(&self, token_hash: &[u8; 32], idle_secs: u64) -> StoreResult<Option<OperatorSession>> {
        let mut inner = self.inner.lock().unwrap();
        let Some((name, csrf, last_seen)) = inner.sessions.get(token_hash).cloned() else { return Ok(None) };
        if last_seen.elapsed() >= Duration::from_secs(idle_secs) {
            inner.sessions.remove(token_hash);
            return Ok(None);
        }
        let Some(record) = inner.find(&name).cloned() else { return Ok(None) };
        if record.disabled {
            return Ok(None);
        }
        inner.sessions.insert(*token_hash, (name, csrf.clone(), Instant::now()));
        Ok(Some(OperatorSession { operator: record.name, role: record.role, csrf }))
    }

    async fn end_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        self.inner.lock().unwrap().sessions.remove(token_hash);
        Ok(())
    }
}

#[async_trait]
impl Audit for MemoryAdmin {
    async fn record(&self, e: &NewAuditEntry) -> StoreResult<i64> {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.audit.len() as i64 + 1;
        inner.audit.push(AuditEntry {
            id,
            at: unix_now(),
            operator: e.operator.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            reason: e.reason.clone(),
            outcome: e.outcome,
            address: e.address.clone(),
        });
        Ok(id)
    }

    async fn entries(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let inner = self.inner.lock().unwrap();
        let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
        Ok(inner
            .audit
            .iter()
            .rev()
            .filter(|e| q.player.as_deref().is_none_or(|p| e.target.as_deref().is_some_and(|t| same(t, p))))
            .filter(|e| q.operator.as_deref().is_none_or(|o| same(&e.operator, o)))
            .filter(|e| q.before.is_none_or(|b| e.id < b))
            .take(q.limit as usize)
            .cloned()
            .collect())
    }
}
