"""The release's model card: YAML front matter (license, language, tags, datasets, ``model-index``)
and a Markdown body rendered from a Jinja template (``card.md.j2`` or the spec's ``[release] template``).

Every number in ``model-index`` is copied from the eval nodes' ``results.json`` — never computed,
rounded or invented: a suite the evals spec lacks (or whose run failed to produce a value) is written
as "not evaluated" in the body and left out of ``model-index``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUITES = ("truthfulqa", "harmbench", "xstest", "engagement")  # = stages.evals_lib.spec.SUITES (no pydantic import here)
TASK_TYPE = {"truthfulqa": "multiple-choice", "harmbench": "text-generation", "xstest": "text-generation",
             "engagement": "text-generation"}
BENCHMARK = {"truthfulqa": ("truthfulqa/truthful_qa", "TruthfulQA"), "harmbench": ("walledai/HarmBench", "HarmBench"),
             "xstest": ("walledai/XSTest", "XSTest"), "engagement": ("genesis-build/engagement", "Engagement")}
SMOKE_NOTE = "built-in smoke set (genesis-build's own items, not the benchmark)"
TEMPLATE = Path(__file__).with_name("card.md.j2")


def suite_of(task: str) -> str:
    """``truthfulqa_mc1`` → ``truthfulqa``, ``harmbench/illegal`` → ``harmbench``, ``xstest_safe`` → ``xstest``."""
    for s in SUITES:
        if task == s or task.startswith(s + "_") or task.startswith(s + "/"):
            return s
    return task.split("/")[0].split("_")[0]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def judge_of(suite: str, cfg: dict[str, Any]) -> str:
    """Who scored a suite: log-likelihood, the refusal detector, or an endpoint (+ model)."""
    if suite == "truthfulqa":
        return "log-likelihood of the choices (no judge)"
    j = cfg.get("rubric_judge") if suite == "engagement" else cfg.get("judge")
    if suite == "engagement":
        base = "heuristics (follow-up, disclaimer, refusal detectors)"
        return base + (f" + rubric judge {j}" + (f" ({cfg.get('rubric_model')})" if cfg.get("rubric_model") else "") if j else "")
    if j in (None, "refusal"):
        return "refusal detector (genesis-build, string rules)"
    return f"{j}" + (f" ({cfg['judge_model']})" if cfg.get("judge_model") else "")


def suite_sets(evals: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per suite: what data it ran on (smoke or benchmark, items, rows) and its judge, from the results' config."""
    out: dict[str, dict[str, Any]] = {}
    for res in evals.values():
        for suite, info in ((res.get("config") or {}).get("suites") or {}).items():
            src, cfg = info.get("source") or {}, info.get("config") or {}
            smoke = src.get("kind") == "builtin"
            if src.get("kind") == "dataset":
                where = f"dataset {src.get('dataset')}" + (f" ({src.get('config')})" if src.get("config") else "")
            elif src.get("kind") == "path":
                where = f"file {Path(str(src.get('path'))).name} (sha256 {str(src.get('sha256'))[:12]}…)"
            else:
                where = f"{SMOKE_NOTE}, {src.get('file')}"
            items, rows = src.get("items"), src.get("rows")
            subset = f"{items} of {rows} items" if rows and items is not None and items < rows else f"{items} items"
            out[suite] = {"smoke": smoke, "set": "smoke" if smoke else "benchmark", "source": where, "items": items,
                          "rows": rows, "subset": subset, "judge": judge_of(suite, cfg), "kind": src.get("kind")}
    return out


