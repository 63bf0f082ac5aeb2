//! `openchampps bench`: a closed-loop load generator over real WebSockets.
//!
//! It creates its own accounts (the `register` message, or `login` when they exist),
//! opens `--connections` connections spread round-robin over the `--url`s, runs the
//! chosen mode for `--warmup` plus `--duration`, and prints ops, ops/s, errors by
//! text and latency percentiles (or, with `--json`, the same as one JSON object).
//!
//! - `args`: the options; `client`: one WebSocket client speaking the protocol;
//! - `modes`: set-up and the loop of each mode; `stats`: recording and the report.

mod args;
mod client;
mod modes;
mod stats;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

pub use args::{BenchArgs, Mode};
use client::Target;
use modes::{Ended, Plan, Window};
use stats::{CpuSample, Latency, Live, NodeMemory, Recorder, Summary};

/// Towards a loopback node, more connections than this are spread over several
/// source addresses: one address has ~28,000 ephemeral ports.
const ONE_SOURCE_ADDRESS_LIMIT: u64 = 10_000;

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.mode == Mode::GlobalChat && args.senders > args.connections {
        return Err(format!("--senders ({}) cannot exceed --connections ({})", args.senders, args.connections));
    }
    let mut targets = Vec::new();
    for url in &args.urls {
        targets.push(Target::resolve(url).await?);
    }
    let binds = source_addresses(&args, &targets);
    check_fd_limit(args.connections);

    let setup_started = Instant::now();
    let prefix = args.account_prefix.clone().unwrap_or_else(|| format!("lg{:08x}_", rand::random::<u32>()));
    note(&format!(
        "{}: {} connection(s) to {} node(s); preparing {} account(s) {prefix}0…",
        args.mode.name(),
        args.connections,
        targets.len(),
        args.accounts
    ));
    let accounts = modes::create_accounts(&args, &targets, &binds, &prefix).await?;
    // Processes may end meanwhile (a database backend): only the node's absence
    // matters, and only for the idle mode's memory figure.
    for &pid in &args.watch_pids {
        if stats::vm_rss_kib(pid).is_none() {
            note(&format!("warning: --watch-pid {pid}: no such process on this machine; not accounted for"));
        }
    }
    let node_pid = args.watch_pids.first().copied();
    let rss_before = node_pid.and_then(stats::vm_rss_kib);
    if let (Mode::Idle, Some(pid), None) = (args.mode, node_pid, rss_before) {
        return Err(format!("--watch-pid {pid}: cannot read /proc/{pid}/status, so no memory figure"));
    }

    let live = Arc::new(Live::default());
    let plan = Arc::new(Plan { args: args.clone(), targets, binds, accounts, live: live.clone() });
    note(&format!("opening {} connection(s)…", args.connections));
    let (clients, setup) = modes::open_all(&plan).await;
    let opened = live.open.load(Ordering::Relaxed);
    if opened == 0 {
        let why = setup.errors.keys().next().cloned().unwrap_or_default();
        return Err(format!("no connection could be opened ({why})"));
    }
    let setup_s = setup_started.elapsed().as_secs_f64();

    let start = Instant::now();
    let (warmup, duration) =
        if args.mode == Mode::Idle { (std::time::Duration::ZERO, args.duration) } else { (args.warmup, args.duration) };
    let window = Window { base: start, measure_from: start + warmup, until: start + warmup + duration };
    note(&format!("{opened} open; running {:.1} s warm-up + {:.1} s", warmup.as_secs_f64(), duration.as_secs_f64()));
    stats::spawn_progress(live.clone(), start, window.measure_from, window.until);
    let cpu = tokio::spawn({
        let pids = args.watch_pids.clone();
        async move {
            tokio::time::sleep_until(window.measure_from).await;
            let before = CpuSample::take(&pids);
            tokio::time::sleep_until(window.until).await;
            before.until(&CpuSample::take(&pids))
        }
    });

    let mut tasks = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let plan = plan.clone();
        match args.mode {
            Mode::Idle => {
                // Held a little past the window so the memory sample sees them all.
                tasks.spawn(modes::hold(plan, client, window.until + std::time::Duration::from_millis(500)));
            }
            Mode::GlobalChat => {
                let sender = (i as u64) < args.senders;
                tasks.spawn(modes::chat(plan, i, client, window, sender));
            }
            Mode::Resume => {
                tasks.spawn(modes::resume_loop(plan, i, client, window));
            }
            _ => {
                tasks.spawn(modes::closed_loop(plan, i, client, window));
            }
        }
    }

    let mut node_memory = None;
    if args.mode == Mode::Idle {
        tokio::time::sleep_until(window.until).await;
        let open_now = live.open.load(Ordering::Relaxed);
        if let (Some(pid), Some(before)) = (node_pid, rss_before) {
            let after = stats::vm_rss_kib(pid).unwrap_or(0);
            node_memory = Some(NodeMemory {
                pid,
                rss_before_kib: before,
                rss_after_kib: after,
                connections: open_now,
                bytes_per_connection: (after as f64 - before as f64) * 1024.0 / open_now.max(1) as f64,
            });
        }
    }

    let cpu = cpu.await.map_err(|e| format!("the CPU sampler failed: {e}"))?;
    let ops_including_warmup = live.ops.load(Ordering::Relaxed);
    let mut total = Recorder::default();
    let mut open_at_end = 0;
    while let Some(ended) = tasks.join_next().await {
        let Ended { recorder, open } = ended.map_err(|e| format!("a connection task failed: {e}"))?;
        total.merge(recorder);
        open_at_end += u64::from(open);
    }

    let seconds = duration.as_secs_f64().max(f64::EPSILON);
    // In idle mode the ops are the connections opened, and the latency is each one's
    // connect + handshake + token_auth time; otherwise the measured window's ops.
    let idle = args.mode == Mode::Idle;
    let (measured, other, window_s, warmup_s, ops_including_warmup) = if idle {
        (&setup, &total, setup_s.max(f64::EPSILON), 0.0, setup.ops)
    } else {
        (&total, &setup, seconds, warmup.as_secs_f64(), ops_including_warmup)
    };
    let mut errors = measured.errors.clone();
    for (text, n) in &other.errors {
        *errors.entry(text.clone()).or_default() += n;
    }
    let chat = args.mode == Mode::GlobalChat;
    let summary = Summary {
        mode: args.mode.name(),
        urls: args.urls.clone(),
        connections: args.connections,
        connections_open_at_start: opened,
        connections_open_at_end: open_at_end,
        warmup_s,
        duration_s: seconds,
        setup_s,
        ops: measured.ops,
        ops_per_sec: measured.ops as f64 / window_s,
        ops_including_warmup,
        errors_total: errors.values().sum(),
        errors,
        latency_ms: Latency::of(&measured.latency),
        senders: chat.then_some(args.senders),
        deliveries: chat.then_some(total.deliveries),
        deliveries_per_sec: chat.then_some(total.deliveries as f64 / seconds),
        node_memory,
        cpu,
    };
    summary.print(args.json);
    Ok(())
}

/// `--bind` as given; by default, 127.0.0.2 … 127.0.0.9 when many connections go to
/// a loopback node (a single source address would run out of ephemeral ports).
fn source_addresses(args: &BenchArgs, targets: &[Target]) -> Vec<IpAddr> {
    if !args.bind.is_empty() {
        return args.bind.clone();
    }
    let all_loopback_v4 = targets.iter().all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    if all_loopback_v4 && args.connections > ONE_SOURCE_ADDRESS_LIMIT {
        return (2..=9).map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).collect();
    }
    Vec::new()
}

/// Warns when this process may not open that many sockets.
fn check_fd_limit(connections: u64) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft {
        if connections + 32 > soft {
            note(&format!(
                "warning: {connections} connections but only {soft} file descriptors allowed (raise `ulimit -n`, or split the load over several processes)"
            ));
        }
    }
}

fn note(text: &str) {
    eprintln!("bench: {text}");
}
