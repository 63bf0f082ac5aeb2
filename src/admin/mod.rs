//! The admin layer (`docs/ADMIN_API.md`): operators and their sessions, the operator
//! login throttle, the audit log, the `/admin/v1/` API, the console's assets and the
//! command line. Acts on players only through [`Moderation`], which checks the
//! reason and decides what a role may do to a player (`Forbidden`); this layer
//! decides who may read and who manages operators, and writes an audit entry for
//! every state-changing request and every login attempt, whatever its outcome.

pub mod cli;
pub mod http;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::HashPool;
use crate::config::{Config, Settings};
use crate::error::StoreError;
use crate::metrics as m;
use crate::moderation::{Acted, Action, Actor, Moderation, ModerationError, Role, NOT_ALLOWED};
use crate::ratelimit::LoginThrottle;
use crate::store::admin::{Audit, NewAuditEntry, OperatorChange, OperatorRecord, Operators, Outcome};
use crate::store::Stores;

/// Operator names: letters, digits, `_`, `-`, `.`, at most this long.
pub const MAX_OPERATOR_NAME_CHARS: usize = 64;
use crate::config::operator_password_fits;
pub use crate::config::{read_password_file, MIN_OPERATOR_PASSWORD_CHARS};

pub const NO_SUCH_OPERATOR: &str = "No such operator";
pub const OPERATOR_EXISTS: &str = "Operator exists";
pub const NOT_YOURSELF: &str = "You may not disable or demote yourself";
pub const STORE_DOWN: &str = "Store unavailable, try again";
pub const BUSY: &str = "Server busy, try again";

/// An API refusal: its status and `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    /// How an audited request with this refusal ended: a role's refusal, or a failure.
    pub fn outcome(&self) -> Outcome {
        if self.status == 403 {
            Outcome::Refused
        } else {
            Outcome::Failed
        }
    }
}

impl From<ModerationError> for ApiError {
    fn from(e: ModerationError) -> ApiError {
        let message = match &e {
            // The store's reason goes to the log, not to the operator.
            ModerationError::Unavailable(why) => {
                tracing::warn!(reason = %why, "moderation unavailable");
                STORE_DOWN.to_owned()
            }
            other => other.to_string(),
        };
        ApiError { status: e.status(), message }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        crate::error::store_skipped(e, "admin request answered 503");
        ApiError::new(503, STORE_DOWN)
    }
}

/// The admin layer of one process (a node, or the command line).
pub struct Admin {
    pub moderation: Moderation,
    pub operators: Arc<dyn Operators>,
    pub audit: Arc<dyn Audit>,
    throttle: LoginThrottle,
    hasher: HashPool,
    pub session_secs: u64,
    pub config: Config,
}

impl Admin {
    pub fn new(settings: &Settings, stores: &Stores, node_id: String) -> Admin {
        let config = settings.config.clone();
        // Operator logins are few: two hashes at once, a short queue.
        let hasher = HashPool::new(settings.argon2.clone(), 2, 16, 2, 8, config.hash_nice);
        Admin {
            moderation: Moderation::new(stores.clone(), node_id, &config),
            operators: stores.operators.clone(),
            audit: stores.audit.clone(),
            throttle: LoginThrottle::new(stores.limits.clone(), &config),
            hasher,
            session_secs: config.admin_session_secs,
            config,
        }
    }

    /// Appends an audit entry; a failure to do so is logged (the request's own
    /// outcome stands).
    pub async fn record(&self, entry: NewAuditEntry) {
        if let Err(e) = self.audit.record(&entry).await {
            tracing::error!(error = %e, operator = %entry.operator, action = %entry.action, "could not write an audit entry");
        }
    }

