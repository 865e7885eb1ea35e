"""``genesis-build diff A B`` and ``genesis-build exp``: builds read back from their manifests.

A build is named by an ``out/`` entry, a target or ``--set`` variant target, or any node id this
workspace built; it resolves to one object, and the manifests upstream of it are walked (as the
report does). Nodes are aligned by ``stage[/part]`` so variants and differently named specs line
up. Metrics are every numeric stat of every node's manifest plus every number of each eval node's
``results.json``. ``exp`` lists the variants recorded in ``.genesis/experiments.jsonl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GenesisError
from .experiments import base_node, read_log
from .specs import did_you_mean

# --------------------------------------------------------------------------------------------
# Reading builds back: a root object → every node's manifest, spec values and metrics


@dataclass
class Build:
    """One build as ``diff``/``exp`` see it."""

    label: str
    key: str
    nodes: dict[str, dict[str, Any]]  # aligned node label → manifest
    created: float = 0.0


def _node_label(nid: str) -> str:
    return base_node(nid)


def walk(cache: Any, key: str) -> dict[str, dict[str, Any]]:
    """{node id: manifest} of an object and everything upstream, from the cached manifests."""
    out: dict[str, dict[str, Any]] = {}
    todo = [(None, key)]
    seen: set[str] = set()
    while todo:
        nid, k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        m = cache.manifest(k)
        if not m:
            continue
        out[nid or m.get("node", k)] = m
        for dep in (m.get("inputs") or {}).values():
            if dep.get("key"):
                todo.append((dep.get("node"), dep["key"]))
    return out


def aligned(nodes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Node ids → labels that match across variants and across base names: ``stage[/part]`` where
    unique in the build, else the node id without its variant suffix."""
    counts: dict[str, int] = {}
    short = {}
    for nid, m in nodes.items():
        s = m.get("stage", nid.split(":")[0]) + (f"/{m['part']}" if m.get("part") else "")
        short[nid] = s
        counts[s] = counts.get(s, 0) + 1
    return {(short[n] if counts[short[n]] == 1 else _node_label(n)): m for n, m in nodes.items()}


def resolve_build(engine: Any, what: str) -> Build:
    """A build named by an out/ entry (path or name), a target or variant target, or a node id."""
    cache = engine.cache
    ws = engine.ws
    key = None
    cand = [Path(what), ws.out_dir / what.replace("/", "__"), ws.root / what]
    for p in cand:
        try:
            if p.is_symlink() or p.is_dir():
                real = p.resolve()
                for d in (real, *real.parents):
                    if (d / "manifest.json").is_file():
                        key = json.loads((d / "manifest.json").read_text()).get("key")
                        break
        except (OSError, ValueError):
            continue
        if key:
            break
    if key is None and ":" in what:
        from .stage import kinds, parse_node_id

        prefix, name, part = parse_node_id(what)
        k = kinds().get(prefix)
        nid = f"{k.default_stage}:{name}" + (f"/{part}" if part else "") if k and k.default_stage else what
        ref = engine.refs.get(nid)
        if ref:
            key = ref["key"]
    if key is None or not cache.has(key):
        raise GenesisError(f"diff: {what}: no build found (not an out/ entry, and no build of it in this workspace)")
    nodes = walk(cache, key)
    root = cache.manifest(key) or {}
    return Build(what, key, aligned(nodes), root.get("created", 0.0))


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


HEADLINE = ("pretrain.final_loss", "pretrain.final_val_loss", "pretrain.tokens_per_s")


def metrics(engine: Any, build: Build) -> dict[str, float]:
    """Numbers of a build: every numeric stat of every node (``pretrain.final_loss``), and every
    eval metric from the eval nodes' results.json (``eval/base.truthfulqa_mc1.acc``)."""
    out: dict[str, float] = {}
    for label, m in sorted(build.nodes.items()):
        stage = label
        for k, v in (m.get("stats") or {}).items():
            if _numeric(v) and "/" not in k:
                out[f"{stage}.{k}"] = v
        if m.get("stage") == "eval":
            res = engine.cache.data_dir(m["key"]) / "results.json"
            try:
                results = json.loads(res.read_text()).get("results", {})
            except (OSError, ValueError):
                results = {}
            for task, vals in results.items():
                if isinstance(vals, dict):
                    for metric, v in vals.items():
                        if _numeric(v):
                            out[f"{stage}.{task}.{metric}"] = v
    return out


def headline(all_metrics: dict[str, float]) -> dict[str, float]:
    """The few numbers ``exp`` shows by default: losses, throughput, eval headline metrics."""
    from_evals = [k for k in all_metrics if k.startswith("eval/") and any(
        k.endswith(s) for s in (".truthfulqa_mc1.acc", ".truthfulqa_mc2.acc", ".harmbench.asr", ".xstest_safe.refusal_rate"))]
    picked = [k for k in HEADLINE if k in all_metrics] + sorted(from_evals)
    if not picked:  # stages we do not know: their first numbers
        picked = sorted(all_metrics)[:6]
    return {k: all_metrics[k] for k in picked}


