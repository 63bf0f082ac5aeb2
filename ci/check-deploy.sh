#!/usr/bin/env bash
# Checks deploy/ without Docker: nginx.conf passes `nginx -t` (upstream host names
# pointed at loopback), prometheus.yml passes `promtool check config`, and
# compose.yaml, the nginx upstreams, the Prometheus targets, the Grafana
# provisioning and the Dockerfile agree (ci/check_deploy.py). Scripts parse.
#   ci/check-deploy.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
venv=$(ci_venv)
promtool=$(ci_promtool)
nginx=$(bash "$ci_root/deploy/local/cluster.sh" nginx-bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

# The compose hosts do not resolve here; the config is otherwise used as is, plus
# temp paths (the image has its own; a bare binary's compiled-in ones may not exist).
mkdir -p "$work/tmp"
sed -E -e 's/server node[0-9]+:8080/server 127.0.0.1:8080/' \
       -e "s|^pid .*|pid $work/nginx.pid;|" \
       -e "s|^http \{|http {\n    client_body_temp_path $work/tmp/body; proxy_temp_path $work/tmp/proxy; fastcgi_temp_path $work/tmp/fastcgi; uwsgi_temp_path $work/tmp/uwsgi; scgi_temp_path $work/tmp/scgi;|" \
       "$ci_root/deploy/nginx/nginx.conf" >"$work/nginx.conf"
if "$nginx" -t -q -p "$work" -c "$work/nginx.conf" -e "$work/error.log"; then
  ci_log "ok: deploy/nginx/nginx.conf passes nginx -t"
else
  cat "$work/error.log" >&2 || true
  ci_log "deploy/nginx/nginx.conf fails nginx -t"; status=1
fi

if "$promtool" check config "$ci_root/deploy/prometheus/prometheus.yml" >"$work/promtool.out" 2>&1; then
  ci_log "ok: deploy/prometheus/prometheus.yml passes promtool check config"
else
  cat "$work/promtool.out" >&2; status=1
fi

# Every PromQL expression of the dashboard must parse: promtool checks them as
# recording rules (Grafana variables replaced by plain values first).
"$venv/bin/python" - "$ci_root/deploy/grafana/openchampps.json" "$work/dashboard-rules.yml" <<'PY'
import json, re, sys, yaml
def exprs(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for value in node.values():
            yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)
def plain(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)
rules = [{"record": f"dashboard:expr{i}", "expr": plain(e)} for i, e in enumerate(exprs(json.load(open(sys.argv[1]))))]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(len(rules))
PY
if "$promtool" check rules "$work/dashboard-rules.yml" >"$work/rules.out" 2>&1; then
  ci_log "ok: every dashboard PromQL expression parses (promtool check rules)"
else
  cat "$work/rules.out" >&2; ci_log "deploy/grafana/openchampps.json has PromQL that does not parse"; status=1
fi

for script in "$ci_root"/deploy/local/cluster.sh "$ci_root"/ci/*.sh; do
  bash -n "$script" || { ci_log "$script does not parse"; status=1; }
done

"$venv/bin/python" "$ci_root/ci/check_deploy.py" || status=1
exit "$status"
