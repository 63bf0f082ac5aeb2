#!/usr/bin/env bash
# Redis cost per operation on each Redis topology: one server, Sentinel, Cluster.
#
#   bash bench/topology_costs.sh                     # all three, ~2 minutes on 2 cores
#   TOPOLOGIES="cluster" DUR=2s bash bench/topology_costs.sh
#
# For each topology it starts a private Redis set (scripts/redis-topology.sh: a fresh
# redis-server, a master + replica + 3 sentinels, or a 3-master Cluster), a fresh
# PostgreSQL database (127.0.0.1:5432, user postgres; dropped afterwards) and one node
# (release build, rate limits off, its own REDIS_KEY_PREFIX). Then, per operation,
# it sends CONFIG RESETSTAT to every data server (masters and replicas, never the
# sentinels), runs `openchampps bench --mode OP -c 32 -d 4s --json`, and sums
# `INFO commandstats` (calls, usec) over the data servers. It prints a markdown table
# on stdout (also written to $OUT when set):
#
# - ops: the load generator's successful ops in the measured window (global_chat: messages
#   echoed to their sender; each also reaches the other 31 connections);
# - commands/op and cmd µs/op: commandstats calls and usec summed over the data servers
#   (INFO and CONFIG RESETSTAT left out), divided by the ops of warm-up and measured window
#   together (the counters also see the 32 connections' set-up and the node's background
#   work: heartbeat, matchmaking rounds, cache refresh; sentinels' pings and a replica's
#   replication stream count where they run). usec is time inside commands only;
# - redis-server CPU µs/op and node CPU µs/op: the processes' CPU time (/proc, through
#   the load generator's --watch-pid) in the measured window ÷ its ops: what the servers
#   really spend, network I/O and (Cluster) the bus included;
# - top commands: the most frequent commands per op.
#
# Settings (environment): TOPOLOGIES ("single sentinel cluster"), OPS (token_auth
# set_username count global_chat, + private_chat when the load generator has it),
# CONNS (32), DUR (4s), WARMUP (1s), OUT (none), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

TOPOLOGIES=${TOPOLOGIES:-"single sentinel cluster"}
CONNS=${CONNS:-32}
DUR=${DUR:-4s}
WARMUP=${WARMUP:-1s}
ACCOUNTS=16
BIN=target/release/openchampps
STAMP="$(date +%s)$$"
WORK=$(mktemp -d /tmp/openchampps-topology.XXXXXX)
ROWS="$WORK/rows.jsonl"
NODE_PID=""
TOPO_DIR=""
DB=""

log() { echo "bench/topology_costs.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
. bench/lib.sh

psql_admin() { psql -h 127.0.0.1 -U postgres -qAt "$@"; }


stop_topology() {
  stop_node
  if [ -n "$TOPO_DIR" ]; then bash scripts/redis-topology.sh stop "$TOPO_DIR" 2>/dev/null || true; fi
  TOPO_DIR=""
  if [ -n "$DB" ]; then psql_admin -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true; fi
  DB=""
}

cleanup() {
  stop_topology
  if [ "${KEEP:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 - <<'EOF'
import random, socket
for _ in range(1000):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port in 20000-31999")
EOF
}

# --- services, build ------------------------------------------------------------------
bash scripts/services.sh >/dev/null
log "building the release binary"
cargo build --release --bin openchampps 2>&1 | tail -n 1 >&2
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -z "${OPS:-}" ]; then
  OPS="token_auth set_username count global_chat"
  if "$BIN" bench --help | grep -qw private_chat; then
    OPS+=" private_chat"
  else
    log "the load generator has no private_chat mode: not measured"
  fi
fi

# --- one topology --------------------------------------------------------------------------
run_node() {
  start_node "$WORK/node-$TOPO.log" "$2" "$3" \
    DB_CONN="postgres://postgres@127.0.0.1/$DB" REDIS_URL="$1" REDIS_KEY_PREFIX="topo$STAMP:" NODE_ID="topology-bench"
}

for TOPO in $TOPOLOGIES; do
  case "$TOPO" in single | sentinel | cluster) ;; *) log "unknown topology $TOPO"; exit 2 ;; esac
  log "$TOPO: starting Redis"
  TOPO_DIR="$WORK/redis-$TOPO"
  url=$(bash scripts/redis-topology.sh "$TOPO" "$TOPO_DIR")
  mapfile -t data_ports <"$TOPO_DIR/data-ports"
  data_pids=()
  for p in "${data_ports[@]}"; do data_pids+=("$(cat "$TOPO_DIR/redis-$p.pid")"); done

  DB="ocps_topo_${STAMP}_$TOPO"
  psql_admin -c "CREATE DATABASE \"$DB\"" >/dev/null
  node_port=$(free_port)
  metrics_port=$(free_port)
  run_node "$url" "$node_port" "$metrics_port"
  node_url="ws://127.0.0.1:$node_port/ws"
  log "$TOPO: node $NODE_PID on $node_url, REDIS_URL=$url, data servers ${data_ports[*]}"

  watch=(--watch-pid "$NODE_PID")
  for pid in "${data_pids[@]}"; do watch+=(--watch-pid "$pid"); done
  common=(--url "$node_url" --json --accounts "$ACCOUNTS" --account-prefix "topo${STAMP}_")
  # Creates the accounts, so the measured runs' set-up is only logging in.
  "$BIN" bench "${common[@]}" --mode count -c 1 --warmup 0 -d 200ms >/dev/null 2>"$WORK/accounts-$TOPO.err" \
    || { tail -n 5 "$WORK/accounts-$TOPO.err" >&2; log "$TOPO: creating accounts failed"; exit 1; }

  for op in $OPS; do
    base="$WORK/$TOPO.$op"
    for p in "${data_ports[@]}"; do redis-cli -h 127.0.0.1 -p "$p" CONFIG RESETSTAT >/dev/null; done
    extra=()
    [ "$op" = global_chat ] && extra=(--senders 1)
    "$BIN" bench "${common[@]}" "${watch[@]}" --mode "$op" -c "$CONNS" --warmup "$WARMUP" -d "$DUR" "${extra[@]}" \
      >"$base.json" 2>"$base.err" \
      || { tail -n 5 "$base.err" >&2; log "$TOPO $op: the load generator failed"; exit 1; }
    stats=()
    for p in "${data_ports[@]}"; do
      redis-cli -h 127.0.0.1 -p "$p" INFO commandstats >"$base.cmd.$p"
      stats+=("$base.cmd.$p")
    done
    python3 - "$TOPO" "$op" "$base.json" "$NODE_PID" "${stats[@]}" >>"$ROWS" <<'EOF'
