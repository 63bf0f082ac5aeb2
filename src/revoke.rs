//! `openchampps revoke`: the operator's way to end tokens. Marks them revoked in
//! PostgreSQL (the truth), then drops them and their sessions from the Redis cache,
//! so every node refuses them at once.

use std::time::Duration;

use clap::Args;

use crate::auth::Token;
use crate::config::Config;
use crate::store::Stores;

/// A node that read PostgreSQL just before the revocation may re-cache the token
/// right after the first delete; a second delete after this long closes that gap.
const SECOND_SWEEP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// Revoke every live token of this account (case-insensitive).
    #[arg(long)]
    pub user: Option<String>,
    /// Revoke this one token.
    #[arg(long)]
    pub token: Option<String>,
}

pub async fn run(config: &Config, args: RevokeArgs) -> Result<(), String> {
    let stores = Stores::connect(config).map_err(|e| e.to_string())?;
    let pg = &stores.users;
    let hashes = match (&args.user, &args.token) {
        (Some(user), _) => pg.revoke_user_tokens(user).await.map_err(|e| e.to_string())?,
        (_, Some(token)) => {
            let token = Token::parse(token).ok_or("--token is not a token (a hyphenated UUID)")?;
            let hash = token.hash();
            if !pg.revoke_token(&hash).await.map_err(|e| e.to_string())? {
                return Err("no such token".into());
            }
            vec![hash]
        }
        _ => unreachable!("clap requires one of --user, --token"),
    };
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(SECOND_SWEEP).await;
        }
        if let Err(e) = stores.tokens.forget(&hashes).await {
            return Err(format!(
                "revoked {} token(s) in PostgreSQL but could not clear the Redis cache ({e}); \
                 cached entries expire within TOKEN_CACHE_TTL_SECS",
                hashes.len()
            ));
        }
    }
    println!("revoked {} token(s)", hashes.len());
    Ok(())
}
