#!/usr/bin/env bash
# Fetches a live scrape from a node's metrics port and lints it with
# `promtool check metrics` (Prometheus' exposition-format and naming rules).
#   ci/check-metrics.sh BASE_URL [SAVE_TO]
#   ci/check-metrics.sh http://127.0.0.1:9091            # /metrics is appended
# SAVE_TO keeps the scrape (for ci/check-dashboard.py). promtool comes from
# Debian's prometheus package, unpacked into the cache (see ci/lib.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 BASE_URL [SAVE_TO]" >&2; exit 2; }
url=${1%/}
case "$url" in */metrics) ;; *) url="$url/metrics" ;; esac
promtool=$(ci_promtool)

scrape=$(mktemp)
trap 'rm -f "$scrape"' EXIT
curl -fsS --max-time 10 -o "$scrape" "$url" || { ci_log "cannot fetch $url"; exit 1; }
if ! grep -q '^openchampps_' "$scrape"; then
  ci_log "$url has no openchampps_ sample"; exit 1
fi
if [ $# -ge 2 ]; then cp "$scrape" "$2"; fi

families=$(grep -c '^# TYPE ' "$scrape" || true)
if ! findings=$("$promtool" check metrics <"$scrape" 2>&1); then
  echo "$findings"
  ci_log "promtool check metrics found problems in $url"
  exit 1
fi
[ -z "$findings" ] || echo "$findings"
ci_log "ok: $url ($families metric families) passes promtool check metrics ($("$promtool" --version 2>&1 | head -n 1))"
