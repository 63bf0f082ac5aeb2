# Shared by the ci/ check scripts; source it.
#   ci_venv      -> path of a venv with ci/requirements.txt installed (created once, cached)
#   ci_promtool  -> path of promtool unpacked from Debian's prometheus package (cached)
# Cache root: ${OPENCHAMPPS_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openchampps-ci}

ci_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ci_cache=${OPENCHAMPPS_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openchampps-ci}

ci_log() { echo "$(basename "$0"): $*" >&2; }

# Prints the venv's directory after making sure it holds exactly the pinned set.
ci_venv() {
  local venv="$ci_cache/venv" req="$ci_root/ci/requirements.txt" stamp
  stamp=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$stamp" ]; then
    ci_log "creating $venv"
    mkdir -p "$ci_cache"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
    echo "$stamp" >"$venv/.requirements.sha256"
  fi
  echo "$venv"
}

# Prints the path of promtool, unpacking it from Debian's `prometheus` package the
# first time: only the one binary, no service installed or started.
ci_promtool() {
  local dir="$ci_cache/promtool" tool
  tool="$dir/usr/bin/promtool"
  if [ -x "$tool" ] && "$tool" --version >/dev/null 2>&1; then echo "$tool"; return; fi
  if command -v promtool >/dev/null 2>&1; then command -v promtool; return; fi
  ci_log "unpacking promtool from Debian's prometheus package into $dir"
  local dl
  dl=$(mktemp -d)
  chmod 0777 "$dl" # apt's sandbox user downloads into it
  if ! (cd "$dl" && apt-get download -q prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    (cd "$dl" && apt-get download -q prometheus >&2) || { rm -rf "$dl"; ci_log "apt-get download prometheus failed"; return 1; }
  fi
  mkdir -p "$dir"
  dpkg-deb --fsys-tarfile "$dl"/prometheus_*.deb | tar -x -C "$dir" ./usr/bin/promtool
  rm -rf "$dl"
  "$tool" --version >/dev/null || { ci_log "unpacked promtool does not run"; return 1; }
  echo "$tool"
}
