#!/usr/bin/env bash
# Runs one node on :8080 (metrics on :9091) against local PostgreSQL and Redis,
# starting or installing them first when needed. Extra arguments go to the node.
set -euo pipefail
cd "$(dirname "$0")/.."

DB_NAME=${DB_NAME:-openchampps}
bash scripts/services.sh "$DB_NAME"
if ! command -v cargo >/dev/null; then
  echo "run: cargo not found; install a Rust toolchain >= 1.88 (rustup)" >&2; exit 1
fi
cargo build --release --locked
export DB_NAME
exec target/release/openchampps "$@"
