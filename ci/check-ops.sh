#!/usr/bin/env bash
# Every operability check, in one call (for .ci/run). Needs the debug binary
# (cargo build) and PostgreSQL/Redis on loopback (scripts/services.sh).
#   ci/check-ops.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
failed=()
for check in check-deploy.sh check-helm.sh check-live-metrics.sh; do
  echo "== ci/$check"
  bash "$here/$check" || failed+=("$check")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "ci/check-ops: FAILED: ${failed[*]}"
  exit 1
fi
echo "ci/check-ops: all operability checks passed"