def eval_rows(evals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every numeric metric of every variant: {variant, task, suite, metric, value, stderr} in file order."""
    rows = []
    for variant, res in evals.items():
        for task, metrics in (res.get("results") or {}).items():
            for metric, value in metrics.items():
                if metric == "alias" or metric.endswith("_stderr") or not _number(value):
                    continue
                stderr = metrics.get(f"{metric}_stderr")
                rows.append({"variant": variant, "task": task, "suite": suite_of(task), "metric": metric, "value": value,
                             "stderr": stderr if _number(stderr) else None})
    return rows


def model_index(name: str, evals: dict[str, dict[str, Any]]) -> list[Any]:
    """``huggingface_hub.EvalResult`` for every metric; the model variant is in the metric's name and config."""
    from huggingface_hub import EvalResult

    sets = suite_sets(evals)
    out = []
    for r in eval_rows(evals):
        s = sets.get(r["suite"], {})
        smoke = s.get("smoke", True)
        ds_type, ds_name = BENCHMARK.get(r["suite"], (r["suite"], r["suite"]))
        if smoke:
            ds_type, ds_name = f"genesis-build/builtin-{r['suite']}", f"{ds_name} ({SMOKE_NOTE})"
        args = {"variant": r["variant"], "set": s.get("set", "unknown"), "source": s.get("source"), "judge": s.get("judge"),
                "items": s.get("items")}
        if r["stderr"] is not None:
            args["stderr"] = r["stderr"]
        out.append(EvalResult(task_type=TASK_TYPE.get(r["suite"], "text-generation"), task_name=r["task"],
                              dataset_type=ds_type, dataset_name=ds_name, dataset_config=r["task"],  # one model-index entry per task
                              dataset_split="test", metric_type=r["metric"], metric_value=r["value"],
                              metric_name=f"{r['metric']} ({r['variant']})", metric_config=r["variant"],
                              metric_args=args))
    return out


def fmt(v: Any) -> str:
    """A number as the card's tables print it (the exact value is in model-index / evals/*.json)."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def eval_table(evals: dict[str, dict[str, Any]], expected_variants: list[str]) -> str:
    """Markdown: one row per (task, metric), one column per variant; missing suites say "not evaluated"."""
    variants = list(dict.fromkeys([*expected_variants, *evals]))
    rows = eval_rows(evals)
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        cells.setdefault((r["task"], r["metric"]), {})[r["variant"]] = r
    sets = suite_sets(evals)
    lines = ["| suite | task | metric | " + " | ".join(variants) + " | set |",
             "|---|---|---|" + "---|" * len(variants) + "---|"]
    for suite in SUITES:
        keys = [k for k in cells if suite_of(k[0]) == suite]
        if not keys:
            lines.append(f"| {suite} | — | — | " + " | ".join("not evaluated" for _ in variants) + " | — |")
            continue
        for task, metric in keys:
            vals = []
            for v in variants:
                c = cells[(task, metric)].get(v)
                if c is None:
                    vals.append("not evaluated")
                else:
                    vals.append(fmt(c["value"]) + (f" ± {fmt(c['stderr'])}" if c["stderr"] is not None else ""))
            lines.append(f"| {suite} | {task} | {metric} | " + " | ".join(vals) + f" | {sets.get(suite, {}).get('set', '—')} |")
    return "\n".join(lines)


def loss_curve(metrics: list[tuple[str, Path]], out: Path) -> bool:
    """Plot train (and validation) loss of each training stage's metrics.jsonl into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for label, path in metrics:
        if not path.is_file():
            continue
        train, val = [], []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("kind") == "train" and _number(row.get("loss")):
                train.append((row["step"], row["loss"]))
            if _number(row.get("val_loss")):
                val.append((row["step"], row["val_loss"]))
        if train:
            series.append((label, train, val))
    if not series:
        return False
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.2), squeeze=False)
    for ax, (label, train, val) in zip(axes[0], series):
        ax.plot(*zip(*train), label="train loss", lw=1.2)
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss", ms=3)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata={"Software": None})  # no version string: same curve, same bytes
    plt.close(fig)
    return True


def front_matter(release: Any, name: str, evals: dict[str, dict[str, Any]], constitution: bool, base_model: str | None) -> Any:
    """``huggingface_hub.ModelCardData`` of the card."""
    from huggingface_hub import ModelCardData

    tags = list(dict.fromkeys(["genesis-build", "llama", "gguf", *(["constitutional-ai"] if constitution else []),
                               *release.tags]))
    results = model_index(name, evals) if evals else None
    return ModelCardData(license=release.license, language=list(release.language), tags=tags,
                         datasets=list(release.datasets) or None, library_name="transformers",
                         pipeline_tag="text-generation", model_name=name, eval_results=results or None,
                         base_model=base_model)


def render(template_text: str, data: Any, context: dict[str, Any]) -> str:
    """Front matter, the title, the smoke-set notice as the first paragraph (whatever the template
    says: a custom template cannot drop it), then the template's rendered body."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["fmt"] = fmt
    body = env.from_string(template_text).render(**context).lstrip("\n")
    notice = f"{context['notice']}\n\n" if context.get("notice") else ""
    return f"---\n{data.to_yaml()}\n---\n\n# {context['name']}\n\n{notice}{body}"