    /// Records a request that ended in `error` before it reached its action (refused
    /// by role or CSRF, or malformed), and returns the error.
    pub async fn record_error(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        reason: Option<&str>,
        error: ApiError,
    ) -> ApiError {
        self.record(NewAuditEntry {
            operator: actor.name.clone(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            reason: reason.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned),
            outcome: error.outcome(),
            address: actor.address.map(|a| a.to_string()),
            detail: Some(error_detail(&error)),
        })
        .await;
        error
    }

    /// Hashes an operator's new password (argon2id, the node's parameters).
    pub async fn hash_password(&self, password: &str) -> Result<String, ApiError> {
        check_password(password)?;
        let turn = self.hasher.line_up(IpAddr::from([127, 0, 0, 1])).await;
        let place = self.hasher.admit(&turn).map_err(|_| ApiError::new(503, BUSY))?;
        Ok(self.hasher.hash(place, password.to_owned()).await)
    }

    /// Does `action` to `username` as `actor`, recording the request in the audit log
    /// and the metrics whatever comes of it.
    pub async fn act(&self, actor: &Actor, username: &str, action: Action, reason: &str) -> Result<Acted, ApiError> {
        let name = action.name();
        // The role policy is Moderation's (`Forbidden`), as is the check of the reason.
        let result = self.moderation.act(username, action, reason, actor).await.map_err(ApiError::from);
        let (outcome, target, detail) = match &result {
            Ok(acted) => (Outcome::Ok, acted.player.clone(), None),
            Err(e) => (e.outcome(), username.to_owned(), Some(error_detail(e))),
        };
        tracing::info!(
            operator = %actor.name,
            action = name,
            target = %target,
            outcome = outcome.as_str(),
            "moderation action"
        );
        m::moderation_action(
            name,
            match outcome {
                Outcome::Ok => m::ActionOutcome::Ok,
                Outcome::Refused => m::ActionOutcome::Refused,
                Outcome::Failed => m::ActionOutcome::Failed,
            },
        );
        self.record(NewAuditEntry {
            operator: actor.name.clone(),
            action: name.to_owned(),
            target: Some(target),
            reason: Some(reason.trim().to_owned()).filter(|r| !r.is_empty()),
            outcome,
            address: actor.address.map(|a| a.to_string()),
            detail,
        })
        .await;
        result
    }

    /// Creates an operator as `actor` (an admin), audited.
    pub async fn add_operator(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
        password: &str,
    ) -> Result<OperatorRecord, ApiError> {
        let result = async {
            require_admin(actor)?;
            check_operator_name(name)?;
            let hash = self.hash_password(password).await?;
            self.operators.create_operator(name, role, &hash).await?.ok_or_else(|| ApiError::new(409, OPERATOR_EXISTS))
        }
        .await;
        self.record_operator(actor, "operator-add", name, &result, Some(format!("{{\"role\":\"{}\"}}", role.as_str())))
            .await;
        result
    }

    /// Changes an operator as `actor` (an admin): one audit entry per change asked for.
    pub async fn update_operator(
        &self,
        actor: &Actor,
        name: &str,
        role: Option<Role>,
        disabled: Option<bool>,
        password: Option<&str>,
    ) -> Result<OperatorRecord, ApiError> {
        let result = async {
            require_admin(actor)?;
            if role.is_none() && disabled.is_none() && password.is_none() {
                return Err(ApiError::new(400, "Nothing to change: give role, disabled or password"));
            }
            let demoted = role.is_some_and(|r| r != Role::Admin);
            if name.to_lowercase() == actor.name.to_lowercase() && (demoted || disabled == Some(true)) {
                return Err(ApiError::new(409, NOT_YOURSELF));
            }
            let password_hash = match password {
                Some(p) => Some(self.hash_password(p).await?),
                None => None,
            };
            let change = OperatorChange { role, disabled, password_hash };
            self.operators.update_operator(name, &change).await?.ok_or_else(|| ApiError::new(404, NO_SUCH_OPERATOR))
        }
        .await;
        let mut actions = Vec::new();
        if let Some(role) = role {
            actions.push(("operator-set-role", Some(format!("{{\"role\":\"{}\"}}", role.as_str()))));
        }
        match disabled {
            Some(true) => actions.push(("operator-disable", None)),
            Some(false) => actions.push(("operator-enable", None)),
            None => {}
        }
        if password.is_some() {
            actions.push(("operator-password", None));
        }
        if actions.is_empty() {
            actions.push(("operator-set-role", None));
        }
        for (action, detail) in actions {
            self.record_operator(actor, action, name, &result, detail).await;
        }
        result
    }

