#!/usr/bin/env bash
# Instruction budget per operation (issue #20): runs one node under
# `valgrind --tool=callgrind`, drives it with the built-in load generator
# (`openchampps bench`), and prints instructions and mallocs per operation for
#
#   token_auth    (cache hit, on open connections)
#   set_username
#   global_chat   (per delivery: 16 connections, 1 sender)
#   reconnect     (accept + upgrade + token_auth + close; the `idle` mode)
#
# then compares them with bench/budgets.toml and exits 1 when one is over budget
# (2 when the measurement itself failed). The table is printed either way.
#
#   bash bench/callgrind.sh                       # ~1 minute once the release binary is built
#   KEEP=1 bash bench/callgrind.sh                # keeps the dumps (callgrind_annotate them)
#   MARKDOWN=out.md bash bench/callgrind.sh       # also appends the table as Markdown
#   PHASES=global_chat bash bench/callgrind.sh    # only these (the check then fails: others unmeasured)
#
# Why instructions: throughput on a shared machine moves by a factor of two from one
# host to the next; instructions counted by callgrind repeat to within ~1 %.
#
# How each figure is taken: every load-generator run sits alone between a callgrind
# `zero` and a `dump` (sent with vgdb while the node is idle: no connection open, no
# scrape in flight). Each phase is run twice, a `base` run that only sets up (log in,
# open the connections, 0 s of load) and a `full` run with the load; the difference
# in instructions and allocation calls between the two, divided by the difference in
# the node's own op counter from /metrics, is the cost per op. Set-up, teardown and
# the load generator's logins cancel out. Callgrind serializes the node's threads, so
# the counts do not depend on how busy the machine is.
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGETS=${BUDGETS:-bench/budgets.toml}
CONNS=${CONNS:-16}
LOAD_SECS=${LOAD_SECS:-6}
RECONNECTS=${RECONNECTS:-800}
ACCOUNTS=16
BIN=$PWD/target/release/openchampps
WORK=$(mktemp -d /tmp/openchampps-callgrind.XXXXXX)
RESULTS="$WORK/results.jsonl"
DB="openchampps_cg_$$"
PREFIX="cg$$x$(date +%s):"
NODE_PID=""
DUMPS=0
STARTED=$(date +%s)

