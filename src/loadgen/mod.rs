//! `openchampps bench`: a closed-loop load generator over real WebSockets.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> Result<(), String> {
    Err("not implemented yet".into())
}
