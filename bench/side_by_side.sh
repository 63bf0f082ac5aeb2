#!/usr/bin/env bash
# Compares node binaries side by side on one measure, round after round.
#
#   bash bench/side_by_side.sh idle BIN...   # node RSS per idle authenticated connection
#   bash bench/side_by_side.sh chat BIN...   # global_chat deliveries/s with 16 KB frames
#   bash bench/side_by_side.sh token_auth BIN...  # token_auth ops/s and p99 at 64 connections
#
# e.g. bash bench/side_by_side.sh idle /work/wt-base/target/release/openchampps target/release/openchampps
#
# Each round runs every BIN in turn (so drift on a shared machine hits them alike);
# the report gives each one's figure per round and the median. Every measurement
# starts a fresh node (bench/lib.sh's start_node: rate and per-address limits off)
# on fixed ports 28080/29091, outside the kernel's ephemeral range (32768-60999),
# with one database for the whole run and a Redis key prefix of its own.
#
# - idle: opens IDLE_CONNS authenticated connections (`bench --mode idle`), holds
#   them HOLD seconds, and takes the node's VmRSS (/proc) before the connections
#   open and at the end of the hold: (after - before) / connections open. Both the
#   node and the load generator need one descriptor per connection, so the count is
#   capped by `ulimit -n` (raised to its hard limit) minus the node's own descriptors
#   and a margin of 100.
# - chat: CHAT_CONNS connections, CHAT_SENDERS of them sending `global_chat` in a
#   closed loop, each message padded to MESSAGE_BYTES bytes (the request frame adds
#   its ~40-byte JSON envelope; it must stay within the node's MAX_FRAME_BYTES, 16384
#   by default), with the node's CHAT_MAX_CHARS raised to MAX_FRAME_BYTES so it takes
#   them; reports deliveries/s over DUR after WARMUP, and the node's CPU per
#   delivery (on 2 cores the load generator, parsing every 16 KB frame it receives,
#   is the bottleneck: the node's CPU per delivery shows its own cost).
# - token_auth: AUTH_CONNS connections each sending `token_auth` in a closed loop (as
#   bench/run.sh's `token_auth` run): ops/s, p99 latency, and the node's CPU per op.
#
# The load generator is LG (default: this tree's target/release/openchampps, built
# if missing), the same for every BIN: only the node differs.
#
# Settings (environment): ROUNDS (3), IDLE_CONNS (20000), HOLD (5), CHAT_CONNS (64), AUTH_CONNS (64),
# CHAT_SENDERS (4), MESSAGE_BYTES (16000), DUR (5), WARMUP (1), PORT (28080),
# METRICS_PORT (29091), KEEP=1 keeps the work directory (JSON per run, node logs).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-}
shift || true
case "$MODE" in idle | chat | token_auth) ;; *) MODE="" ;; esac
if [ -z "$MODE" ] || [ $# -eq 0 ]; then
  echo "usage: bash bench/side_by_side.sh idle|chat|token_auth BIN..." >&2
  exit 2
fi
BINS=()
for b in "$@"; do
  [ -x "$b" ] || { echo "bench/side_by_side.sh: $b is not an executable" >&2; exit 2; }
  BINS+=("$(readlink -f "$b")")
done

ROUNDS=${ROUNDS:-3}
IDLE_CONNS=${IDLE_CONNS:-20000}
HOLD=${HOLD:-5}
CHAT_CONNS=${CHAT_CONNS:-64}
AUTH_CONNS=${AUTH_CONNS:-64}
CHAT_SENDERS=${CHAT_SENDERS:-4}
MESSAGE_BYTES=${MESSAGE_BYTES:-16000}
MAX_FRAME=16384
DUR=${DUR:-5}
WARMUP=${WARMUP:-1}
PORT=${PORT:-28080}
METRICS_PORT=${METRICS_PORT:-29091}
LG=${LG:-target/release/openchampps}
DB=openchampps_side_by_side
ACCOUNTS=16
STAMP="sbs$(date +%s)$$"
WORK=$(mktemp -d /tmp/openchampps-side-by-side.XXXXXX)
URL="ws://127.0.0.1:$PORT/ws"
NODE_PID=""
BIN=""

log() { echo "bench/side_by_side.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
. bench/lib.sh

cleanup() {
  stop_node
  forget_run "$STAMP" "$DB" "$WORK"
}
trap cleanup EXIT

bash scripts/services.sh >/dev/null
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null
bash scripts/services.sh "$DB" 2>/dev/null
if [ ! -x "$LG" ]; then
  log "building the load generator ($LG)"
  cargo build --release --bin openchampps 2>&1 | tail -n 1 >&2
fi
LG=$(readlink -f "$LG")
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)

# measure ROUND INDEX: one fresh node of BINS[INDEX], one load-generator run; prints
# the figure (idle: bytes per connection and connections; chat: deliveries/s).
measure() {
  local round=$1 index=$2 base="$WORK/$MODE.$2.$1"
  BIN=${BINS[$index]}
  local extra=()
  [ "$MODE" = chat ] && extra=(MAX_FRAME_BYTES="$MAX_FRAME" CHAT_MAX_CHARS="$MAX_FRAME")
  start_node "$base.log" "$PORT" "$METRICS_PORT" "${extra[@]}" \
    DB_CONN="postgres://postgres@127.0.0.1/$DB" REDIS_KEY_PREFIX="$STAMP.$index.$round:" NODE_ID="sbs-$index"
  if [ "$MODE" = idle ]; then
    local node_fds idle
    node_fds=$(find "/proc/$NODE_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    idle=$IDLE_CONNS
    [ "$idle" -gt $((FD_LIMIT - node_fds - 100)) ] && idle=$((FD_LIMIT - node_fds - 100))
    "$LG" bench --url "$URL" --json --accounts "$ACCOUNTS" --account-prefix sbs_ --watch-pid "$NODE_PID" \
      --mode idle -c "$idle" -d "$HOLD" --connect-concurrency 256 >"$base.json" 2>"$base.err" \
      || { log "load generator failed:"; tail -n 5 "$base.err" >&2; stop_node; return 1; }
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["node_memory"]
print("%.0f %d %d %d %d" % (m["bytes_per_connection"], m["connections"], m["rss_before_kib"], m["rss_after_kib"], json.load(open(sys.argv[1]))["errors_total"]))' "$base.json"
  elif [ "$MODE" = token_auth ]; then
    "$LG" bench --url "$URL" --json --accounts "$ACCOUNTS" --account-prefix sbs_ --watch-pid "$NODE_PID" \
      --mode token_auth -c "$AUTH_CONNS" --warmup "$WARMUP" -d "$DUR" >"$base.json" 2>"$base.err" \
      || { log "load generator failed:"; tail -n 5 "$base.err" >&2; stop_node; return 1; }
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); node=s["cpu"]["processes"][0]["cores"]
print("%.0f %.2f %.2f %.2f %d" % (s["ops_per_sec"], s["latency_ms"]["p99"], node,
  node * 1e6 / max(s["ops_per_sec"], 1), s["errors_total"]))' "$base.json"
  else
    "$LG" bench --url "$URL" --json --accounts "$ACCOUNTS" --account-prefix sbs_ --watch-pid "$NODE_PID" \
      --mode global_chat -c "$CHAT_CONNS" --senders "$CHAT_SENDERS" --message-bytes "$MESSAGE_BYTES" \
      --warmup "$WARMUP" -d "$DUR" >"$base.json" 2>"$base.err" \
      || { log "load generator failed:"; tail -n 5 "$base.err" >&2; stop_node; return 1; }
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); node=s["cpu"]["processes"][0]["cores"]
print("%.0f %.0f %.2f %.2f %d" % (s["deliveries_per_sec"], s["ops_per_sec"], node,
  node * 1e6 / max(s["deliveries_per_sec"], 1), s["errors_total"]))' "$base.json"
  fi
  stop_node
}

