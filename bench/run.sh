#!/usr/bin/env bash
# Measures one node against the performance targets and writes BENCHMARKS.md.
#
#   bash bench/run.sh                 # 5 rounds, ~6 minutes on 2 cores
#   REPS=1 DUR=2 bash bench/run.sh    # a quick smoke run
#
# It makes sure PostgreSQL and Redis run (scripts/services.sh), builds the release
# binary, starts a node on a fresh database and Redis key prefix, then runs REPS
# rounds. Each round runs the load generator (`openchampps bench`) and
# `redis-benchmark` side by side (one right after the other on the same machine),
# so every target is a ratio of two figures taken under the same conditions; the
# report quotes the median over the rounds. The load generator, the node, Redis and
# PostgreSQL all share this machine's cores: absolute figures say little, ratios hold.
#
# Settings (environment): REPS (5), DUR measured seconds per run (5), WARMUP (1),
# IDLE_CONNS (20000), PORT (18080), METRICS_PORT (19091), OUT (BENCHMARKS.md),
# KEEP=1 keeps the work directory (per-run JSON, node log, metrics) for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DUR=${DUR:-5}
WARMUP=${WARMUP:-1}
IDLE_CONNS=${IDLE_CONNS:-20000}
IDLE_HOLD=${IDLE_HOLD:-5}
PORT=${PORT:-18080}
METRICS_PORT=${METRICS_PORT:-19091}
OUT=${OUT:-BENCHMARKS.md}
DB=${BENCH_DB:-openchampps_bench}
PREFIX="bench$(date +%s):"
ACCOUNTS=16
WORK=$(mktemp -d /tmp/openchampps-bench.XXXXXX)
RESULTS="$WORK/results.jsonl"
BIN=target/release/openchampps
URL="ws://127.0.0.1:$PORT/ws"
NODE_PID=""
BACKGROUND_PIDS=()
STARTED=$(date +%s)

log() { echo "bench/run.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
. bench/lib.sh

cleanup() {
  local pid
  for pid in "${BACKGROUND_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop_node
  redis-cli del "key:__rand_int__" >/dev/null 2>&1 || true
  forget_run "$PREFIX" "$DB" "$WORK"
}
trap cleanup EXIT

# --- services, build, limits -------------------------------------------------------
bash scripts/services.sh >/dev/null
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null
bash scripts/services.sh "$DB" 2>/dev/null
if ! command -v redis-benchmark >/dev/null; then
  log "installing redis-tools (redis-benchmark)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq redis-tools >/dev/null; else sudo apt-get install -y -qq redis-tools >/dev/null; fi
fi
# What is measured: the commit, plus any uncommitted change to the node's sources.
COMMIT=$(git rev-parse --short HEAD)
DIRTY=$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock migrations | awk '{print $2}' | tr '\n' ' ')
log "building the release binary"
cargo build --release --bin openchampps 2>&1 | tail -n 1 >&2

# Every connection is a file descriptor on both sides: raise the soft limit as far
# as the hard one allows (raising the hard limit needs CAP_SYS_RESOURCE).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
CORES=$(nproc)

# --- node ----------------------------------------------------------------------------
run_node() {
  start_node "$WORK/node.log" "$PORT" "$METRICS_PORT" \
    DB_CONN="postgres://postgres@127.0.0.1/$DB" REDIS_KEY_PREFIX="$PREFIX" NODE_ID=bench-node
}

# --- measurement helpers -----------------------------------------------------------
# CPU ticks so far: node, redis-server, all postgres processes, whole machine busy.
cpu_snapshot() {
  local node=0 redis=0 pg=0 f
  [ -n "$NODE_PID" ] && node=$(awk '{print $14+$15}' "/proc/$NODE_PID/stat" 2>/dev/null || echo 0)
  for f in $(pidof redis-server); do redis=$((redis + $(awk '{print $14+$15}' "/proc/$f/stat" 2>/dev/null || echo 0))); done
  for f in $(pgrep -x postgres || true); do pg=$((pg + $(awk '{print $14+$15}' "/proc/$f/stat" 2>/dev/null || echo 0))); done
  local busy
  busy=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
  echo "$node $redis $pg $busy"
}

metrics_snapshot() { curl -fs "http://127.0.0.1:$METRICS_PORT/metrics" >"$1" 2>/dev/null || : >"$1"; }

# The processes whose CPU the load generator accounts for: node, Redis, PostgreSQL.
watch_args() {
  local p
  echo "--watch-pid $NODE_PID"
  for p in $(pidof redis-server) $(pgrep -x postgres || true); do echo "--watch-pid $p"; done
}

