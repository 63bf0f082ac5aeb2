#!/usr/bin/env bash
# The compose topology (N openchampps nodes behind nginx, shared PostgreSQL and Redis)
# on loopback, from Debian packages, without Docker.
#
#   deploy/local/cluster.sh start|stop|status
#   deploy/local/cluster.sh nginx-bin    # prints the nginx it would use (fetching it if needed)
#
# Everything it starts lives under CLUSTER_STATE_DIR (generated nginx config, pid
# files, logs), so several clusters (say, one per test) can run side by side on
# different ports, and `stop` ends exactly what `start` started. The system's nginx
# (its config, its service) is never touched: when no nginx binary is on the
# machine, the Debian package is downloaded with apt-get and only its binary is
# unpacked into a cache directory.
#
# Settings (environment):
#   OPENCHAMPPS_BIN          node binary              (target/release/openchampps)
#   CLUSTER_STATE_DIR        config, pids, logs       (target/local-cluster)
#   CLUSTER_LB_PORT          nginx on 127.0.0.1       (8080)
#   CLUSTER_NODE_PORTS       public ports, one a node ("8081 8082 8083")
#   CLUSTER_METRICS_PORTS    metrics ports, same count ("9101 9102 9103")
#   CLUSTER_DB_NAME          PostgreSQL database      (openchampps_local)
#   CLUSTER_PG_URL           server URL, no database  (postgres://postgres@127.0.0.1:5432)
#   CLUSTER_REDIS_URL        Redis URL                (redis://127.0.0.1:6379/0)
#   CLUSTER_REDIS_KEY_PREFIX REDIS_KEY_PREFIX         (ocps-local:)
#   CLUSTER_NODE_ID_PREFIX   NODE_ID is prefix+index  (local-node-)
#   CLUSTER_START_TIMEOUT    seconds to become ready  (60)
#   CLUSTER_SKIP_SERVICES    1: do not run scripts/services.sh (PostgreSQL/Redis already up,
#                            database already created)
#   NGINX_BIN                nginx binary to use      (nginx on PATH, else unpacked from Debian's package)
# Any other node setting (ARGON2_MEMORY_KIB, SHUTDOWN_DRAIN_SECS, RUST_LOG, …) is passed
# through from the environment to every node. MAX_CONNECTIONS_PER_ADDRESS defaults
# to 0 (off) here: every local player comes from 127.0.0.1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