def spec_changes(a: Build, b: Build) -> list[tuple[str, Any, Any]]:
    """Spec values (as keyed) and file inputs (by content digest) that differ, one row each."""
    from .graph import flatten

    va: dict[str, Any] = {}
    vb: dict[str, Any] = {}
    for src, dst in ((a, va), (b, vb)):
        for m in src.nodes.values():
            for k, v in flatten(m.get("spec") or {}).items():
                dst.setdefault(k, v)
            for path, digest in (m.get("files") or {}).items():  # file inputs are keyed by content
                dst.setdefault(f"file {path}", str(digest)[:12])
    rows = []
    for k in sorted(va.keys() | vb.keys()):
        if va.get(k, "∅") != vb.get(k, "∅"):
            rows.append((k, va.get(k, "—"), vb.get(k, "—")))
    return rows


def diff_data(engine: Any, a: Build, b: Build) -> dict[str, Any]:
    """Everything ``diff`` prints, as JSON-compatible data."""
    ma, mb = metrics(engine, a), metrics(engine, b)
    rows = []
    for k in sorted(ma.keys() | mb.keys(), key=lambda k: (k not in HEADLINE, k)):
        x, y = ma.get(k), mb.get(k)
        if k.endswith(("_s", "wall_time_s")) and k != "pretrain.tokens_per_s" and x == y:
            continue
        rows.append({"metric": k, "a": x, "b": y, "delta": (y - x) if x is not None and y is not None else None})
    labels = sorted(a.nodes.keys() | b.nodes.keys())
    differ = [n for n in labels if (a.nodes.get(n) or {}).get("key") != (b.nodes.get(n) or {}).get("key")]
    return {
        "a": {"label": a.label, "key": a.key, "created": a.created},
        "b": {"label": b.label, "key": b.key, "created": b.created},
        "spec": [{"field": f, "a": x, "b": y} for f, x, y in spec_changes(a, b)],
        "nodes_differ": differ, "nodes_same": [n for n in labels if n not in differ],
        "metrics": rows,
    }


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _delta(v: Any) -> str:
    if v is None:
        return ""
    if v == 0:
        return "0"
    return f"{v:+.4g}" if isinstance(v, float) else f"{v:+d}"


def render_diff(data: dict[str, Any], fmt: str, console: Any) -> None:
    """Print a diff as text (rich tables), markdown or json."""
    if fmt == "json":
        print(json.dumps(data, indent=1, default=str))
        return
    a, b = data["a"]["label"], data["b"]["label"]
    spec_rows = [(r["field"], _short(r["a"]), _short(r["b"]), "") for r in data["spec"]]
    # headline numbers and those that moved; identical ones are counted (json lists every one)
    shown = [r for r in data["metrics"] if r["metric"] in HEADLINE or r["a"] != r["b"]]
    same = len(data["metrics"]) - len(shown)
    metric_rows = [(r["metric"], _num(r["a"]), _num(r["b"]), _delta(r["delta"])) for r in shown]
    same_line = f"{same} other metrics identical (--format json lists all)" if same else ""
    nodes_line = (f"nodes that differ ({len(data['nodes_differ'])} of "
                  f"{len(data['nodes_differ']) + len(data['nodes_same'])}): {', '.join(data['nodes_differ']) or 'none'}")
    if fmt == "markdown":
        out = [f"### A: {a}", f"### B: {b}", "", "| spec field | A | B |", "|---|---|---|"]
        out += [f"| `{f}` | {x} | {y} |" for f, x, y, _ in spec_rows] or ["| (none) | | |"]
        out += ["", nodes_line, "", "| metric | A | B | Δ |", "|---|---:|---:|---:|"]
        out += [f"| {m} | {x} | {y} | {d} |" for m, x, y, d in metric_rows]
        print("\n".join(out + ([f"\n{same_line}"] if same_line else [])))
        return
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]A[/] {escape(a)} ({data['a']['key'][:12]})\n[bold]B[/] {escape(b)} ({data['b']['key'][:12]})")
    t = Table("spec field", "A", "B", title="spec values that differ", title_justify="left")
    for f, x, y, _ in spec_rows:
        t.add_row(escape(f), escape(x), escape(y))
    console.print(t if spec_rows else "spec values: identical")
    console.print(escape(nodes_line))
    t = Table("metric", "A", "B", "Δ", title="metrics", title_justify="left")
    for m, x, y, d in metric_rows:
        t.add_row(escape(m), x, y, d)
    console.print(t)
    if same_line:
        console.print(same_line)


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "…"


