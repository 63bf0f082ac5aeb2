# Shared by bench/run.sh and bench/topology_costs.sh (sourced). The caller defines
# log() and sets BIN (the release binary); NODE_PID names the node it runs.

# start_node LOG PORT METRICS_PORT [VAR=value ...]: starts one node with VARs and the
# benchmark settings (the per-connection message, chat, registration and
# per-address connection limits off: one load-generator process drives it at full
# speed from one address), logging to LOG, and waits until /ready answers.
start_node() {
  local node_log=$1 port=$2 metrics=$3
  shift 3
  env "$@" LISTEN_ADDR="127.0.0.1:$port" METRICS_ADDR="127.0.0.1:$metrics" SHUTDOWN_DRAIN_SECS=1 \
    MAX_MESSAGES_PER_SEC=0 CHAT_MESSAGES_PER_SEC=0 REGISTRATIONS_PER_ADDRESS=0 LOGIN_FREE_FAILURES=30 \
    MAX_CONNECTIONS_PER_ADDRESS=0 \
    "$BIN" >>"$node_log" 2>&1 &
  NODE_PID=$!
  for _ in $(seq 1 150); do
    if curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then return; fi
    kill -0 "$NODE_PID" 2>/dev/null || { tail -n 20 "$node_log" >&2; log "the node exited"; exit 1; }
    sleep 0.2
  done
  tail -n 20 "$node_log" >&2
  log "the node did not become ready"
  exit 1
}

# Stops the node: SIGTERM, then SIGKILL after 5 s.
stop_node() {
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -TERM "$NODE_PID"
    for _ in $(seq 1 50); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  NODE_PID=""
}

# Removes what a run left: its Redis keys (those starting with PREFIX), its database,
# and its work directory (kept with KEEP=1).
forget_run() {
  local prefix=$1 db=$2 work=$3
  redis-cli --scan --pattern "${prefix}*" 2>/dev/null | xargs -r -n 500 redis-cli del >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
