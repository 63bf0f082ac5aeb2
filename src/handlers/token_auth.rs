//! `token_auth`: a token issued by any node resumes its session on this one.
//!
//! Cache hit: one Redis round trip, no PostgreSQL (a ban or mute is in the cached
//! entry). Miss (or Redis down): one
//! PostgreSQL query, then the cache is filled. Unknown tokens are cached as negative
//! entries, so repeating a bogus token never reaches PostgreSQL, and the per-connection
//! message rate bounds how many distinct ones a client can try. No rate limit ever
//! refuses a valid token.

use super::{kicked, store_failed, store_skipped, Outcome};
use crate::auth::{Token, TokenHash};
use crate::error::Error;
use crate::metrics::{self as m, CacheOutcome};
use crate::names;
use crate::node::Node;
use crate::protocol::{Reply, ResumeRequest, TokenPayload};
use crate::registry::Via;
use crate::session::{Auth, Session};
use crate::store::{unix_now, CacheLookup, TokenRecord};

pub async fn apply(node: &Node, session: &mut Session, request: Option<TokenPayload>) -> Outcome {
    let Some(TokenPayload { token: sent, resume }) = request else {
        return Err(Error::InvalidTokenFormat);
    };
    let Some(token) = Token::parse(&sent) else {
        return Err(Error::InvalidTokenFormat);
    };
    let hash = token.hash();

    let (record, display_name) = match node.stores.tokens.lookup(&hash).await {
        Ok(CacheLookup::Hit { token: record, display_name }) => {
            m::token_cache(CacheOutcome::Hit);
            if record.expires_at <= unix_now() {
                return Err(Error::InvalidToken);
            }
            (record, display_name)
        }
        Ok(CacheLookup::Negative) => {
            m::token_cache(CacheOutcome::NegativeHit);
            return Err(Error::InvalidToken);
        }
        Ok(CacheLookup::Miss { display_name }) => {
            m::token_cache(CacheOutcome::Miss);
            (from_database(node, &hash, true).await?, display_name)
        }
        Err(e) => {
            store_skipped(e, "token checked in PostgreSQL");
            (from_database(node, &hash, false).await?, None)
        }
    };

    let now = unix_now();
    if let Some(ban) = record.standing.ban(now) {
        return Err(Error::banned(&ban.reason, ban.until));
    }
    if record.standing.kick.is_some() && kicked(node, session, record.user_id).await {
        return Ok(None);
    }
    node.last_used.mark(hash);
    // A display name stored before names had a format (a 16 KB one, say) is not
    // restored: the session starts with the account name, as after a login.
    let display_name =
        display_name.filter(|n| names::is_display_name(n)).unwrap_or_else(|| record.username.as_str().into());
    let reply = Reply::AuthSuccess { username: record.username.clone().into(), token: sent.into() };
    let auth = Auth {
        user_id: record.user_id,
        username: record.username,
        token_hash: hash,
        expires_at: record.expires_at,
        display_name,
        muted_until: record.standing.mute(now).and_then(|m| m.until),
        via: Via::TokenAuth,
        resume: ResumeRequest::opted_in(&resume),
    };
    session.begin(node, auth);
    if ResumeRequest::opted_in(&resume) {
        let from = match &resume {
            Some(ResumeRequest::From(from)) => Some(from),
            _ => None,
        };
        crate::resume::open(node, session, from).await;
    }
    Ok(Some(reply))
}

/// The token's record from PostgreSQL; while Redis is up, cached for the next
/// `token_auth` (an unknown token as unknown).
async fn from_database(node: &Node, hash: &TokenHash, redis_up: bool) -> Result<TokenRecord, Error> {
    let found = node.stores.users.find_token(hash).await.map_err(|e| store_failed(e, Error::AuthServerError))?;
    let Some(record) = found else {
        if redis_up {
            if let Err(e) = node.stores.tokens.cache_negative(hash, node.config.token_negative_ttl_secs).await {
                store_skipped(e, "unknown token not cached");
            }
        }
        return Err(Error::InvalidToken);
    };
    if redis_up {
        if let Err(e) = node.stores.tokens.cache(hash, &record, node.cache_ttl(record.expires_at), None).await {
            store_skipped(e, "token not cached");
        }
    }
    Ok(record)
}
