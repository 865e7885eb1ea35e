"""Stage ``eval:<model>/<variant>`` (kind ``model``; ``base`` = ``export:<model>``, ``instruct`` =
``export-instruct:<model>`` when the model has an ``[instruct]`` section, ``aligned`` =
``export-aligned:<model>`` when the model has a constitution): run every suite of the model spec's
``evals`` reference on that model and write ``results.json`` (lm-eval-like) and
``samples/<suite>.jsonl``. Its key is made of its inputs only: the model's output digest and each
``eval-data`` node's output digest (which carries the suite's config). Each suite's results are
also cached per (model digest, suite data digest) under ``cache/samples/evals/``, so editing one
suite re-runs only that suite::

    genesis-build eval:tiny                 # base, instruct and aligned
    genesis-build eval:tiny/base
    genesis-build evals:tiny                # just the data nodes (the evals kind's default stage)
"""

from __future__ import annotations

import json

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import Context, SpecView, ref_name, stage

from stages.evals_lib.spec import SUITES

VARIANTS = {"base": "export", "instruct": "export-instruct", "aligned": "export-aligned"}  # eval part → its export


def _eval_parts(view: SpecView) -> list[str]:
    spec = view.spec
    if not getattr(spec, "evals", None):
        return []
    return (["base"] + (["instruct"] if getattr(spec, "instruct", None) is not None else [])
            + (["aligned"] if getattr(spec, "constitution", None) else []))


def _eval_inputs(view: SpecView, part: str | None) -> dict[str, str]:
    return {"model": f"{VARIANTS[part or 'base']}:{view.name}", "data": f"eval-data:{ref_name(view.spec.evals)}"}


def _eval_check(view: SpecView) -> None:
    spec = view.spec
    if spec.evals:
        try:
            view.resolve(spec.evals)
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