log() { echo "bench/callgrind.sh: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# shellcheck source=bench/lib.sh
. bench/lib.sh

cleanup() {
  stop_node
  forget_run "$PREFIX" "$DB" "$WORK"
}
trap cleanup EXIT

# --- tools, services, binary ---------------------------------------------------------
if ! command -v valgrind >/dev/null || ! command -v vgdb >/dev/null; then
  log "installing valgrind"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq valgrind >/dev/null
fi
command -v ss >/dev/null || { log "installing iproute2 (ss)"; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq iproute2 >/dev/null; }
bash scripts/services.sh "$DB" >/dev/null 2>&1 || bash scripts/services.sh "$DB"
log "building the release binary"
cargo build --release --locked --bin openchampps 2>&1 | tail -n 1 >&2

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=${PORT:-$(free_port)}
METRICS_PORT=${METRICS_PORT:-$(free_port)}
URL="ws://127.0.0.1:$PORT/ws"

# --- the node, under callgrind --------------------------------------------------------
# Plain-text names (--compress-strings=no) so that callgrind.py reads each dump alone;
# no per-line or per-instruction detail: only totals and the call graph are used.
cat >"$WORK/node.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --vgdb=yes --callgrind-out-file="$WORK/callgrind.out" \
  --compress-strings=no --compress-pos=no --dump-line=no --dump-instr=no "$BIN" "\$@"
EOF
chmod +x "$WORK/node.sh"
# start_node (bench/lib.sh) runs \$BIN: the wrapper, which execs valgrind in its place.
# Cheap argon2id parameters: the load generator logs its accounts in on every run
# (cancelled out, but slow under callgrind with the production cost).
BIN="$WORK/node.sh" start_node "$WORK/node.log" "$PORT" "$METRICS_PORT" \
  DB_CONN="postgres://postgres@127.0.0.1/$DB" REDIS_KEY_PREFIX="$PREFIX" NODE_ID=callgrind-node \
  ARGON2_MEMORY_KIB=64 ARGON2_ITERATIONS=1
log "node $NODE_PID (callgrind) ready on $URL; work dir $WORK"

vg() { vgdb --pid="$NODE_PID" "$@" >>"$WORK/vgdb.log" 2>&1 || { log "vgdb $* failed:"; tail -n 5 "$WORK/vgdb.log" >&2; exit 2; }; }
scrape() { curl -fs "http://127.0.0.1:$METRICS_PORT/metrics" >"$1" || { log "cannot scrape /metrics"; exit 2; }; }
# Waits until the node holds no client connection, then a little longer for the
# connection tasks to finish.
wait_idle() {
  for _ in $(seq 1 300); do
    [ "$(ss -Htn state established "( sport = :$PORT )" | wc -l)" = 0 ] && break
    sleep 0.1
  done
  sleep 0.3
}
loadgen() {
  local out=$1; shift
  "$BIN" bench --url "$URL" --json --accounts "$ACCOUNTS" --account-prefix cg_ --timeout 30s "$@" \
    >"$out.json" 2>"$out.err" || { log "load generator failed ($*):"; tail -n 5 "$out.err" >&2; exit 2; }
}

# measure PHASE KIND LOADGEN-ARGS...: one load-generator run between a zero and a dump.
measure() {
  local phase=$1 kind=$2; shift 2
  local base="$WORK/$phase.$kind" t0 t1
  wait_idle
  scrape "$base.m0"
  sleep 0.2
  vg zero
  t0=$(date +%s.%N)
  loadgen "$base" "$@"
  wait_idle
  vg dump "$phase-$kind"
  t1=$(date +%s.%N)
  DUMPS=$((DUMPS + 1))
  scrape "$base.m1"
  python3 bench/callgrind.py record "$phase" "$kind" "$WORK/callgrind.out.$DUMPS" "$base.m0" "$base.m1" \
    "$(awk "BEGIN { print $t1 - $t0 }")" "$base.json" >>"$RESULTS"
}

# Warm-up, not measured: creates the accounts and touches every path once (lazily
# built metric handles, pool connections, allocator arenas).
log "warming up"
loadgen "$WORK/warm1" --mode token_auth -c "$CONNS" --warmup 0 -d 1
loadgen "$WORK/warm2" --mode set_username -c "$CONNS" --warmup 0 -d 1
loadgen "$WORK/warm3" --mode global_chat -c "$CONNS" --senders 1 --warmup 0 -d 1
loadgen "$WORK/warm4" --mode idle -c "$((CONNS * 4))" -d 0 --connect-concurrency "$CONNS"

# The node's own timers, per second, with nothing connected (callgrind.py takes
# them off each full run's extra seconds).
log "idle rate"
wait_idle
scrape "$WORK/idle.m0"
sleep 0.2
vg zero
t0=$(date +%s.%N)
sleep "${IDLE_SECS:-3}"
vg dump idle
t1=$(date +%s.%N)
DUMPS=$((DUMPS + 1))
scrape "$WORK/idle.m1"
python3 bench/callgrind.py record idle rate "$WORK/callgrind.out.$DUMPS" "$WORK/idle.m0" "$WORK/idle.m1" \
  "$(awk "BEGIN { print $t1 - $t0 }")" /dev/null >>"$RESULTS"

PHASES=${PHASES:-token_auth set_username global_chat reconnect}
for phase in token_auth set_username global_chat; do
  [[ " $PHASES " == *" $phase "* ]] || continue
  extra=()
  [ "$phase" = global_chat ] && extra=(--senders 1)
  log "$phase"
  measure "$phase" base --mode "$phase" -c "$CONNS" "${extra[@]}" --warmup 0 -d 0
  measure "$phase" full --mode "$phase" -c "$CONNS" "${extra[@]}" --warmup 0 -d "$LOAD_SECS"
done
if [[ " $PHASES " == *" reconnect "* ]]; then
  log "reconnect"
  measure reconnect base --mode idle -c "$CONNS" -d 0 --connect-concurrency "$CONNS"
  measure reconnect full --mode idle -c "$((CONNS + RECONNECTS))" -d 0 --connect-concurrency "$CONNS"
fi
stop_node

status=0
args=()
[ -n "${MARKDOWN:-}" ] && args=(--markdown "$MARKDOWN" --run-label "${MARKDOWN_LABEL:-}")
python3 bench/callgrind.py check "$RESULTS" "$BUDGETS" "${args[@]}" || status=$?
log "$(( $(date +%s) - STARTED )) s in all (budgets: $BUDGETS)"
exit "$status"
