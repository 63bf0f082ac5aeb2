"""Static consistency checks of deploy/ (driven by ci/check-deploy.sh).

Docker cannot run on the CI machine, so this checks what can be checked without it:
compose.yaml, nginx.conf, prometheus.yml, the Grafana provisioning and dashboard,
and the Dockerfile agree with each other and with what a node needs.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
deploy = root / "deploy"
problems: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)
        print(f"FAIL {message}")


def main() -> int:
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    services = compose.get("services", {})
    nodes = sorted(name for name in services if re.fullmatch(r"node\d+", name))
    check(len(nodes) == 3, f"compose: expected three node services, found {nodes}")
    for wanted in ("postgres", "redis", "nginx", "prometheus", "grafana"):
        check(wanted in services, f"compose: no {wanted} service")
    check(str(services.get("postgres", {}).get("image", "")).startswith("postgres:16"), "compose: postgres must be postgres:16")
    check(str(services.get("redis", {}).get("image", "")).startswith("redis:7"), "compose: redis must be redis:7")

    nginx_ip = services.get("nginx", {}).get("networks", {}).get("backend", {}).get("ipv4_address")
    node_ids = set()
    for name in nodes:
        env = services[name].get("environment", {})
        for key in ("DB_CONN", "REDIS_URL", "NODE_ID", "TRUSTED_PROXIES"):
            check(key in env, f"compose: {name} lacks {key}")
        node_ids.add(env.get("NODE_ID"))
        check(env.get("TRUSTED_PROXIES") == f"{nginx_ip}/32", f"compose: {name} TRUSTED_PROXIES should be nginx's {nginx_ip}/32")
        check(services[name].get("build", {}).get("dockerfile") == "deploy/Dockerfile", f"compose: {name} is not built from deploy/Dockerfile")
    check(len(node_ids) == len(nodes), "compose: NODE_IDs are not distinct")

    conf = (deploy / "nginx/nginx.conf").read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+):8080", conf, re.M))
    check(upstreams == set(nodes), f"nginx.conf upstream {sorted(upstreams)} != compose nodes {nodes}")
    for directive in ("proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade",
                      "proxy_set_header Connection $connection_upgrade", "X-Forwarded-For", "X-Real-IP", "map $http_upgrade"):
        check(directive in conf, f"nginx.conf lacks {directive!r}")
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s", conf)
    check(bool(timeout) and int(timeout.group(1)) >= 75, "nginx.conf: proxy_read_timeout must be at least 75s")

    prom = yaml.safe_load((deploy / "prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    check(targets == {f"{n}:9091" for n in nodes}, f"prometheus.yml targets {sorted(targets)} != every node's :9091")
    volumes = services.get("prometheus", {}).get("volumes", [])
    check(any("prometheus/prometheus.yml" in v for v in volumes), "compose: prometheus does not mount prometheus/prometheus.yml")

    ds = yaml.safe_load((deploy / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    check(any(d.get("type") == "prometheus" and "prometheus:9090" in d.get("url", "") for d in ds.get("datasources", [])),
          "grafana: no Prometheus datasource at prometheus:9090")
    providers = yaml.safe_load((deploy / "grafana/provisioning/dashboards/openchampps.yaml").read_text())
    paths = {p.get("options", {}).get("path") for p in providers.get("providers", [])}
    gvolumes = services.get("grafana", {}).get("volumes", [])
    check(any(v.split(":")[1].rsplit("/", 1)[0] in paths for v in gvolumes if "openchampps.json" in v),
          "grafana: the dashboard is not mounted where the provider looks")
    dashboard = json.loads((deploy / "grafana/openchampps.json").read_text())
    check(dashboard.get("uid") == "openchampps" and dashboard.get("panels"), "dashboard: no uid or no panels")
    titles = " ".join(p.get("title", "") for p in dashboard.get("panels", [])).lower()
    for wanted in ("connections per node", "auth rate", "latency", "hit ratio", "hash queue", "chat", "errors"):
        check(wanted in titles, f"dashboard: no panel about {wanted!r}")

    dockerfile = (deploy / "Dockerfile").read_text()
    for pattern, what in ((r"^FROM rust:1-bookworm AS builder", "builder stage rust:1-bookworm"),
                          (r"cargo build --release --locked", "cargo build --release --locked"),
                          (r"^FROM debian:bookworm-slim", "debian:bookworm-slim runtime"),
                          (r"^USER 10001", "non-root USER"),
                          (r"^EXPOSE 8080 9091", "EXPOSE 8080 9091"),
                          (r"^HEALTHCHECK (?:.*\\\n)*.*/health", "HEALTHCHECK on /health")):
        check(re.search(pattern, dockerfile, re.M) is not None, f"Dockerfile: {what}")

    if problems:
        print(f"check-deploy: {len(problems)} problem(s)")
        return 1
    print("check-deploy: compose, nginx, prometheus, grafana and Dockerfile agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
