//! The `migrate` command: what a node's start-up does to the database (taking over a
//! Go server's, applying the migrations), without serving; or, with `--check`, a
//! report of what taking over would do.

use clap::Args;

use crate::config::Config;
use crate::store::postgres::PgStore;
use crate::store::takeover;
use crate::store::UserStore;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Only report what taking over a Go server's database would do: counts of users,
    /// tokens and rows that cannot be converted. Changes nothing.
    #[arg(long)]
    pub check: bool,
}

/// The `migrate` command: takes over a Go server's database and applies the node's
/// migrations, as a node's start-up does, without serving; with `--check`, reports.
pub async fn run(config: &Config, args: MigrateArgs) -> Result<(), String> {
    let url = config.database_url();
    let migration_url = config.db_migration_url.clone().unwrap_or_else(|| url.clone());
    if args.check {
        return takeover::check(&migration_url).await;
    }
    let store = PgStore::connect(&url, &migration_url, 1).map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    println!("the database has the node's schema and every migration is applied");
    Ok(())
}
