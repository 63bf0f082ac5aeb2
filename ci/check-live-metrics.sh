#!/usr/bin/env bash
# Runs real nodes and checks their scrapes:
#   - promtool check metrics on each node's /metrics (ci/check-metrics.sh)
#   - every metric the Grafana dashboard queries is exported (ci/check-dashboard.py),
#     by a fresh node before any traffic (dashboards and rate() alerts work on a new
#     cluster), and again after traffic
# Two nodes are used: one healthy, scraped fresh, then driven through every message
# type and given a PostgreSQL failure, and one whose Redis is unreachable.
#   ci/check-live-metrics.sh            # uses target/debug/openchampps (cargo build first)
# Env: OPENCHAMPPS_BIN, CI_PG_URL (postgres://postgres@127.0.0.1:5432), CI_REDIS_URL
# (redis://127.0.0.1:6379/0), KEEP_SCRAPES=DIR to keep the scrapes and node logs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bin=${OPENCHAMPPS_BIN:-$ci_root/target/debug/openchampps}
pg=${CI_PG_URL:-postgres://postgres@127.0.0.1:5432}
redis_url=${CI_REDIS_URL:-redis://127.0.0.1:6379/0}
[ -x "$bin" ] || { ci_log "$bin not found: cargo build (or set OPENCHAMPPS_BIN)"; exit 1; }
for tool in psql redis-cli curl; do
  command -v "$tool" >/dev/null || { ci_log "$tool is needed (scripts/services.sh installs it)"; exit 1; }
done
venv=$(ci_venv)
ci_promtool >/dev/null

id=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
db="ocps_ci_metrics_$id"
prefix="ocps-ci-metrics-$id:"
work=$(mktemp -d)
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$redis_url" --scan --pattern "$prefix*" 2>/dev/null | xargs -r redis-cli -u "$redis_url" DEL >/dev/null 2>&1 || true
  if [ -n "${KEEP_SCRAPES:-}" ]; then
    mkdir -p "$KEEP_SCRAPES" && cp "$work"/* "$KEEP_SCRAPES"/ 2>/dev/null || true
    ci_log "scrapes and logs kept in $KEEP_SCRAPES"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

psql "$pg/postgres" -qc "CREATE DATABASE \"$db\"" >/dev/null

# start_node NAME REDIS_URL -> sets port_NAME / mport_NAME
start_node() {
  local name=$1 redis=$2 port mport
  port=$(free_port); mport=$(free_port)
  DB_CONN="$pg/$db" REDIS_URL="$redis" REDIS_KEY_PREFIX="$prefix" NODE_ID="ci-$name" \
  LISTEN_ADDR="127.0.0.1:$port" METRICS_ADDR="127.0.0.1:$mport" \
  AUTH_TIMEOUT_SECS=1 ARGON2_MEMORY_KIB=1024 ARGON2_ITERATIONS=1 SHUTDOWN_DRAIN_SECS=1 \
    "$bin" serve </dev/null >"$work/$name.log" 2>&1 &
  pids+=($!)
  printf -v "port_$name" %s "$port"
  printf -v "mport_$name" %s "$mport"
}

wait_ready() {
  local port=$1 name=$2
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready" || true)" = 200 ] && return 0
    sleep 0.2
  done
  ci_log "node $name never became ready:"; tail -n 20 "$work/$name.log" >&2; exit 1
}

start_node healthy "$redis_url"
start_node noredis "redis://127.0.0.1:1/0" # nothing listens on port 1
wait_ready "$port_healthy" healthy
wait_ready "$port_noredis" noredis

status=0
# Before any traffic: every series the dashboard needs already exists.
bash "$ci_root/ci/check-metrics.sh" "http://127.0.0.1:$mport_healthy" "$work/fresh.prom" || status=1
if [ -s "$work/fresh.prom" ]; then
  python3 "$ci_root/ci/check-dashboard.py" "$work/fresh.prom" || { ci_log "a fresh node lacks metrics the dashboard queries"; status=1; }
else
  status=1
fi

"$venv/bin/python" "$ci_root/ci/exercise-node.py" "ws://127.0.0.1:$port_healthy/ws" traffic
# PostgreSQL failing under a live node: its queries error and are counted.
PGOPTIONS='-c client_min_messages=warning' psql "$pg/$db" -qc 'DROP TABLE users CASCADE' >/dev/null
"$venv/bin/python" "$ci_root/ci/exercise-node.py" "ws://127.0.0.1:$port_healthy/ws" login-fails
# The node without Redis has tried its heartbeat by now; give it a moment anyway.
sleep 2

bash "$ci_root/ci/check-metrics.sh" "http://127.0.0.1:$mport_healthy" "$work/healthy.prom" || status=1
bash "$ci_root/ci/check-metrics.sh" "http://127.0.0.1:$mport_noredis" "$work/noredis.prom" || status=1
if [ -s "$work/healthy.prom" ] && [ -s "$work/noredis.prom" ]; then
  python3 "$ci_root/ci/check-dashboard.py" "$work/healthy.prom" "$work/noredis.prom" || status=1
else
  status=1
fi
if [ "$status" = 0 ]; then ci_log "ok"; else ci_log "FAILED"; fi
exit "$status"