def cmd_diff(args: Any, console: Any, engine: Any) -> int:
    """``genesis-build diff A B``."""
    a = resolve_build(engine, args.a)
    b = resolve_build(engine, args.b)
    render_diff(diff_data(engine, a, b), args.format, console)
    return 0


# --------------------------------------------------------------------------------------------
# exp


def exp_rows(engine: Any, only: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per variant built in this workspace (its latest build), plus each base it came from."""
    latest: dict[str, dict[str, Any]] = {}
    for row in read_log(engine.ws):
        latest[row["variant"]] = row
    rows = []
    bases: dict[str, None] = {}
    for name, row in latest.items():
        if only is not None and name not in only:
            continue
        if not engine.cache.has(row["key"]):
            continue  # gc'd since
        bases[row["base"]] = None
        b = Build(name, row["key"], aligned(walk(engine.cache, row["key"])), row["time"])
        rows.append({"variant": name, "base": row["base"], "overrides": row["overrides"], "built": row["time"],
                     "key": row["key"], "metrics": metrics(engine, b)})
    for base in bases:
        try:
            b = resolve_build(engine, base)
        except GenesisError:
            continue
        rows.insert(0, {"variant": base, "base": base, "overrides": {}, "built": b.created, "key": b.key,
                        "metrics": metrics(engine, b)})
    return rows


def render_exp(rows: list[dict[str, Any]], sort: str | None, fmt: str, console: Any) -> None:
    """Print ``exp`` rows (sorted by a metric when asked)."""
    if sort:
        known = sorted({k for r in rows for k in r["metrics"]})
        if sort not in known:
            ends = [k for k in known if k.endswith("." + sort) or k == sort]
            if len(ends) != 1:
                hint = did_you_mean(sort, known)
                if not hint:  # match on the last part (``final_los`` → pretrain.final_loss)
                    leaf = {k.rsplit(".", 1)[-1]: k for k in known}
                    close = did_you_mean(sort, leaf)
                    hint = f" (did you mean {leaf[close[15:-2]]}?)" if close else ""
                raise GenesisError(f"--sort {sort}: no such metric{hint}"
                                   + (f" (matches: {', '.join(ends)})" if len(ends) > 1 else ""))
            sort = ends[0]
        rows = sorted(rows, key=lambda r: (r["metrics"].get(sort) is None, r["metrics"].get(sort, 0)))
    cols: list[str] = []
    for r in rows:
        for k in headline(r["metrics"]):
            if k not in cols:
                cols.append(k)
    if sort and sort not in cols:
        cols.insert(0, sort)
    if fmt == "json":
        print(json.dumps(rows, indent=1, default=str))
        return
    when = [time.strftime("%Y-%m-%d %H:%M", time.localtime(r["built"])) if r["built"] else "" for r in rows]
    over = [", ".join(f"{k}" for k in r["overrides"]) or "(base)" for r in rows]
    if fmt == "markdown":
        out = ["| variant | overrides | built | " + " | ".join(cols) + " |", "|---|---|---|" + "---:|" * len(cols)]
        for r, w, o in zip(rows, when, over):
            out.append(f"| {r['variant']} | {o} | {w} | " + " | ".join(_num(r["metrics"].get(c)) for c in cols) + " |")
        print("\n".join(out))
        return
    from rich.markup import escape
    from rich.table import Table

    # compact text: the base target, the variant's own labels minus those every variant shares
    labels = [r["variant"].split("@", 1)[1].split(",") if "@" in r["variant"] else [] for r in rows]
    varied = [lab for lab in labels if lab]
    common = set.intersection(*map(set, varied)) if len(varied) > 1 else set()
    leaves = [c.rsplit(".", 1)[-1] for c in cols]
    heads = [leaf if leaves.count(leaf) == 1 else c for c, leaf in zip(cols, leaves)]
    t = Table(title=None)
    for c in ("target", "overrides", "built", *heads):
        t.add_column(c, overflow="fold", no_wrap=c not in heads, justify="right" if c in heads else "left")
    for r, lab, w in zip(rows, labels, when):
        own = "\n".join(x for x in lab if x not in common) or ("(base)" if not lab else "(common only)")
        t.add_row(escape(r["variant"].split("@", 1)[0]), escape(own), w[5:], *[_num(r["metrics"].get(c)) for c in cols])
    if common:
        console.print(f"every variant also sets: {escape(', '.join(sorted(common)))}")
    console.print(t if rows else "no variants built in this workspace yet (build one with --set or --sweep)")


def cmd_exp(args: Any, console: Any, engine: Any) -> int:
    """``genesis-build exp``."""
    render_exp(exp_rows(engine), args.sort, args.format, console)
    return 0
