"""Stage ``report``: ``report:<model>`` renders the build report of a model — training curves
with resume markers, the eval table base → instruct → aligned, CAI data stats and what changed since the
previous build of the same target — as ``index.html`` + PNGs + ``summary.json``::

    genesis-build report:tiny && xdg-open out/report:tiny/index.html

Inputs: ``pretrain:<model>`` (metrics.jsonl), ``instruct:<model>`` (its metrics.jsonl, with an
``[instruct]`` section), ``eval:<model>`` (every variant), and with a
constitution ``cai-generate:<model>`` / ``cai-preferences:<model>`` (their manifest stats). The
spec values shown in the diff are the key values recorded in the manifests of every upstream
node. The previous build's summary is kept in ``cache/samples/report/<target>/previous.json``
(per workspace): a history of recent builds, the newest with another key is the one compared.
Rendering is :func:`stages.evals_lib.report_render.render_report` (pure, tested on its own).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from genesis_build.stage import Context, SpecView, stage

HISTORY = 20  # builds kept in previous.json


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    spec, name = view.spec, view.name
    ins = {"pretrain": f"pretrain:{name}"}
    if getattr(spec, "instruct", None) is not None:
        ins["instruct"] = f"instruct:{name}"
    if getattr(spec, "evals", None):
        ins["eval"] = f"eval:{name}"
    if getattr(spec, "constitution", None):
        ins["cai"] = f"cai-generate:{name}"
        ins["preferences"] = f"cai-preferences:{name}"
    return ins


def render_report(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`stages.evals_lib.report_render.render_report` (imported lazily: matplotlib)."""
    from stages.evals_lib.report_render import render_report as impl

    return impl(*args, **kwargs)


def _history_file(ctx: Context) -> Path:
    import hashlib

    ws = hashlib.sha256(str(ctx.workspace.resolve()).encode()).hexdigest()[:12]
    return ctx.samples_dir("report") / f"{ctx.spec_name}-{ws}" / "previous.json"


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, default=str)
    os.replace(tmp, path)


def sibling_variants(ctx: Context, history_root: Path, ws: str) -> dict[str, dict[str, Any]]:
    """The other variants of this model built in this workspace (``tiny``, ``tiny@training.lr=0.001`` …,
    found by their report histories), each as ``{"metrics": its pretrain metrics.jsonl, "href": a
    relative link from this report's object to theirs}``; objects gc'd since are left out."""
    base = ctx.spec_name.split("@", 1)[0]
    out: dict[str, dict[str, Any]] = {}
    if not history_root.is_dir():
        return out
    for d in sorted(history_root.iterdir()):
        name, _, wsid = d.name.rpartition("-")
        if wsid != ws or name == ctx.spec_name or name.split("@", 1)[0] != base:
            continue
        try:
            builds = json.loads((d / "previous.json").read_text()).get("builds", [])
        except (OSError, ValueError):
            continue
        key = (builds[-1] if builds else {}).get("key")
        other = ctx.lookup(key=key) if key else None
        pre_key = ((other.manifest if other else {}).get("inputs") or {}).get("pretrain", {}).get("key")
        pre = ctx.lookup(key=pre_key) if pre_key else None
        if other is None or pre is None:
            continue
        out[name] = {"metrics": str(pre.path / "metrics.jsonl"),
                     "href": os.path.relpath(other.path / "index.html", ctx.published_path)}
    return out


@stage("report", version=3, kind="model", inputs=_inputs, heavy=True, entry="index.html")
def report(ctx: Context) -> None:
    """Render the HTML report (curves, evals base → instruct → aligned, CAI stats, diff vs previous build)."""
    evals = {}
    for name, ref in ctx.inputs.items():
        if name == "eval" or name.startswith("eval/"):
            variant = ref.node.split("/", 1)[1] if "/" in ref.node else "base"
            evals[variant] = json.loads((ref.path / "results.json").read_text())
    cai = {ref.node: ref.manifest.get("stats") or {} for name, ref in ctx.inputs.items() if name in ("cai", "preferences")}
    metrics = {"pretrain": ctx.inputs["pretrain"].path / "metrics.jsonl"}
    if "instruct" in ctx.inputs:
        metrics["instruct"] = ctx.inputs["instruct"].path / "metrics.jsonl"
    hist_path = _history_file(ctx)
    history = []
    if hist_path.is_file():
        try:
            history = json.loads(hist_path.read_text()).get("builds", [])
        except ValueError:
            ctx.log(f"warning: {hist_path} is unreadable; comparing with nothing")
    previous = next((b for b in reversed(history) if b.get("key") != ctx.key), None)
    variants = sibling_variants(ctx, hist_path.parent.parent, hist_path.parent.name.rpartition("-")[2])
    summary = render_report(ctx.out, metrics, evals, cai, previous,
                            specs={m["node"]: m["spec"] for m in ctx.upstream_manifests() if m.get("spec")},
                            title=f"genesis-build report: model:{ctx.spec_name}", key=ctx.key, variants=variants)
    import time

    history = [b for b in history if b.get("key") != ctx.key] + [{**summary, "created": time.time()}]
    _write_json(hist_path, {"builds": history[-HISTORY:]})
    ctx.stats(plots=len(summary["plots"]), eval_metrics=len(summary["metrics"]),
              compared_with=(previous or {}).get("key"))
    ctx.log(f"report: {ctx.out / 'index.html'}")
