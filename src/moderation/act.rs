//! `Moderation::act`: the role policy of MODERATION.md, then the action, durable
//! first (PostgreSQL), then the token cache (so no node's `token_auth` finds the
//! account's standing stale), then the live sessions on every node (the bus).

use std::time::Duration;

use super::{
    rfc3339, unavailable, Acted, Action, Actor, Moderation, ModerationError, Role, MAX_REASON_CHARS,
    MODERATOR_BAN_LIMIT, MODERATOR_LIFTS_OWN, MODERATOR_MAX_BAN_SECS, NOT_ALLOWED, NO_ACTIVE_BAN, NO_ACTIVE_MUTE,
    REASON_REQUIRED,
};
use crate::auth::TokenHash;
use crate::error::store_skipped;
use crate::outbox::Moderated;
use crate::store::{unix_now, AccountRecord, BusEvent, Sanction, SanctionKind};

/// A node that read PostgreSQL just before the change may cache the account's old
/// standing right after the first sweep; a second sweep this long after closes that gap.
const SECOND_SWEEP: Duration = Duration::from_secs(2);

/// The longest ban or mute that is not permanent: 100 years.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

impl Moderation {
    /// Does `action` to `username`'s account, if `actor`'s role allows it.
    pub async fn act(
        &self,
        username: &str,
        action: Action,
        reason: &str,
        actor: &Actor,
    ) -> Result<Acted, ModerationError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ModerationError::BadInput(REASON_REQUIRED.into()));
        }
        allowed(&action, actor.role)?;
        let secs = match action {
            Action::Ban { secs: Some(secs) } | Action::Mute { secs } => Some(secs),
            _ => None,
        };
        if secs.is_some_and(|secs| secs == 0 || secs > MAX_DURATION_SECS) {
            return Err(ModerationError::BadInput(format!("duration_secs must be between 1 and {MAX_DURATION_SECS}")));
        }
        let account = self.account(username).await?;
        let now = unix_now();
        let sanction = |until| Sanction { reason: reason.to_owned(), until, by: actor.name.clone(), at: now };
        let (until, sessions) = match action {
            Action::Ban { secs } => {
                let until = secs.map(|s| now + s as i64);
                self.stores
                    .moderation
                    .impose(account.id, SanctionKind::Ban, &sanction(until))
                    .await
                    .map_err(unavailable)?;
                // Its tokens end with it; the ban is what their holders are told.
                self.stores.users.revoke_user_tokens(&account.username).await.map_err(unavailable)?;
                self.refresh_cache(&account).await?;
                (until, self.tell(&account, Moderated::Banned { reason: reason.to_owned(), until }).await)
            }
            Action::Mute { secs } => {
                let until = now + secs as i64;
                self.stores
                    .moderation
                    .impose(account.id, SanctionKind::Mute, &sanction(Some(until)))
                    .await
                    .map_err(unavailable)?;
                self.refresh_cache(&account).await?;
                (Some(until), self.tell(&account, Moderated::Muted { until: Some(until) }).await)
            }
            Action::Unban | Action::Unmute => {
                let kind = if action == Action::Unban { SanctionKind::Ban } else { SanctionKind::Mute };
                self.lift(&account, kind, reason, actor).await?;
                self.refresh_cache(&account).await?;
                let sessions = match kind {
                    SanctionKind::Mute => self.tell(&account, Moderated::Muted { until: None }).await,
                    SanctionKind::Ban => 0,
                };
                (None, sessions)
            }
            Action::Kick => {
                let sessions = self.session_count(&account).await;
                if sessions > 0 {
                    self.publish(&account, Moderated::Kicked { reason: reason.to_owned() }).await;
                } else {
                    // Nobody to kick now: the account's next session is (once: a kick
                    // also sent over the bus would kick the session after that too).
                    self.stores.moderation.pend_kick(account.id, reason, &actor.name).await.map_err(unavailable)?;
                    self.refresh_cache(&account).await?;
                }
                (None, sessions)
            }
            Action::ResetName => {
                // A reconnecting session gets its display name from here.
                let tokens = self.tokens(&account).await?;
                for token in &tokens {
                    let set = self.stores.sessions.set_display_name(token, &account.username, self.session_ttl_secs);
                    if let Err(e) = set.await {
                        store_skipped(e, "a token's stored display name kept");
                    }
                }
                (None, self.tell(&account, Moderated::NameReset).await)
            }
            Action::RevokeTokens => {
                self.stores.users.revoke_user_tokens(&account.username).await.map_err(unavailable)?;
                self.refresh_cache(&account).await?;
                (None, self.tell(&account, Moderated::TokensRevoked).await)
            }
        };
        Ok(Acted { player: account.username, action: action.name(), until: until.map(rfc3339), sessions })
    }

    /// Lifts the account's `kind` in force; a moderator only its own.
    async fn lift(
        &self,
        account: &AccountRecord,
        kind: SanctionKind,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), ModerationError> {
        let standing = self.stores.moderation.standing(account.id).await.map_err(unavailable)?;
        let now = unix_now();
        let (current, none) = match kind {
            SanctionKind::Ban => (standing.ban(now), NO_ACTIVE_BAN),
            SanctionKind::Mute => (standing.mute(now), NO_ACTIVE_MUTE),
        };
        let current = current.ok_or(ModerationError::Conflict(none))?;
        if actor.role < Role::Admin && current.by != actor.name {
            return Err(ModerationError::Forbidden(MODERATOR_LIFTS_OWN));
        }
        let lifted = self.stores.moderation.lift(account.id, kind, &actor.name, reason).await.map_err(unavailable)?;
        lifted.map(drop).ok_or(ModerationError::Conflict(none))
    }

    /// Every unexpired token of the account (revoked ones too).
    async fn tokens(&self, account: &AccountRecord) -> Result<Vec<TokenHash>, ModerationError> {
        self.stores.moderation.account_tokens(account.id).await.map_err(unavailable)
    }

    /// Drops the account's tokens from the cache, now and once more shortly after, so
    /// the next `token_auth` anywhere reads the new standing from PostgreSQL.
    async fn refresh_cache(&self, account: &AccountRecord) -> Result<(), ModerationError> {
        let tokens = self.tokens(account).await?;
        if tokens.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.stores.tokens.forget(&tokens).await {
            // Still enforced: each node's session check reads PostgreSQL every
            // SESSION_CHECK_SECS, and cached entries expire.
            store_skipped(e, "the account's cached tokens expire on their own");
            return Ok(());
        }
        let cache = self.stores.tokens.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SECOND_SWEEP).await;
            if let Err(e) = cache.forget(&tokens).await {
                store_skipped(e, "the account's cached tokens expire on their own");
            }
        });
        Ok(())
    }

    /// Asks every live session of the account, on every node, to carry out `action`;
    /// returns how many sessions there were.
    async fn tell(&self, account: &AccountRecord, action: Moderated) -> u64 {
        let count = self.session_count(account).await;
        self.publish(account, action).await;
        count
    }

    async fn session_count(&self, account: &AccountRecord) -> u64 {
        let sessions = self.sessions(std::slice::from_ref(&account.username)).await;
        sessions.values().map(|s| s.len() as u64).sum()
    }

    async fn publish(&self, account: &AccountRecord, action: Moderated) {
        let event = BusEvent::Moderate { account: account.username.clone(), action };
        if let Err(e) = self.stores.bus.publish(&event).await {
            store_skipped(e, "live sessions learn of a ban or mute at their next session check");
        }
    }
}

/// The role policy of MODERATION.md, as far as it does not depend on the account.
fn allowed(action: &Action, role: Role) -> Result<(), ModerationError> {
    match (role, action) {
        (Role::Admin, _) => Ok(()),
        (Role::Viewer, _) | (Role::Moderator, Action::RevokeTokens) => Err(ModerationError::Forbidden(NOT_ALLOWED)),
        (Role::Moderator, Action::Ban { secs }) if secs.is_none_or(|s| s > MODERATOR_MAX_BAN_SECS) => {
            Err(ModerationError::Forbidden(MODERATOR_BAN_LIMIT))
        }
        (Role::Moderator, _) => Ok(()),
    }
}
