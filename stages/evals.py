"""Evals: the ``evals`` spec kind and two stages.

``eval-data:<evals>/<suite>`` (kind ``evals``, one node per suite in ``specs/evals/<evals>.toml``)
loads and normalises that suite's items — from ``path`` (its content is in the key), a dataset id,
or the built-in set — and writes ``items.jsonl`` + ``suite.json`` (config, runtime, source). It is
model-independent: every model evaluated with the same suite shares it, and a bad file fails here,
before any model is loaded.

``eval:<model>/<variant>`` (kind ``model``; ``base`` = ``export:<model>``, plus ``aligned`` =
``export-aligned:<model>`` when the model has a constitution) runs every suite of the model spec's
``evals`` reference on that model and writes ``results.json`` (lm-eval-like) and
``samples/<suite>.jsonl``. Its key is made of its inputs only: the model's output digest and each
``eval-data`` node's output digest (which carries the suite's config). Each suite's results are
also cached per (model digest, suite data digest) under ``cache/samples/evals/``, so editing one
suite re-runs only that suite::

    genesis-build eval:tiny                 # base and aligned
    genesis-build eval:tiny/base
    genesis-build evals:tiny                # just the data nodes (the kind's default stage)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import Context, ref_name, register_kind, spec_name, stage

from stages.evals_lib.spec import SUITES, EvalsSpec

register_kind("evals", EvalsSpec, default_stage="eval-data")

VARIANTS = {"base": "export", "aligned": "export-aligned"}  # eval part → the stage exporting that model


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    # unset optional fields stay out of the key, so adding one to the model changes no existing key
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------------------------
# eval-data


def _data_parts(spec: EvalsSpec) -> list[str]:
    return spec.suites()


def _data_select(dump: dict[str, Any], part: str | None) -> dict[str, Any]:
    from stages.evals_lib.data import builtin_digest

    assert part is not None
    out = {part: _drop_none(dump[part]), "runtime": dump["runtime"]}
    cfg = dump[part]
    if not cfg.get("path") and not cfg.get("dataset"):
        out[f"{part}.builtin_sha256"] = builtin_digest(part)  # editing the built-in set rebuilds
    return out


def _data_files(spec: EvalsSpec, part: str | None) -> list[str]:
    cfg = spec.suite(part or "")
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


# --------------------------------------------------------------------------------------------
# eval


def _eval_parts(spec: Any) -> list[str]:
    if not getattr(spec, "evals", None):
        return []
    return ["base", "aligned"] if getattr(spec, "constitution", None) else ["base"]


def _eval_inputs(spec: Any, part: str | None) -> dict[str, str]:
    return {"model": f"{VARIANTS[part or 'base']}:{spec_name(spec)}", "data": f"eval-data:{ref_name(spec.evals)}"}


def _eval_check(spec: Any, resolve: Any) -> None:
    if spec.evals:
        try:
            resolve(spec.evals)
        except GenesisError as e:
            raise FieldError("evals", f"{e} (set evals = \"evals:<name>\" to a spec in specs/evals/)") from None


HEADLINE = (("truthfulqa_mc1", "acc"), ("truthfulqa_mc2", "acc"), ("harmbench", "asr"), ("xstest_safe", "refusal_rate"),
            ("xstest_unsafe", "compliance_rate"), ("engagement", "follow_up_question_rate"),
            ("engagement", "specific_refusal_rate"), ("engagement", "generic_disclaimer_rate"))


@stage("eval", version=2, kind="model", parts=_eval_parts, inputs=_eval_inputs, check=_eval_check, heavy=True)
def eval_model(ctx: Context) -> None:
    """Run the evals spec's suites on the base or aligned export; write results.json + samples."""
    from stages.evals_lib.runner import run_all

    model = ctx.inputs["model"]
    data = {ref.node.split("/", 1)[1]: ref for name, ref in ctx.inputs.items() if name == "data" or name.startswith("data/")}
    suites = [s for s in SUITES if s in data]
    prepared = {s: (data[s].path, data[s].manifest["output_digest"]) for s in suites}
    results, reused = run_all(model.path, model.manifest["output_digest"], prepared, ctx.out, ctx.samples_dir("evals"),
                              progress=ctx.progress, log=ctx.log, stage_version=1)
    results["config"].update({"model": model.node, "variant": ctx.part, "evals": ctx.spec.evals})
    (ctx.out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    head = {f"{t}/{m}": results["results"][t][m] for t, m in HEADLINE if t in results["results"]}
    ctx.stats(suites=suites, reused=reused, **head)
