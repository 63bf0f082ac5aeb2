use clap::Parser;
use openchampps::config::{Cli, Command};
use openchampps::server;

#[tokio::main]
async fn main() {
    // Argon2 allocates ~19 MiB per hash. glibc raises its mmap threshold after the
    // first such block is freed, and from then on serves them from arenas it never
    // gives back: RSS climbs by hundreds of MiB over a few login floods. A fixed
    // threshold keeps big blocks on mmap, returned to the OS when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    if let Err(e) = cli.config.validate() {
        eprintln!("openchampps: {e}");
        std::process::exit(2);
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::run(cli.config, server::shutdown_signal()).await,
        Command::Bench(args) => openchampps::loadgen::run(args).await,
        Command::Revoke(args) => openchampps::revoke::run(&cli.config, args).await,
    };
    if let Err(e) = result {
        eprintln!("openchampps: {e}");
        std::process::exit(1);
    }
}
