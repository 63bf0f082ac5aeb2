use clap::{Parser, Subcommand};
use openchampps::config::Config;
use openchampps::{admin, loadgen, matchmaking, migrate, revoke, server};

#[derive(Debug, Parser)]
#[command(name = "openchampps", version, about = "OpenChampPS login/lobby node")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve WebSocket clients (the default).
    Serve,
    /// Drive one or more nodes with a closed-loop load over real WebSockets.
    Bench(loadgen::BenchArgs),
    /// Revoke tokens: every token of a user, or one token. Takes effect on every node.
    Revoke(revoke::RevokeArgs),
    /// Apply the database migrations without serving, first taking over a Go
    /// OpenChampPS database in place; `--check` only reports what that would do.
    Migrate(migrate::MigrateArgs),
    /// Check a match join ticket with the MATCH_TICKET_KEYS, as a game server would.
    Ticket(matchmaking::TicketArgs),
    /// Operators and moderation (docs/ADMIN_API.md): `operator`, `player`, `ban`, …
    #[command(flatten)]
    Admin(admin::cli::AdminCommand),
}

/// mimalloc, not glibc's malloc: a `token_auth` makes ~17 small allocations, and
/// glibc's malloc/free pair cost ~230 instructions each (a fifth of the message's
/// cost, bench/callgrind.sh); mimalloc's size-class free lists cost a fraction.
/// It also gives Argon2's ~19 MiB blocks back to the OS after use, which glibc did
/// only with a fixed mmap threshold (RSS climbed by hundreds of MiB over a few
/// login floods without it: tests/it/faults.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // The admin commands print what they are asked for (`--json` too) on stdout: their
    // log goes to stderr.
    let (writer, ansi) = if matches!(cli.command, Some(Command::Admin(_))) {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        (tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr), ansi)
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        (tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout), ansi)
    };
    tracing_subscriber::fmt().with_env_filter(openchampps::log_filter()).with_writer(writer).with_ansi(ansi).init();
    let settings = cli.config.validate().unwrap_or_else(|e| {
        eprintln!("openchampps: {e}");
        std::process::exit(2);
    });
    let config = &settings.config;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Bench(args) => loadgen::run(args).await,
        Command::Revoke(args) => revoke::run(config, args).await,
        Command::Migrate(args) => migrate::run(config, args).await,
        Command::Ticket(args) => matchmaking::ticket_command(config, args),
        Command::Admin(command) => admin::cli::run(&settings, command).await,
        Command::Serve => server::serve(settings).await,
    };
    if let Err(e) = result {
        eprintln!("openchampps: {e}");
        std::process::exit(1);
    }
}
