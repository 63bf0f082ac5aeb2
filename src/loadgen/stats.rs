//! Counting and reporting: per-connection recorders merged at the end, live counters
//! for the progress line, and the summary (text or JSON).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Latencies are recorded in microseconds, up to two minutes, to 3 significant digits.
const MAX_LATENCY_US: u64 = 120_000_000;

/// What one connection task measured; merged into one at the end.
pub struct Recorder {
    pub latency: Histogram<u64>,
    pub ops: u64,
    pub deliveries: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            ops: 0,
            deliveries: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn op(&mut self, latency: Duration) {
        self.ops += 1;
        self.latency.saturating_record(micros(latency));
    }

    /// A chat delivery: its latency goes to the histogram, it is not an op.
    pub fn delivery(&mut self, latency: Duration) {
        self.deliveries += 1;
        self.latency.saturating_record(micros(latency));
    }

    pub fn error(&mut self, text: &str) {
        *self.errors.entry(text.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latency.add(&other.latency).expect("same histogram bounds");
        self.ops += other.ops;
        self.deliveries += other.deliveries;
        for (text, n) in other.errors {
            *self.errors.entry(text).or_default() += n;
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// Counters the progress line reads while the run goes on (warm-up included).
#[derive(Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub deliveries: AtomicU64,
    pub open: AtomicU64,
}

impl Live {
    pub fn op(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints one line per second on stderr while `until` has not passed; nothing when
/// stderr is not a terminal (scripts read the summary only).
pub fn spawn_progress(live: Arc<Live>, start: Instant, measure_from: Instant, until: Instant) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let (mut last_ops, mut last_deliveries) = (0, 0);
        loop {
            let now = tick.tick().await;
            if now > until {
                break;
            }
            let ops = live.ops.load(Ordering::Relaxed);
            let deliveries = live.deliveries.load(Ordering::Relaxed);
            let phase = if now < measure_from { "warm-up" } else { "measure" };
            let mut line = format!(
                "[{:>4}s {phase}] {:>8} ops/s  ops {:>9}  errors {:>6}  open {:>6}",
                (now - start).as_secs(),
                ops - last_ops,
                ops,
                live.errors.load(Ordering::Relaxed),
                live.open.load(Ordering::Relaxed),
            );
            if deliveries > 0 {
                line.push_str(&format!("  deliveries/s {:>8}", deliveries - last_deliveries));
            }
            let _ = writeln!(std::io::stderr(), "{line}");
            (last_ops, last_deliveries) = (ops, deliveries);
        }
    });
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |q: f64| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(q)) };
        Latency {
            samples: h.len(),
            mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0.0 } else { ms(h.max()) },
        }
    }
}

/// Resident memory of the node process, before and after its connections opened.
#[derive(Debug, Serialize)]
pub struct NodeMemory {
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub connections: u64,
    pub bytes_per_connection: f64,
}

/// CPU used during the measured window, in cores (CPU seconds per second).
#[derive(Debug, Serialize)]
pub struct CpuWindow {
    pub seconds: f64,
    /// All cores busy (user, nice, system, irq, softirq) on the machine.
    pub machine_busy_cores: f64,
    pub loadgen_cores: f64,
    pub processes: Vec<ProcessCpu>,
}

#[derive(Debug, Serialize)]
pub struct ProcessCpu {
    pub pid: u32,
    pub name: String,
    pub cores: f64,
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading of the CPU times needed for a [`CpuWindow`].
pub struct CpuSample {
    at: Instant,
    machine: Option<u64>,
    own: Option<u64>,
    processes: Vec<(u32, Option<(String, u64)>)>,
}

impl CpuSample {
    pub fn take(pids: &[u32]) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            machine: machine_busy_ticks(),
            own: process_ticks("self").map(|(_, t)| t),
            processes: pids.iter().map(|&pid| (pid, process_ticks(&pid.to_string()))).collect(),
        }
    }

    /// The CPU used between `self` and `later`.
    pub fn until(&self, later: &CpuSample) -> CpuWindow {
        let seconds = (later.at - self.at).as_secs_f64().max(f64::EPSILON);
        let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / TICKS_PER_SECOND / seconds,
            _ => 0.0,
        };
        let processes = self
            .processes
            .iter()
            .zip(&later.processes)
            .map(|((pid, before), (_, after))| ProcessCpu {
                pid: *pid,
                name: after.as_ref().or(before.as_ref()).map_or_else(|| "?".into(), |(n, _)| n.clone()),
                cores: cores(before.as_ref().map(|b| b.1), after.as_ref().map(|a| a.1)),
            })
            .collect();
        CpuWindow {
            seconds,
            machine_busy_cores: cores(self.machine, later.machine),
            loadgen_cores: cores(self.own, later.own),
            processes,
        }
    }
}

/// Name and user+system ticks of a process ("self" for this one), from /proc.
fn process_ticks(pid: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces: fields resume after the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq ...
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)?)
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub urls: Vec<String>,
    pub connections: u64,
    /// Connections open (and authenticated) when the measurement started.
    pub connections_open_at_start: u64,
    /// Connections still open when the measurement ended.
    pub connections_open_at_end: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub setup_s: f64,
    /// Successful ops inside the measured window (`global_chat`: messages echoed to their sender).
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Successful ops over warm-up and measurement together.
    pub ops_including_warmup: u64,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    /// Milliseconds: per op, or (`global_chat`) per delivery, from send to receipt.
    pub latency_ms: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_memory: Option<NodeMemory>,
    /// CPU used during the measured window (this process, `--watch-pid`s, the machine).
    pub cpu: CpuWindow,
}

impl Summary {
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("summary serializes"));
            return;
        }
        let l = &self.latency_ms;
        println!(
            "mode {}  connections {} (open at start {}, at end {})  measured {:.1} s after {:.1} s warm-up (set-up {:.1} s)",
            self.mode,
            self.connections,
            self.connections_open_at_start,
            self.connections_open_at_end,
            self.duration_s,
            self.warmup_s,
            self.setup_s
        );
        println!("ops        {}  ({:.1}/s)", self.ops, self.ops_per_sec);
        if let (Some(senders), Some(d), Some(rate)) = (self.senders, self.deliveries, self.deliveries_per_sec) {
            println!("deliveries {d}  ({rate:.1}/s) from {senders} sender(s)");
        }
        println!("errors     {}", self.errors_total);
        for (text, n) in &self.errors {
            println!("  {n:>8}  {text}");
        }
        let what = if self.deliveries.is_some() { "delivery latency" } else { "latency" };
        println!(
            "{what} ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}  ({} samples)",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.samples
        );
        let c = &self.cpu;
        let mut cpu = format!("cpu (cores) machine {:.2}  loadgen {:.2}", c.machine_busy_cores, c.loadgen_cores);
        for p in &c.processes {
            cpu.push_str(&format!("  {} [{}] {:.2}", p.name, p.pid, p.cores));
        }
        println!("{cpu}");
        if let Some(m) = &self.node_memory {
            println!(
                "node pid {} VmRSS {} KiB -> {} KiB: {:.0} bytes per connection ({} connections)",
                m.pid, m.rss_before_kib, m.rss_after_kib, m.bytes_per_connection, m.connections
            );
        }
    }
}

/// VmRSS of a process, in KiB, from /proc.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