if [ "$MODE" = idle ]; then
  log "idle: up to $IDLE_CONNS connections (fd limit $FD_LIMIT), held ${HOLD}s; $ROUNDS round(s)"
  header="B/conn connections rss_before_KiB rss_after_KiB errors"
elif [ "$MODE" = token_auth ]; then
  log "token_auth: $AUTH_CONNS connections, ${WARMUP}s + ${DUR}s; $ROUNDS round(s)"
  header="ops/s p99_ms node_cores node_us/op errors"
else
  log "chat: $CHAT_CONNS connections, $CHAT_SENDERS sender(s), ${MESSAGE_BYTES}-byte messages, ${WARMUP}s + ${DUR}s; $ROUNDS round(s)"
  header="deliveries/s messages/s node_cores node_us/delivery errors"
fi
for round in $(seq 1 "$ROUNDS"); do
  for index in "${!BINS[@]}"; do
    figures=$(measure "$round" "$index")
    echo "$index $round $figures" >>"$WORK/figures"
    log "round $round, ${BINS[$index]}: $figures ($header)"
  done
done

echo "mode $MODE; $ROUNDS round(s); columns: $header"
for index in "${!BINS[@]}"; do
  echo "${BINS[$index]}"
  awk -v i="$index" '$1 == i { $1 = ""; $2 = "  round " $2 ":"; print }' "$WORK/figures"
  awk -v i="$index" '$1 == i { print $3 }' "$WORK/figures" | sort -n \
    | awk '{ v[NR] = $1 } END { printf "  median of the first column: %s\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
done
