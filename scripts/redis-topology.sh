#!/usr/bin/env bash
# Starts a private Redis topology from Debian's redis-server, for manual runs and
# benchmarks (the tests start their own: tests/it/common/stores.rs).
#
#   scripts/redis-topology.sh cluster DIR    # 3 masters (Redis Cluster), no replicas
#   scripts/redis-topology.sh sentinel DIR   # a master, a replica, 3 sentinels (master name mymaster)
#   scripts/redis-topology.sh single DIR     # one plain redis-server
#   scripts/redis-topology.sh stop DIR       # kills what DIR's pid files name, removes DIR
#
# On success it prints one line on stdout, the REDIS_URL a node takes:
#   redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3
#   redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/mymaster/0
#   redis://127.0.0.1:p/0
# Everything else goes to stderr. DIR (created; must not exist or be empty) holds each
# server's pid file (*.pid), log, configuration and working directory, plus
#   url            the line printed
#   data-ports     the data servers' ports (masters and replicas), one a line
#   sentinel-ports the sentinels' ports, one a line (sentinel only)
#
# Ports are free ones in 20000-31999 (below the OS's ephemeral range), each checked
# by binding it; the Cluster bus port is set explicitly (--cluster-port), not port+10000.
# Timeouts are short, as in the tests, so failovers take seconds (environment):
# CLUSTER_NODE_TIMEOUT_MS (2000), SENTINEL_DOWN_AFTER_MS (1000),
# SENTINEL_FAILOVER_TIMEOUT_MS (5000), READY_TIMEOUT_SECS (30).
# Needs redis-server, redis-cli (and for sentinel, redis-server --sentinel):
# scripts/services.sh installs them.
set -euo pipefail

MASTER_NAME=mymaster
CLUSTER_NODE_TIMEOUT_MS=${CLUSTER_NODE_TIMEOUT_MS:-2000}
SENTINEL_DOWN_AFTER_MS=${SENTINEL_DOWN_AFTER_MS:-1000}
SENTINEL_FAILOVER_TIMEOUT_MS=${SENTINEL_FAILOVER_TIMEOUT_MS:-5000}
READY_TIMEOUT_SECS=${READY_TIMEOUT_SECS:-30}
PORT_FIRST=20000
PORT_COUNT=12000
MARKER=.redis-topology

