#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379) answer:
# leaves running ones alone, starts stopped ones, installs missing ones from Debian's
# packages; installs PgBouncer, redis-sentinel and redis-tools (redis-cli --cluster) for the
# tests, which start private Sentinel and Cluster setups. Source it or run it; it is idempotent.
set -euo pipefail

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
PGPORT_NUM=${PGPORT_NUM:-5432}
REDIS_PORT_NUM=${REDIS_PORT_NUM:-6379}

log() { echo "services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM" 2>/dev/null; }

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_up; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # A development/test machine: trust loopback, as the CI machines do.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 60); do pg_up && return; sleep 0.5; done
  log "PostgreSQL did not come up"; exit 1
}

ensure_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p "$REDIS_PORT_NUM" ping 2>/dev/null | grep -q PONG; then return; fi
  if ! command -v redis-server >/dev/null; then
    log "installing Redis"
    apt_install redis-server redis-tools
  fi
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT_NUM" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/openchampps.log
  for _ in $(seq 1 60); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT_NUM" ping 2>/dev/null | grep -q PONG && return; sleep 0.5; done
  log "Redis did not come up"; exit 1
}

# The tests run their own PgBouncer (transaction mode) in front of PostgreSQL; only
# the binary is needed, not Debian's service.
ensure_pgbouncer() {
  if [ -x /usr/sbin/pgbouncer ]; then return; fi
  log "installing PgBouncer"
  apt_install pgbouncer
}

# tests/it/topologies.rs starts its own Redis Cluster (redis-server --cluster-enabled,
# redis-cli --cluster create) and Sentinel (redis-server --sentinel) processes: only the
# binaries are needed, not Debian's services.
ensure_redis_topologies() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  log "installing ${missing[*]}"
  apt_install "${missing[@]}"
  # Debian starts a sentinel service on 26379 on install: the tests run their own.
  if command -v systemctl >/dev/null && systemctl is-active -q redis-sentinel 2>/dev/null; then
    as_root systemctl stop redis-sentinel || true
  fi
}

# Creates database $1 when it does not exist.
ensure_database() {
  local db=$1
  if ! psql -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    log "creating database $db"
    psql -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres -qc "CREATE DATABASE \"$db\""
  fi
}

ensure_postgres
ensure_redis
ensure_pgbouncer
ensure_redis_topologies
if [ "${1:-}" != "" ]; then ensure_database "$1"; fi
