#!/usr/bin/env bash
# Paired A/B of two node binaries: in each round, redis-benchmark GET, then for each
# binary a fresh node and the load generator's token_auth and set_username runs
# (64 connections). Prints ops/s, p99 and CPU per op of node, Redis and client.
#
#   bash bench/experiments/ab.sh target/release/openchampps /tmp/exp/openchampps [ROUNDS]
#
# The load generator is the first binary's `bench` subcommand. Needs the services
# (scripts/services.sh) and uses database openchampps_bench_ab, prefix benchab:.
set -euo pipefail
A=$1 B=$2 ROUNDS=${3:-3}
PORT=${PORT:-18082}
bash "$(dirname "$0")/../../scripts/services.sh" openchampps_bench_ab >/dev/null
cleanup() {
  redis-cli --scan --pattern 'benchab:*' | xargs -r -n 500 redis-cli del >/dev/null
  psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS openchampps_bench_ab WITH (FORCE)' >/dev/null 2>&1 || true
}
trap cleanup EXIT
node() {
  DB_CONN=postgres://postgres@127.0.0.1/openchampps_bench_ab REDIS_KEY_PREFIX=benchab: LISTEN_ADDR=127.0.0.1:$PORT \
    METRICS_ADDR=127.0.0.1:$((PORT + 1000)) RUST_LOG=warn SHUTDOWN_DRAIN_SECS=1 "$1" >/dev/null 2>&1 &
  echo $!
}
for round in $(seq 1 "$ROUNDS"); do
  rb=$(redis-benchmark -t get -c 64 -n 300000 --csv 2>/dev/null | awk -F'"' '/GET/{print $4}')
  for bin in "$A" "$B"; do
    pid=$(node "$bin")
    for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.1; done
    for mode in token_auth set_username; do
      "$A" bench --url "ws://127.0.0.1:$PORT/ws" --accounts 16 --account-prefix ab_ --mode "$mode" -c 64 -d 5 --warmup 1 \
        --json --watch-pid "$pid" --watch-pid "$(pidof redis-server | cut -d' ' -f1)" 2>/dev/null |
        RB=$rb ROUND=$round BIN=$bin MODE=$mode python3 -c '
import json, os, sys
d = json.load(sys.stdin); c = d["cpu"]; ops = d["ops_per_sec"]; rb = float(os.environ["RB"])
node, redis = c["processes"][0]["cores"], c["processes"][1]["cores"]
other = c["machine_busy_cores"] - c["loadgen_cores"] - node - redis
who = "round %s %s %s" % (os.environ["ROUND"], os.environ["BIN"], os.environ["MODE"])
print("%s: %8.0f ops/s, %.2f x redis-benchmark (%.0f), p99 %.2f ms, us/op node %.1f redis %.1f client %.1f, other load %.2f cores"
      % (who, ops, ops / rb, rb, d["latency_ms"]["p99"], node / ops * 1e6, redis / ops * 1e6, c["loadgen_cores"] / ops * 1e6, other))'
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