log() { echo "redis-topology: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-cli)
  if [ ${#missing[@]} -gt 0 ]; then
    die "${missing[*]} not found: install Redis (bash scripts/services.sh installs redis-server, redis-tools and redis-sentinel)"
  fi
  command -v python3 >/dev/null || command -v ss >/dev/null || die "need python3 or ss to find free ports"
}

# --- ports ---------------------------------------------------------------------------
TAKEN=" "
port_free() {
  local port=$1
  case "$TAKEN" in *" $port "*) return 1 ;; esac
  if command -v python3 >/dev/null; then
    python3 - "$port" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
EOF
  else
    ! ss -Htan "( sport = :$port )" | grep -q .
  fi
}

# free_port: a free port in 20000-31999 not handed out before by this run.
free_port() {
  local start port i
  start=$(( (RANDOM * 32768 + RANDOM) % PORT_COUNT ))
  for ((i = 0; i < PORT_COUNT; i++)); do
    port=$(( PORT_FIRST + (start + i) % PORT_COUNT ))
    if port_free "$port"; then
      TAKEN+="$port "
      echo "$port"
      return
    fi
  done
  die "no free port in $PORT_FIRST-$((PORT_FIRST + PORT_COUNT - 1))"
}

# --- servers -------------------------------------------------------------------------
cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

answers() { [ "$(cli "$1" PING)" = PONG ]; }

# data_server PORT ARGS...: a daemonized redis-server on PORT, its files in DIR/PORT.
data_server() {
  local port=$1
  shift
  mkdir -p "$DIR/$port"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode no \
    --save "" --appendonly no --dir "$DIR/$port" \
    --daemonize yes --pidfile "$DIR/redis-$port.pid" --logfile "$DIR/redis-$port.log" "$@" \
    || die "redis-server on port $port did not start (see $DIR/redis-$port.log)"
}

prepare_dir() {
  [ -n "${1:-}" ] || usage
  DIR=$(realpath -m "$1")
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR exists and is not empty (stop it first: $0 stop $DIR)"
  fi
  mkdir -p "$DIR"
  : >"$DIR/$MARKER"
  # A failed start leaves nothing running.
  trap 'status=$?; if [ $status -ne 0 ]; then log "start failed: stopping what was started"; stop_dir "$DIR" >&2 || true; fi' EXIT
}

finish() {
  echo "$1" >"$DIR/url"
  trap - EXIT
  echo "$1"
}

start_single() {
  prepare_dir "$@"
  local port
  port=$(free_port)
  data_server "$port"
  wait_for 10 "redis-server on $port" answers "$port"
  echo "$port" >"$DIR/data-ports"
  log "redis-server on 127.0.0.1:$port"
  finish "redis://127.0.0.1:$port/0"
}

cluster_ready() {
  local port info
  for port in "$@"; do
    info=$(cli "$port" CLUSTER INFO) || return 1
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    grep -q "^cluster_known_nodes:$#" <<<"$info" || return 1
  done
}

start_cluster() {
  prepare_dir "$@"
  local ports=() port bus nodes=()
  for _ in 1 2 3; do
    port=$(free_port)
    bus=$(free_port)
    data_server "$port" --cluster-enabled yes --cluster-port "$bus" \
      --cluster-config-file "$DIR/$port/nodes.conf" --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS"
    ports+=("$port")
    nodes+=("127.0.0.1:$port")
  done
  for port in "${ports[@]}"; do wait_for 10 "redis-server on $port" answers "$port"; done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/cluster-create.log" 2>&1 \
    || { cat "$DIR/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
  wait_for "$READY_TIMEOUT_SECS" "cluster_state:ok on every node" cluster_ready "${ports[@]}"
  printf '%s\n' "${ports[@]}" >"$DIR/data-ports"
  log "Redis Cluster of 3 masters on ${nodes[*]}"
  finish "redis+cluster://$(IFS=,; echo "${nodes[*]}")"
}

sentinels_ready() {
  local master=$1 replica=$2 port
  shift 2
  [[ "$(cli "$replica" INFO replication)" == *master_link_status:up* ]] || return 1
  for port in "$@"; do
    [[ "$(cli "$port" INFO sentinel)" == *"name=$MASTER_NAME,status=ok,address=127.0.0.1:$master,slaves=1,sentinels=3"* ]] \
      || return 1
  done
}

start_sentinel() {
  prepare_dir "$@"
  local master replica port sentinels=() hosts=()
  master=$(free_port)
  replica=$(free_port)
  data_server "$master"
  data_server "$replica" --replicaof 127.0.0.1 "$master"
  wait_for 10 "redis-server on $master" answers "$master"
  wait_for 10 "redis-server on $replica" answers "$replica"
  for _ in 1 2 3; do
    port=$(free_port)
    # Sentinel rewrites its configuration file: it must be its own and writable.
    mkdir -p "$DIR/$port"
    cat >"$DIR/sentinel-$port.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode no
daemonize yes
pidfile $DIR/sentinel-$port.pid
logfile $DIR/sentinel-$port.log
dir $DIR/$port
sentinel monitor $MASTER_NAME 127.0.0.1 $master 2
sentinel down-after-milliseconds $MASTER_NAME $SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME $SENTINEL_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER_NAME 1
EOF
    redis-server "$DIR/sentinel-$port.conf" --sentinel \
      || die "sentinel on port $port did not start (see $DIR/sentinel-$port.log)"
    sentinels+=("$port")
    hosts+=("127.0.0.1:$port")
  done
  for port in "${sentinels[@]}"; do wait_for 10 "sentinel on $port" answers "$port"; done
  wait_for "$READY_TIMEOUT_SECS" "the sentinels to see the replica and each other" \
    sentinels_ready "$master" "$replica" "${sentinels[@]}"
  printf '%s\n' "$master" "$replica" >"$DIR/data-ports"
  printf '%s\n' "${sentinels[@]}" >"$DIR/sentinel-ports"
  log "master 127.0.0.1:$master, replica 127.0.0.1:$replica, sentinels ${hosts[*]} (master name $MASTER_NAME)"
  finish "redis+sentinel://$(IFS=,; echo "${hosts[*]}")/$MASTER_NAME/0"
}

# --- stop ----------------------------------------------------------------------------
is_redis() { [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == redis-* ]]; }

stop_dir() {
  local dir=$1 f pid pids=()
  [ -d "$dir" ] || { log "$dir: no such directory"; return 0; }
  [ -e "$dir/$MARKER" ] || die "$dir was not made by $0 (no $MARKER): not touching it"
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    # Only a live redis process: a stale pid file may name a recycled pid.
    if [[ "$pid" =~ ^[0-9]+$ ]] && is_redis "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do is_redis "$pid" || break; sleep 0.1; done
    if is_redis "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$dir"
  log "stopped ${#pids[@]} process(es), removed $dir"
}

case "${1:-}" in
  cluster) need; start_cluster "${2:-}" ;;
  sentinel) need; start_sentinel "${2:-}" ;;
  single) need; start_single "${2:-}" ;;
  stop) [ -n "${2:-}" ] || usage; stop_dir "$(realpath -m "$2")" ;;
  *) usage ;;
esac
