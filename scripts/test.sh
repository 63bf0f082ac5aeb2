#!/usr/bin/env bash
# Runs the whole test suite: makes sure PostgreSQL and Redis are up (installing them
# when absent), then every unit, integration and chart/metrics check, and the
# instruction budget per operation (bench/callgrind.sh, bench/budgets.toml).
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
results=$(mktemp)
trap 'rm -f "$results"' EXIT
# No doc-tests: the crate has none, and an empty run would close the output.
status=0
cargo test --locked --no-fail-fast --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$results" || status=1
# The chart, the deploy files and a live scrape, checked with Helm's, Kubernetes' and
# Prometheus' own tools (pinned in ci/requirements.txt).
bash ci/check-ops.sh || status=1
# Instructions and mallocs per operation (token_auth, set_username, global_chat,
# reconnect) with the release node under callgrind, against bench/budgets.toml
# (issue #20). Installs valgrind when absent; about a minute plus the release build.
bash bench/callgrind.sh || status=1

# One closing line for the whole Rust suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
exit "$status"
