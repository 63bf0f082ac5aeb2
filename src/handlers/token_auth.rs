//! `token_auth`: a token issued by any node resumes its session on this one.
//!
//! Cache hit: one Redis round trip, no PostgreSQL. Miss (or Redis down): one
//! PostgreSQL query, then the cache is filled. Unknown tokens are cached as negative
//! entries, so repeating a bogus token never reaches PostgreSQL, and the per-connection
//! message rate bounds how many distinct ones a client can try. No rate limit ever
//! refuses a valid token.

use serde_json::value::RawValue;

use super::{store_failed, Outcome};
use crate::auth::Token;
use crate::error::Error;
use crate::metrics::{self as m, CacheOutcome};
use crate::names;
use crate::node::Node;
use crate::protocol::{parse_object, Reply, TokenPayload};
use crate::session::{Auth, Session};
use crate::store::{unix_now, CacheLookup};

pub async fn apply(node: &Node, session: &mut Session, payload: Option<&RawValue>) -> Outcome {
    let Some(TokenPayload { token: sent }) = parse_object(payload) else {
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
        lookup => {
            let (display_name, redis_up) = match lookup {
                Ok(CacheLookup::Miss { display_name }) => {
                    m::token_cache(CacheOutcome::Miss);
                    (display_name, true)
                }
                _ => (None, false),
            };
            let found =
                node.stores.users.find_token(&hash).await.map_err(|e| store_failed(e, Error::AuthServerError))?;
            let Some(record) = found else {
                if redis_up {
                    let _ = node.stores.tokens.cache_negative(&hash, node.config.token_negative_ttl_secs).await;
                }
                return Err(Error::InvalidToken);
            };
            if redis_up {
                let _ = node.stores.tokens.cache(&hash, &record, node.cache_ttl(record.expires_at), None).await;
            }
            (record, display_name)
        }
    };

    node.last_used.mark(hash);
    // A display name stored before names had a format (a 16 KB one, say) is not
    // restored: the session starts with the account name, as after a login.
    let display_name = display_name.filter(|n| names::display_name(n).as_ref() == Some(n));
    let display_name = display_name.as_deref().unwrap_or(&record.username).into();
    let reply = Reply::AuthSuccess { username: record.username.as_str().into(), token: sent.into() }.to_json();
    let auth = Auth {
        user_id: record.user_id,
        username: record.username,
        token_hash: hash,
        expires_at: record.expires_at,
        display_name,
    };
    session.begin(node, auth);
    Ok(Some(reply))
}