bin=${OPENCHAMPPS_BIN:-$repo/target/release/openchampps}
bin_name=$(basename "$(readlink -f "$bin" 2>/dev/null || echo "$bin")")
state=${CLUSTER_STATE_DIR:-$repo/target/local-cluster}
lb_port=${CLUSTER_LB_PORT:-8080}
read -r -a node_ports <<<"${CLUSTER_NODE_PORTS:-8081 8082 8083}"
read -r -a metrics_ports <<<"${CLUSTER_METRICS_PORTS:-9101 9102 9103}"
db_name=${CLUSTER_DB_NAME:-openchampps_local}
pg_url=${CLUSTER_PG_URL:-postgres://postgres@127.0.0.1:5432}
redis_url=${CLUSTER_REDIS_URL:-redis://127.0.0.1:6379/0}
key_prefix=${CLUSTER_REDIS_KEY_PREFIX:-ocps-local:}
node_id_prefix=${CLUSTER_NODE_ID_PREFIX:-local-node-}
start_timeout=${CLUSTER_START_TIMEOUT:-60}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/openchampps-local

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "${#node_ports[@]}" -ne "${#metrics_ports[@]}" ] || [ "${#node_ports[@]}" -eq 0 ]; then
  die "CLUSTER_NODE_PORTS and CLUSTER_METRICS_PORTS need the same, non-zero, number of ports"
fi

# A pid file is only trusted while its process still runs the program we started:
# after a reboot or a crash the number may belong to something else.
running_pid() {
  local file=$1 expect=$2 pid
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$expect" || return 1
  echo "$pid"
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true; }

find_nginx() {
  if [ -n "${NGINX_BIN:-}" ]; then
    [ -x "$NGINX_BIN" ] || die "NGINX_BIN=$NGINX_BIN is not an executable"
    echo "$NGINX_BIN"; return
  fi
  local candidate
  for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx "$cache/nginx/usr/sbin/nginx"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -v >/dev/null 2>&1; then
      echo "$candidate"; return
    fi
  done
  # Only the binary is needed: unpacking it avoids the package's service (which
  # would start a system nginx on port 80) and needs no write access to /etc.
  log "nginx not found: downloading Debian's nginx package into $cache/nginx"
  command -v apt-get >/dev/null || die "nginx is not installed and apt-get is not available: install nginx or set NGINX_BIN"
  local dl
  dl=$(mktemp -d)
  chmod 0777 "$dl" # apt's download sandbox user must be able to write here
  if ! (cd "$dl" && apt-get download -q nginx >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    (cd "$dl" && apt-get download -q nginx >/dev/null 2>&1) \
      || { rm -rf "$dl"; die "could not download Debian's nginx package (apt-get download nginx failed); install nginx or set NGINX_BIN"; }
  fi
  mkdir -p "$cache/nginx"
  dpkg-deb -x "$dl"/nginx_*.deb "$cache/nginx" || { rm -rf "$dl"; die "could not unpack the nginx package"; }
  rm -rf "$dl"
  "$cache/nginx/usr/sbin/nginx" -v >/dev/null 2>&1 \
    || die "the unpacked nginx does not run (missing libraries? apt-get install nginx)"
  echo "$cache/nginx/usr/sbin/nginx"
}

write_nginx_conf() {
  local conf=$1 user_line=""
  # Run as root, the master would hand the workers to `nobody`, who may not reach
  # this state dir; this is a loopback development cluster, so keep the caller's user.
  if [ "$(id -u)" = 0 ]; then user_line="user root;"; fi
  {
    cat <<EOF
# Generated by deploy/local/cluster.sh; mirrors deploy/nginx/nginx.conf.
$user_line
worker_processes 1;
pid $state/nginx/nginx.pid;
error_log $state/nginx/error.log notice;

events {
    worker_connections 4096;
}

http {
    default_type application/octet-stream;
    access_log $state/nginx/access.log;
    # Compiled-in temp paths point under /var/lib/nginx: keep everything in the state dir.
    client_body_temp_path $state/nginx/tmp/client_body;
    proxy_temp_path $state/nginx/tmp/proxy;
    fastcgi_temp_path $state/nginx/tmp/fastcgi;
    uwsgi_temp_path $state/nginx/tmp/uwsgi;
    scgi_temp_path $state/nginx/tmp/scgi;

    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      '';
    }

    upstream openchampps {
        # WebSockets live long: send each new one to the node with the fewest.
        least_conn;
EOF
    local port
    for port in "${node_ports[@]}"; do
      echo "        server 127.0.0.1:$port max_fails=1 fail_timeout=5s;"
    done
    cat <<EOF
        keepalive 16;
    }

    server {
        listen 127.0.0.1:$lb_port;

        location / {
            proxy_pass http://openchampps;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_connect_timeout 5s;
            # Longer than the node's ping interval (30 s), so an idle socket stays open.
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            # A draining node answers the upgrade with 503: try the next one.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            # Local only: tells a test (or you, with curl -i) which node answered.
            add_header X-Upstream-Addr \$upstream_addr always;
        }
    }
}
EOF
  } >"$conf"
}

ensure_services() {
  if [ "${CLUSTER_SKIP_SERVICES:-0}" = 1 ]; then return; fi
  if [ -x "$repo/scripts/services.sh" ] || [ -f "$repo/scripts/services.sh" ]; then
    bash "$repo/scripts/services.sh" "$db_name"
  else
    command -v psql >/dev/null || die "psql not found and scripts/services.sh is missing"
    psql "$pg_url/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1 \
      || psql "$pg_url/postgres" -qc "CREATE DATABASE \"$db_name\""
  fi
}

start_node() {
  local i=$1 port=$2 mport=$3 dir="$state/node$1"
  mkdir -p "$dir"
  rm -f "$dir/pid"
  # setsid: the node must outlive this script and the terminal or test that ran it.
  # The inner sh writes its own pid and then becomes the node (exec keeps the pid).
  DB_CONN="$pg_url/$db_name" \
  REDIS_URL="$redis_url" \
  REDIS_KEY_PREFIX="$key_prefix" \
  NODE_ID="$node_id_prefix$i" \
  LISTEN_ADDR="127.0.0.1:$port" \
  METRICS_ADDR="127.0.0.1:$mport" \
  TRUSTED_PROXIES="127.0.0.1/32" \
  MAX_CONNECTIONS_PER_ADDRESS="${MAX_CONNECTIONS_PER_ADDRESS:-0}" \
    setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$dir/pid" "$bin" serve \
    </dev/null >>"$dir/node.log" 2>&1 &
  local waited=0
  until [ -s "$dir/pid" ]; do
    [ "$waited" -lt 50 ] || die "node $i did not start"
    sleep 0.1; waited=$((waited + 1))
  done
}

wait_ready() {
  local deadline=$((SECONDS + start_timeout)) i n pending
  while :; do
    pending=0
    for i in "${!node_ports[@]}"; do
      n=$((i + 1))
      if ! running_pid "$state/node$n/pid" "$bin_name" >/dev/null; then
        log "node $n exited during start-up; last lines of $state/node$n/node.log:"
        tail -n 20 "$state/node$n/node.log" >&2 || true
        return 1
      fi
      [ "$(http_code "http://127.0.0.1:${node_ports[$i]}/ready")" = 200 ] || pending=1
    done
    [ "$pending" = 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "nodes not ready after ${start_timeout}s"
      return 1
    fi
    sleep 0.2
  done
}

cmd_start() {
  [ -x "$bin" ] || die "node binary $bin not found: cargo build --release (or set OPENCHAMPPS_BIN)"
  bin=$(readlink -f "$bin")
  bin_name=$(basename "$bin")
  command -v curl >/dev/null || die "curl is needed"
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  if any_running; then die "a cluster from $state is still running: run stop first"; fi
  local nginx
  nginx=$(find_nginx)
  ensure_services

  local i
  for i in "${!node_ports[@]}"; do
    start_node $((i + 1)) "${node_ports[$i]}" "${metrics_ports[$i]}"
  done
  if ! wait_ready; then cmd_stop; die "start-up failed"; fi

  mkdir -p "$state/nginx/tmp"
  write_nginx_conf "$state/nginx/nginx.conf"
  local -a ngx=("$nginx" -p "$state/nginx" -c "$state/nginx/nginx.conf" -e "$state/nginx/error.log")
  if ! "${ngx[@]}" -t -q; then cmd_stop; die "nginx rejected $state/nginx/nginx.conf"; fi
  echo "$nginx" >"$state/nginx/bin"
  if ! "${ngx[@]}"; then cmd_stop; die "nginx did not start; see $state/nginx/error.log"; fi

  local deadline=$((SECONDS + 10))
  until [ "$(http_code "http://127.0.0.1:$lb_port/ready")" = 200 ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$state/nginx/error.log" >&2 || true
      cmd_stop; die "nginx on 127.0.0.1:$lb_port does not answer /ready"
    fi
    sleep 0.2
  done
  log "up: ws://127.0.0.1:$lb_port/ws via nginx; nodes ${node_ports[*]}; metrics ${metrics_ports[*]}; state $state"
}

any_running() {
  local i
  running_pid "$state/nginx/nginx.pid" nginx >/dev/null && return 0
  for i in "${!node_ports[@]}"; do
    running_pid "$state/node$((i + 1))/pid" "$bin_name" >/dev/null && return 0
  done
  # Nodes of an earlier start with more ports than now.
  local f
  for f in "$state"/node*/pid; do
    [ -e "$f" ] && running_pid "$f" "$bin_name" >/dev/null && return 0
  done
  return 1
}

# Waits up to $2 seconds for pid $1 to exit; then kills it.
reap() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "pid $pid still running after $2 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      return
    fi
    sleep 0.1
  done
}

cmd_stop() {
  [ -d "$state" ] || return 0
  local pid f pids=()
  # nginx first, and fast (TERM, not QUIT: a graceful quit would wait for every
  # WebSocket to end), so clients reconnect while nodes drain.
  if pid=$(running_pid "$state/nginx/nginx.pid" nginx); then
    kill -TERM "$pid" 2>/dev/null || true
    reap "$pid" 10
  fi
  rm -f "$state/nginx/nginx.pid"
  for f in "$state"/node*/pid; do
    [ -e "$f" ] || continue
    if pid=$(running_pid "$f" "$bin_name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  local drain=${SHUTDOWN_DRAIN_SECS:-10}
  for pid in "${pids[@]}"; do
    reap "$pid" $((drain + 10))
  done
  log "stopped ($state)"
}

cmd_status() {
  local ok=0 i pid code
  for i in "${!node_ports[@]}"; do
    local n=$((i + 1)) port=${node_ports[$i]}
    if pid=$(running_pid "$state/node$n/pid" "$bin_name"); then
      code=$(http_code "http://127.0.0.1:$port/ready")
      echo "node $n ($node_id_prefix$n): pid $pid, 127.0.0.1:$port /ready $code $(curl -s --max-time 2 "http://127.0.0.1:$port/ready" || true), metrics 127.0.0.1:${metrics_ports[$i]}"
      [ "$code" = 200 ] || ok=1
    else
      echo "node $n: not running"; ok=1
    fi
  done
  if pid=$(running_pid "$state/nginx/nginx.pid" nginx); then
    echo "nginx: pid $pid, 127.0.0.1:$lb_port /ready $(http_code "http://127.0.0.1:$lb_port/ready")"
  else
    echo "nginx: not running"; ok=1
  fi
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  nginx-bin) find_nginx ;;
  *) echo "usage: $0 start|stop|status|nginx-bin" >&2; exit 2 ;;
esac