import json, re, sys
topo, op, summary_path, node_pid = sys.argv[1:5]
summary = json.load(open(summary_path))
calls, usec = {}, {}
for path in sys.argv[5:]:
    for line in open(path):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line.strip())
        if m and m.group(1) not in ("info", "config|resetstat"):
            calls[m.group(1)] = calls.get(m.group(1), 0) + int(m.group(2))
            usec[m.group(1)] = usec.get(m.group(1), 0) + int(m.group(3))
cpu = summary["cpu"]
node_cores = sum(p["cores"] for p in cpu["processes"] if str(p["pid"]) == node_pid)
redis_cores = sum(p["cores"] for p in cpu["processes"] if str(p["pid"]) != node_pid)
print(json.dumps({
    "topology": topo, "op": op, "ops": summary["ops"], "ops_per_sec": summary["ops_per_sec"],
    "ops_including_warmup": summary["ops_including_warmup"], "errors": summary["errors_total"],
    "deliveries": summary.get("deliveries"), "calls": calls, "usec": usec,
    "window_s": cpu["seconds"], "node_cores": node_cores, "redis_cores": redis_cores,
}))
EOF
    log "$TOPO $op: $(tail -n 1 "$ROWS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["ops"], "ops,", sum(r["calls"].values()), "Redis commands,", r["errors"], "errors")')"
  done
  stop_topology
done

# --- table -------------------------------------------------------------------------------
python3 - "$ROWS" "$CONNS" "$DUR" "$WARMUP" <<'EOF' | tee "${OUT:-/dev/null}"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
conns, dur, warmup = sys.argv[2:5]
names = {"single": "one server", "sentinel": "Sentinel (master + replica)", "cluster": "Cluster (3 masters)"}
print(f"`openchampps bench -c {conns} -d {dur} --warmup {warmup}`, one node, release build; Redis figures summed over")
print("the data servers (masters and replicas, not sentinels) from `INFO commandstats` after `CONFIG RESETSTAT`,")
print("per op of warm-up + measured window; process CPU per op of the measured window.")
print()
print("| topology | operation | ops done | ops/s | Redis commands / op | Redis CPU µs / op (commandstats usec) "
      "| redis-server process CPU µs / op | node CPU µs / op | top commands / op |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for r in rows:
    total_ops = max(r["ops_including_warmup"], 1)
    ops = max(r["ops"], 1)
    calls = sum(r["calls"].values())
    usec = sum(r["usec"].values())
    top = sorted(r["calls"].items(), key=lambda kv: -kv[1])[:3]
    top_text = ", ".join(f"`{k.upper()}` {v / total_ops:.2f}" for k, v in top if v / total_ops >= 0.005) or "—"
    per_window = lambda cores: cores * r["window_s"] * 1e6 / ops
    err = f" ({r['errors']} errors)" if r["errors"] else ""
    print(f"| {names.get(r['topology'], r['topology'])} | `{r['op']}`{err} | {r['ops']:,} | {r['ops_per_sec']:,.0f} "
          f"| {calls / total_ops:.2f} | {usec / total_ops:.2f} | {per_window(r['redis_cores']):.1f} "
          f"| {per_window(r['node_cores']):.1f} | {top_text} |")
EOF
