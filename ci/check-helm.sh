#!/usr/bin/env bash
# Lints the Helm chart (strict: no warning or error), renders it with an explicit
# config.trustedProxies (it has no default) and with every helm/openchampps/ci/*.yaml, and validates every rendered
# manifest against the Kubernetes 1.30 schemas (kubernetes-validate --strict).
# Offline: Helm's Go SDK runs in-process through helm-python-sdk, no helm binary
# and no cluster. Exits non-zero on any problem.
#   ci/check-helm.sh [CHART_DIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
chart=${1:-$ci_root/helm/openchampps}
venv=$(ci_venv)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" "$ci_root/ci/check_helm.py" --chart "$chart" --out "$out" \
  --validator "$venv/bin/kubernetes-validate" --kubernetes-version 1.30.0