# lg NAME REP ARGS...: one load-generator run, with the node's metrics around it.
lg() {
  local name=$1 rep=$2; shift 2
  local base="$WORK/$name.$rep"
  metrics_snapshot "$base.m0"
  redis-cli info commandstats >"$base.r0" 2>/dev/null || :
  # shellcheck disable=SC2046 # one word per pid
  "$BIN" bench --url "$URL" --json --accounts "$ACCOUNTS" --account-prefix lg_ $(watch_args) "$@" \
    >"$base.json" 2>"$base.err" \
    || { log "load generator failed ($name):"; tail -n 5 "$base.err" >&2; return 1; }
  metrics_snapshot "$base.m1"
  redis-cli info commandstats >"$base.r1" 2>/dev/null || :
  python3 bench/report.py record "$name" "$rep" loadgen "$base.json" "$base.m0" "$base.m1" "$base.r0" "$base.r1" >>"$RESULTS"
}

# redis_get REP: redis-benchmark GET with 64 clients, next to the token_auth run.
redis_get() {
  local rep=$1 base="$WORK/redis_get_64.$1"
  local before after
  before=$(cpu_snapshot)
  /usr/bin/time -f "%e %U %S" -o "$base.time" \
    redis-benchmark -h 127.0.0.1 -p 6379 -t get -c 64 -n "${REDIS_N:-300000}" --csv >"$base.csv" 2>/dev/null
  after=$(cpu_snapshot)
  python3 bench/report.py record redis_get_64 "$rep" redis "$base.csv" "$before" "$after" "$base.time" >>"$RESULTS"
}

# --- rounds ----------------------------------------------------------------------------
# redis-benchmark's GET reads this one key: give it a value, as a cache hit has.
redis-cli set "key:__rand_int__" x >/dev/null
run_node
log "node $NODE_PID ready on $URL; $REPS round(s) of ${WARMUP}s warm-up + ${DUR}s per run; work dir $WORK"
for rep in $(seq 1 "$REPS"); do
  log "round $rep/$REPS"
  redis_get "$rep"
  lg token_auth_64 "$rep" --mode token_auth -c 64 --warmup "$WARMUP" -d "$DUR"
  lg set_username_64 "$rep" --mode set_username -c 64 --warmup "$WARMUP" -d "$DUR"
  lg login_1 "$rep" --mode login -c 1 --warmup "$WARMUP" -d "$DUR"
  lg login_8 "$rep" --mode login -c 8 --warmup "$WARMUP" -d "$DUR"

  # token_auth while 16 other connections flood login: the flood starts first and
  # outlasts the measured run (its own set-up, warm-up and end included). Its accounts
  # are others than the measured run's: logins of the same accounts would revoke the
  # measured run's tokens (MAX_TOKENS_PER_ACCOUNT) and time its error replies instead.
  flood_for=$((WARMUP + DUR + 4))
  "$BIN" bench --url "$URL" --json --accounts "$ACCOUNTS" --account-prefix lgflood_ --mode login -c 16 \
    --warmup 0 -d "$flood_for" >"$WORK/login_flood_16.$rep.json" 2>"$WORK/login_flood_16.$rep.err" &
  flood_pid=$!
  BACKGROUND_PIDS+=("$flood_pid")
  sleep 1.5
  lg token_auth_16_under_login_flood "$rep" --mode token_auth -c 16 --warmup "$WARMUP" -d "$DUR"
  wait "$flood_pid" || log "the login flood failed: $(tail -n 2 "$WORK/login_flood_16.$rep.err")"
  python3 bench/report.py record login_flood_16 "$rep" loadgen "$WORK/login_flood_16.$rep.json" >>"$RESULTS"

  lg global_chat_64 "$rep" --mode global_chat -c 64 --senders 1 --warmup "$WARMUP" -d "$DUR"

  # Idle connections on a freshly started node: its resident memory before/after.
  stop_node
  run_node
  node_fds=$(ls "/proc/$NODE_PID/fd" | wc -l)
  # Both processes need one descriptor per connection plus their own; the
  # smaller of the two limits decides how many fit.
  idle=$IDLE_CONNS
  fit=$((FD_LIMIT - node_fds - 100))
  [ "$idle" -gt "$fit" ] && idle=$fit
  lg idle "$rep" --mode idle -c "$idle" -d "$IDLE_HOLD" --connect-concurrency 256
  stop_node
  run_node
done
stop_node
ELAPSED=$(( $(date +%s) - STARTED ))

# --- report ------------------------------------------------------------------------------
python3 bench/report.py write "$RESULTS" "$OUT" \
  --reps "$REPS" --duration "$DUR" --warmup "$WARMUP" --cores "$CORES" --fd-limit "$FD_LIMIT" \
  --idle-requested "$IDLE_CONNS" --elapsed "$ELAPSED" --commit "$COMMIT" --dirty "$DIRTY" \
  --started "$(date -u -d "@$STARTED" '+%Y-%m-%d %H:%M')" \
  --analysis bench/analysis.md --instructions bench/instructions.md
log "wrote $OUT in ${ELAPSED}s"
python3 bench/report.py table "$RESULTS" --cores "$CORES" --fd-limit "$FD_LIMIT" --idle-requested "$IDLE_CONNS" >&2
