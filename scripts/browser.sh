#!/usr/bin/env bash
# Installs what the console's browser test (tests/browser/console.test.mjs) needs, when
# missing: Debian's Chromium (/usr/bin/chromium) and the pinned npm packages of
# tests/browser (npm ci from its lockfile). Playwright never downloads a browser of its
# own: the test drives Debian's. Idempotent and quiet on success; run by
# tests/it/console.rs and by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "browser: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Runs a command silently; shows what it said only when it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    log "failed: $*"
    return 1
  fi
}

# One installer at a time: tests may run this script side by side.
exec 9>"${TMPDIR:-/tmp}/openchampps-browser.lock"
flock 9

ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  log "installing Debian's chromium"
  quiet as_root apt-get update -qq
  quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  [ -x /usr/bin/chromium ] || { log "chromium did not install"; exit 1; }
}

ensure_node() {
  if command -v node >/dev/null && command -v npm >/dev/null; then return; fi
  log "installing Node.js and npm"
  quiet as_root apt-get update -qq
  quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
}

ensure_packages() {
  local dir=tests/browser
  local stamp=$dir/node_modules/.package-lock.json
  if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ]; then return; fi
  log "installing the npm packages of $dir"
  (cd "$dir" && quiet env PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
}

ensure_chromium
ensure_node
ensure_packages
