"""Run the reliability harness (tests/reliability) and print its figures.

    python benchmarks/reliability_report.py                 # run the harness, print the figures
    python benchmarks/reliability_report.py --markdown      # the same as a Markdown section
    python benchmarks/reliability_report.py --summary FILE  # only summarise an existing JSONL summary

The tests append one JSON line per case (fault injected, kill, disk-full run, corruption, path-safety
probe, spec mutation…) to the file named by ``$GENESIS_RELIABILITY_SUMMARY``; this script sets it,
runs pytest, and aggregates: how many cases ran and how many the build survived (recovered
correctly, rejected with the agreed one-line error), broken down by kind. The seed is
``$GENESIS_RELIABILITY_SEED`` (the tests' default when unset); rerun with the printed seed to repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = [
    ("fault", "kill -9 at engine fault points (publish, rename, state DB)"),
    ("random_kill", "kill -9 of the build's process group at random moments"),
    ("ml_fault", "kill -9 during real ML stages (tokenize, pretrain, CAI)"),
    ("orphan", "no stage process outlives a killed build"),
    ("disk_full", "disk full (tmpfs / RLIMIT_FSIZE)"),
    ("corruption", "damaged cache objects and state DB"),
    ("path_safety", "paths escaping specs/, the workspace or an object"),
    ("trust", "no unpickling of cache contents (stages/ scan)"),
    ("change_detection", "edits the stat signature cannot see (same size, same mtime)"),
    ("remote", "remote cache: corrupt remote objects, file:// without auto_mkdir, verify --remote"),
    ("config", "genesis.toml values of the wrong type"),
    ("cli_options", "invalid options on both the fast path and the full path"),
    ("server", "serve: over-long scoring, full queue, unknown model, bad headers, API key, bounded load"),
    ("reproducibility", "the default target built twice: identical output digests"),
]


def run_harness(summary: Path, extra: list[str], log: Path | None = None) -> dict[str, Any]:
    """Run pytest on tests/reliability with the summary file set; returns its outcome counts."""
    env = {**os.environ, "GENESIS_RELIABILITY_SUMMARY": str(summary)}
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider", "-rfEX", *extra]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.time() - t0
    if log:
        log.write_text(p.stdout + p.stderr)
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|xfailed|xpassed|skipped|errors?)", tail)}
    failures = [ln for ln in p.stdout.splitlines() if ln.startswith(("FAILED", "ERROR", "XPASS"))]
    return {"returncode": p.returncode, "seconds": round(took, 1), "counts": counts, "line": tail,
            "failures": failures}


def load(summary: Path) -> list[dict[str, Any]]:
    """The summary's JSON lines."""
    if not summary.is_file():
        return []
    return [json.loads(ln) for ln in summary.read_text().splitlines() if ln.strip()]


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the cases into the report's numbers."""
    by = defaultdict(list)
    for r in rows:
        by[r["category"]].append(r)
    out: dict[str, Any] = {"seed": rows[0]["seed"] if rows else None, "sections": {}}
    for cat, _title in SECTIONS:
        cases = by.get(cat, [])
        out["sections"][cat] = {"run": len(cases), "survived": sum(c["survived"] for c in cases),
                                "failed_cases": [c["case"] for c in cases if not c["survived"]]}
    leftovers = [r.get("leftover_processes", 0) for r in by.get("random_kill", []) + by.get("ml_fault", [])]
    out["kills_with_orphans"] = sum(1 for n in leftovers if n)
    out["kills"] = len(leftovers)
    muts = by.get("mutation", [])
    outcome = Counter(m["outcome"] for m in muts)
    known = Counter(m["outcome"] for m in muts if m.get("known_gap"))
    out["mutations"] = {
        "run": len(muts), "rejected": outcome["rejected"],
        "accepted_known_gap": known["accepted"], "accepted_unknown": outcome["accepted"] - known["accepted"],
        "bad_known_gap": known["bad"], "bad_unknown": outcome["bad"] - known["bad"],
        "by_type": {t: {"run": n, "rejected": sum(1 for m in muts if m["type"] == t and m["outcome"] == "rejected")}
                    for t, n in sorted(Counter(m["type"] for m in muts).items())},
        "gaps": sorted(Counter(m["known_gap"] for m in muts if m.get("known_gap")).items()),
        "workspaces": dict(Counter(m.get("workspace", "?") for m in muts)),
    }
    sub = by.get("mutation-subprocess", [])
    out["subprocess"] = {"run": len(sub), "agree": sum(s["survived"] for s in sub),
                         "builds": sum(1 for s in sub if s.get("mode") == "build")}
    out["cases"] = [r for r in rows if r["category"] != "mutation"]
    cov = by.get("spec-coverage", [])
    out["specs"] = {"total": len(cov), "fuzzed": sum(c["survived"] for c in cov),
                    "not_fuzzed": {c["case"]: c.get("skipped") for c in cov if not c["survived"]}}
    return out


def render(f: dict[str, Any], harness: dict[str, Any] | None, markdown: bool) -> str:
    """The figures as text (or Markdown)."""
    lines: list[str] = []
    b = "- " if markdown else "  "
    if harness:
        lines.append(f"harness: {harness['line']} in {harness['seconds']} s (seed {f['seed']})")
    for cat, title in SECTIONS:
        s = f["sections"][cat]
        if s["run"]:
            lines.append(f"{b}{title}: {s['survived']} of {s['run']} survived"
                         + (f" (failed: {', '.join(s['failed_cases'][:4])})" if s["failed_cases"] else ""))
    if f["kills"]:
        lines.append(f"{b}kills after which a stage process was still running: {f['kills_with_orphans']} of {f['kills']}")
    m = f["mutations"]
    if m["run"]:
        lines.append(f"{b}spec mutations: {m['run']} run, {m['rejected']} rejected with the one-line error "
                     f"(exit 2, file and field, no traceback, cache byte-identical); accepted silently: "
                     f"{m['accepted_known_gap']} known gaps + {m['accepted_unknown']} new; unlocated/crashing errors: "
                     f"{m['bad_known_gap']} known + {m['bad_unknown']} new")
        types = ", ".join(f"{t} {v['rejected']}/{v['run']}" for t, v in m["by_type"].items())
        lines.append(f"{b}  by type (rejected/run): {types}")
        for gap, n in m["gaps"]:
            lines.append(f"{b}  known gap {gap}: {n}")
    s = f["subprocess"]
    if s["run"]:
        lines.append(f"{b}mutations re-run through real genesis-build subprocesses: {s['agree']} of {s['run']} "
                     f"agree ({s['builds']} as real builds)")
    sp = f["specs"]
    if sp["total"]:
        lines.append(f"{b}spec files fuzzed: {sp['fuzzed']} of {sp['total']}")
        for a, why in sp["not_fuzzed"].items():
            lines.append(f"{b}  not fuzzed: {a}: {(why or '')[:160]}")
    if harness and harness["failures"]:
        lines.append("failures:")
        lines += [f"{b}{x}" for x in harness["failures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, help="summarise this JSONL file instead of running the harness")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown list")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--log", type=Path, help="write pytest's full output here")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    harness = None
    if args.summary:
        rows = load(args.summary)
    else:
        with tempfile.TemporaryDirectory() as d:
            summary = Path(d) / "summary.jsonl"
            harness = run_harness(summary, args.pytest_args, args.log)
            rows = load(summary)
    f = figures(rows)
    if harness:
        f["harness"] = harness
    print(render(f, harness, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(f, indent=1))
    return 0 if harness is None or harness["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
