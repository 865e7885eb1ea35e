"""Stage ``eval-data:<evals>/<suite>`` (kind ``evals``, one node per suite in ``specs/evals/<evals>.toml``):
load and normalise that suite's items — from ``path`` (its content is in the key), a dataset id, or
the built-in set — and write ``items.jsonl`` + ``suite.json`` (config, runtime, source). It is
model-independent: every model evaluated with the same suite shares it, and a bad file fails here,
before any model is loaded. The kind is in ``stages/evals.py``; the ``eval`` stage in ``stages/eval.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genesis_build.stage import Context, SpecView, stage

from stages.evals import drop_none


def _data_parts(view: SpecView) -> list[str]:
    return view.spec.suites()


def _data_select(dump: dict[str, Any], part: str | None) -> dict[str, Any]:
    from stages.evals_lib.data import builtin_digest

    assert part is not None
    out = {part: drop_none(dump[part]), "runtime": dump["runtime"]}
    cfg = dump[part]
    if not cfg.get("path") and not cfg.get("dataset"):
        out[f"{part}.builtin_sha256"] = builtin_digest(part)  # editing the built-in set rebuilds
    return out


def _data_files(view: SpecView, part: str | None) -> list[str]:
    cfg = view.spec.suite(part or "")
    return [p for p in (cfg.path, getattr(cfg, "judge_template", None)) if p]


def _resolve(ctx: Context, path: str) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else ctx.workspace / p


@stage("eval-data", version=1, kind="evals", parts=_data_parts, select=_data_select, files=_data_files)
def eval_data(ctx: Context) -> None:
    """Load and normalise one eval suite's items (file, dataset id or built-in set)."""
    from stages.evals_lib.data import load_suite

    suite = ctx.part or ""
    cfg = ctx.spec.suite(suite)
    items, source = load_suite(suite, cfg, _resolve(ctx, cfg.path) if cfg.path else None)
    template = getattr(cfg, "judge_template", None)
    meta = {"suite": suite, "config": cfg.model_dump(mode="json"), "runtime": ctx.spec.runtime.model_dump(mode="json"),
            "source": source, "judge_template_text": _resolve(ctx, template).read_text() if template else None}
    with open(ctx.out / "items.jsonl", "w") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    (ctx.out / "suite.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    ctx.stats(items=len(items), source=source["kind"], rows=source.get("rows"))
    note = " — built-in set (ours, not the benchmark)" if source["kind"] == "builtin" else ""
    ctx.log(f"eval-data {suite}: {len(items)} items from {source['kind']}{note}")