    async fn record_operator(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        result: &Result<OperatorRecord, ApiError>,
        detail: Option<String>,
    ) {
        let (outcome, detail, target) = match result {
            Ok(record) => (Outcome::Ok, detail, record.name.clone()),
            Err(e) => (e.outcome(), Some(error_detail(e)), target.to_owned()),
        };
        self.record(NewAuditEntry {
            operator: actor.name.clone(),
            action: action.to_owned(),
            target: Some(target),
            reason: None,
            outcome,
            address: actor.address.map(|a| a.to_string()),
            detail,
        })
        .await;
    }

    /// Creates the first admin from ADMIN_BOOTSTRAP_NAME and ADMIN_BOOTSTRAP_PASSWORD_FILE
    /// when no operator exists yet.
    pub async fn bootstrap(&self) -> Result<(), String> {
        let (Some(name), Some(file)) = (&self.config.admin_bootstrap_name, &self.config.admin_bootstrap_password_file)
        else {
            return Ok(());
        };
        if self.operators.count_operators().await.map_err(|e| e.to_string())? > 0 {
            return Ok(());
        }
        let password = read_password_file(file)?;
        check_operator_name(name).map_err(|e| format!("ADMIN_BOOTSTRAP_NAME: {}", e.message))?;
        let hash =
            self.hash_password(&password).await.map_err(|e| format!("ADMIN_BOOTSTRAP_PASSWORD_FILE: {}", e.message))?;
        if let Some(created) =
            self.operators.create_first_operator(name, Role::Admin, &hash).await.map_err(|e| e.to_string())?
        {
            tracing::info!(operator = %created.name, "created the first admin (ADMIN_BOOTSTRAP_NAME)");
            self.record(NewAuditEntry {
                operator: "bootstrap".into(),
                action: "operator-add".into(),
                target: Some(created.name),
                reason: Some("ADMIN_BOOTSTRAP_NAME".into()),
                outcome: Outcome::Ok,
                address: None,
                detail: Some("{\"role\":\"admin\"}".into()),
            })
            .await;
        }
        Ok(())
    }
}

pub fn require_admin(actor: &Actor) -> Result<(), ApiError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(403, NOT_ALLOWED))
    }
}

pub fn check_operator_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_OPERATOR_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    // `cli:` names the command line in the audit log: no operator can take it.
    if !ok {
        return Err(ApiError::new(
            400,
            format!("An operator name is 1 to {MAX_OPERATOR_NAME_CHARS} letters, digits, '_', '-' or '.'"),
        ));
    }
    Ok(())
}

pub fn check_password(password: &str) -> Result<(), ApiError> {
    if !operator_password_fits(password) {
        return Err(ApiError::new(
            400,
            format!("An operator password is at least {MIN_OPERATOR_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `{"status":…,"error":…}`: what an audited request was refused with.
fn error_detail(e: &ApiError) -> String {
    serde_json::json!({"status": e.status, "error": e.message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_and_passwords() {
        assert!(check_operator_name("alice.b-2_x").is_ok());
        for bad in ["", "cli:root", "a b", &"a".repeat(65), "bøb"] {
            assert_eq!(check_operator_name(bad).unwrap_err().status, 400, "{bad:?}");
        }
        assert!(check_password("eight ch").is_ok());
        assert!(check_password("seven c").is_err());
    }
}
