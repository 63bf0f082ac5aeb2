#!/usr/bin/env python3
"""Checks that every metric the Grafana dashboard queries is one a node exports.

    ci/check-dashboard.py [--dashboard deploy/grafana/openchampps.json] SCRAPE [SCRAPE ...]

SCRAPE is a saved /metrics response of a live node (several are merged: a metric
only appears once it has been recorded, so a scrape of a healthy node and one of a
node with Redis down cover more than either). Histograms count as their
`_bucket`, `_sum` and `_count` series, which is what PromQL can query; the bare
family name of a histogram is reported as an error.

Exits 1 when the dashboard names a metric absent from every scrape, 2 on bad input.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "atan2", "inf", "nan", "start", "end",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENT = re.compile(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)")
GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def exported_names(paths: list[pathlib.Path]) -> tuple[set[str], set[str]]:
    """(queryable series names, histogram family names) found in the scrapes."""
    names: set[str] = set()
    histograms: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) < 4:
                    continue
                name, kind = parts[2], parts[3]
                if kind == "histogram":
                    histograms.add(name)
                    names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
                elif kind == "summary":
                    names.update({name, f"{name}_sum", f"{name}_count"})
                else:
                    names.add(name)
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names, histograms


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels removed)."""
    text = GRAFANA_VAR.sub("1", expr)
    text = STRING.sub('""', text)
    # Label matchers and range/subquery selectors hold label names, not metrics.
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    previous = None
    while previous != text:  # nested parentheses inside a grouping list do not occur, but be thorough
        previous, text = text, GROUPING.sub(" ", text)
    found = set()
    for match in IDENT.finditer(text):
        word = match.group(1)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if word.lower() in KEYWORDS:
            continue
        found.add(word)
    return found


def dashboard_queries(node, where="") -> list[tuple[str, str]]:
    """(location, PromQL) for every panel target and templating query."""
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or ""
        here = f"{where}/{title}" if title else where
        expr = node.get("expr")
        if isinstance(expr, str) and expr.strip():
            out.append((here, expr))
        if node.get("type") == "query" and "query" in node:
            query = node["query"]
            if isinstance(query, dict):
                query = query.get("query", "")
            out.extend((f"{here} (variable)", q) for q in variable_exprs(str(query)))
        for key, value in node.items():
            if key not in ("expr", "query"):
                out.extend(dashboard_queries(value, here))
    elif isinstance(node, list):
        for item in node:
            out.extend(dashboard_queries(item, where))
    return out


def variable_exprs(query: str) -> list[str]:
    """The PromQL inside a Grafana Prometheus variable query."""
    query = query.strip()
    m = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)", query, re.S)
    if m:
        return [m.group(1)]
    m = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if m:
        return [m.group(1)]
    return []  # label_values(label), label_names(), metrics(regex): no metric selected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    parser.add_argument("--dashboard", type=pathlib.Path, default=root / "deploy/grafana/openchampps.json")
    parser.add_argument("scrapes", nargs="+", type=pathlib.Path, help="saved /metrics responses")
    args = parser.parse_args()

    try:
        dashboard = json.loads(args.dashboard.read_text())
        names, histograms = exported_names(args.scrapes)
    except (OSError, ValueError) as e:
        print(f"check-dashboard: {e}", file=sys.stderr)
        return 2
    if not names:
        print("check-dashboard: the scrapes hold no metric at all", file=sys.stderr)
        return 2

    queries = dashboard_queries(dashboard)
    if not queries:
        print(f"check-dashboard: no PromQL found in {args.dashboard}", file=sys.stderr)
        return 2
    used: set[str] = set()
    errors = 0
    for where, expr in queries:
        for name in sorted(promql_metric_names(expr)):
            used.add(name)
            if name in histograms:
                print(f"ERROR {where}: {name} is a histogram; query {name}_bucket, _sum or _count\n  {expr}")
                errors += 1
            elif name not in names:
                print(f"ERROR {where}: {name} is not exported by the node\n  {expr}")
                errors += 1
    unused = sorted(n for n in names if n not in used and not n.endswith(("_sum", "_count", "_bucket")))
    print(f"check-dashboard: {len(queries)} queries, {len(used)} metric names, {errors} unknown")
    if unused:
        print("check-dashboard: exported but not on the dashboard: " + ", ".join(unused))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
