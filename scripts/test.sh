#!/usr/bin/env bash
# Runs the whole test suite: makes sure PostgreSQL and Redis are up (installing them
# when absent), then every unit, integration and chart/metrics check.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
need_rust() {
  if ! command -v cargo >/dev/null; then
    echo "test: cargo not found; install a Rust toolchain >= 1.88 (rustup)" >&2; exit 1
  fi
}
need_rust
cargo fmt --check
cargo build --locked --all-targets
cargo test --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
# The chart, the deploy files and a live scrape, checked with Helm's, Kubernetes' and
# Prometheus' own tools (pinned in ci/requirements.txt).
bash ci/check-ops.sh
