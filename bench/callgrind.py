#!/usr/bin/env python3
"""Instructions and allocations per operation, from callgrind dumps (bench/callgrind.sh).

  callgrind.py record PHASE KIND DUMP METRICS_BEFORE METRICS_AFTER SECONDS LOADGEN.json
  callgrind.py check RESULTS.jsonl BUDGETS.toml [--markdown OUT.md] [--run-label TEXT]

`record` prints one JSON line: the dump's instructions (Ir) and allocation calls,
and the node's counters that changed between the two /metrics scrapes. `check`
pairs each phase's `base` and `full` runs, divides the difference in instructions
(and allocations) by the difference in ops, prints the table, and exits 1 when a
figure exceeds its budget in BUDGETS.toml (2 when the measurement itself is bad).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import metrics_delta  # noqa: E402  (bench/report.py: Prometheus text → deltas)

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover
    tomllib = None

# Rust's allocator entry points: every Rust allocation is one call to one of them,
# whichever allocator serves it (the node's is mimalloc; with glibc's malloc the
# counts of malloc/calloc/realloc/posix_memalign were the same). "mallocs" below
# counts all of them.
ALLOC_FUNCTIONS = {"__rustc::__rust_alloc", "__rustc::__rust_alloc_zeroed", "__rustc::__rust_realloc"}

# Each phase: the /metrics series whose increase is the phase's op count.
PHASES = {
    "token_auth": ('openchampps_messages_received_total{type="token_auth"}', "token_auth (cache hit)"),
    "set_username": ('openchampps_messages_received_total{type="set_username"}', "set_username"),
    "global_chat": ('openchampps_chat_messages_relayed_total{kind="global"}', "global_chat, per delivery"),
    "reconnect": ('openchampps_messages_received_total{type="token_auth"}',
                  "reconnect (accept + upgrade + token_auth + close)"),
}


def parse_dump(path):
    """A callgrind dump written with --compress-strings=no → (Ir total, {alloc fn: calls})."""
    total = None
    calls = {}
    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("cfn="):
                callee = line[4:].strip()
            elif line.startswith("calls="):
                if callee in ALLOC_FUNCTIONS:
                    calls[callee] = calls.get(callee, 0) + int(line[6:].split()[0])
            elif line.startswith("totals:"):
                total = int(line.split()[1])
    if total is None:
        raise SystemExit(f"callgrind.py: no totals line in {path}")
    return total, calls


def record(args):
    phase, kind, dump, m0, m1, seconds, summary = args
    ir, calls = parse_dump(dump)
    try:
        with open(summary) as f:
            lg = json.load(f)
    except (OSError, ValueError):
        lg = {}
    print(json.dumps({
        "phase": phase, "kind": kind, "ir": ir, "allocs": sum(calls.values()), "alloc_calls": calls,
        "metrics": metrics_delta(m0, m1), "seconds": float(seconds),
        "loadgen": {k: lg.get(k) for k in ("ops", "ops_including_warmup", "errors_total", "errors",
                                           "deliveries", "connections_open_at_start")},
    }))


def load_budgets(path):
    with open(path, "rb") as f:
        if tomllib is not None:
            return tomllib.load(f)
    # Before Python 3.11: the file's subset of TOML ([section], key = number, comments).
    budgets, section = {}, None
    with open(path) as f:
        for raw in f:
            text = raw.split("#", 1)[0].strip()
            if text.startswith("[") and text.endswith("]"):
                section = budgets.setdefault(text[1:-1].strip(), {})
            elif "=" in text and section is not None:
                key, value = (t.strip() for t in text.split("=", 1))
                section[key] = float(value.replace("_", ""))
    return budgets


def per_op(results):
    """{phase: {ir, allocs, ops, base, full}} from the base/full pairs."""
    runs = {}
    for r in results:
        runs.setdefault(r["phase"], {})[r["kind"]] = r
    # The node's own timers (heartbeats, flushes, metric upkeep) cost instructions per
    # second, not per op: measured while idle, and taken off for the extra seconds the
    # full run lasted, so that a slower machine does not read as more work per op.
    idle = runs.get("idle", {}).get("rate")
    idle_ir = idle["ir"] / idle["seconds"] if idle else 0.0
    idle_allocs = idle["allocs"] / idle["seconds"] if idle else 0.0
    out = {"_idle": {"ir_per_s": idle_ir, "allocs_per_s": idle_allocs}}
    for phase, (series, _) in PHASES.items():
        pair = runs.get(phase, {})
        if "base" not in pair or "full" not in pair:
            continue
        base, full = pair["base"], pair["full"]
        ops = full["metrics"].get(series, 0.0) - base["metrics"].get(series, 0.0)
        extra_s = full["seconds"] - base["seconds"]
        ir = full["ir"] - base["ir"] - idle_ir * extra_s
        allocs = full["allocs"] - base["allocs"] - idle_allocs * extra_s
        out[phase] = {
            "ops": ops,
            "ir": ir / ops if ops > 0 else None,
            "allocs": allocs / ops if ops > 0 else None,
            "errors": (full["loadgen"].get("errors_total") or 0) + (base["loadgen"].get("errors_total") or 0),
        }
    return out


def target(budget):
    """Issue #20's goal for the operation (not enforced): instructions, and mallocs when set."""
    t = fmt(budget.get("target_instructions"))
    if "target_mallocs" in budget:
        t += f" / ≤ {fmt(budget['target_mallocs'])} mallocs"
    return t


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def check(args):
    results_path, budgets_path = args[0], args[1]
    markdown = None
    label = ""
    rest = args[2:]
    while rest:
        if rest[0] == "--markdown":
            markdown, rest = rest[1], rest[2:]
        elif rest[0] == "--run-label":
            label, rest = rest[1], rest[2:]
        else:
            raise SystemExit(__doc__)
    with open(results_path) as f:
        results = [json.loads(l) for l in f if l.strip()]
    budgets = load_budgets(budgets_path)
    figures = per_op(results)

    rows = []
    status = 0
    for phase, (_, title) in PHASES.items():
        b = budgets.get(phase, {})
        f = figures.get(phase)
        if f is None or f["ir"] is None:
            rows.append((title, "–", "–", "–", fmt(b.get("instructions")), fmt(b.get("mallocs"), 1),
                         target(b), "NO MEASUREMENT"))
            status = max(status, 2)
            continue
        verdict = []
        if f["errors"]:
            verdict.append(f"{f['errors']} load-generator errors")
            status = max(status, 2)
        if "instructions" in b and f["ir"] > b["instructions"]:
            verdict.append("instructions over budget")
            status = max(status, 1)
        if "mallocs" in b and f["allocs"] > b["mallocs"]:
            verdict.append("mallocs over budget")
            status = max(status, 1)
        rows.append((title, fmt(f["ir"]), fmt(f["allocs"], 1), fmt(f["ops"]), fmt(b.get("instructions")),
                     fmt(b.get("mallocs"), 1), target(b), "; ".join(verdict) or "ok"))

    head = ("operation", "instructions/op", "mallocs/op", "ops", "budget instr", "budget mallocs",
            "target (#20)", "result")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w) if 0 < i < 7 else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(line(head))
    for r in rows:
        print(line(r))
    idle = figures["_idle"]
    print(f"(node idle: {fmt(idle['ir_per_s'])} instructions/s, {fmt(idle['allocs_per_s'], 1)} mallocs/s, "
          "taken off for the extra seconds of each full run; targets are issue #20's, not enforced)")
    print("budget check: " + ("passed" if status == 0 else "FAILED (over budget)" if status == 1
                              else "FAILED (no valid measurement)"))

    if markdown:
        with open(markdown, "a") as fh:
            if label:
                fh.write(f"{label}\n\n")
            fh.write("| operation | instructions/op | mallocs/op | ops measured | budget (instr / mallocs) "
                     "| issue #20 target |\n")
            fh.write("| --- | ---: | ---: | ---: | ---: | ---: |\n")
            for r in rows:
                fh.write(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} / {r[5]} | {r[6]} |\n")
            fh.write("\n")
    return status


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "record" and len(rest) == 7:
        record(rest)
    elif command == "check" and len(rest) >= 2:
        sys.exit(check(rest))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
