"""Run suites on one model: what the ``eval`` stage does, without the engine (tests call it directly).

A prepared suite is what an ``eval-data`` node writes: ``items.jsonl`` and ``suite.json``
(``{"suite", "config", "runtime", "source", "judge_template_text"}``).

:func:`run_all` evaluates a model directory on several prepared suites. Each suite's
``(results, samples)`` is cached in ``cache_dir`` under a digest of (results version, stage version,
model output digest, suite data digest), written with a temp file + ``os.replace``; a cached suite
is reused, not recomputed. It writes ``samples/<suite>.jsonl`` into ``out_dir`` and returns the
merged lm-eval-like results (:mod:`stages.evals_lib.scoring`) and the list of reused suites.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable

from stages.evals_lib.scoring import Results
from stages.evals_lib.spec import SUITES, EvalsSpec

RESULTS_VERSION = 1  # bump when a suite's numbers change for the same model and data


def suite_config(suite: str, config: dict[str, Any]) -> Any:
    """The validated pydantic config of a suite from its JSON dump."""
    return EvalsSpec.model_fields[suite].annotation.__args__[0].model_validate(config)  # type: ignore[union-attr]


def read_prepared(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(suite.json, items) of a prepared suite directory."""
    meta = json.loads((path / "suite.json").read_text())
    items = [json.loads(line) for line in (path / "items.jsonl").read_text().splitlines() if line.strip()]
    return meta, items


def write_prepared(path: Path, suite: str, cfg: Any, items: list[dict[str, Any]], source: dict[str, Any],
                   runtime: dict[str, Any] | None = None, template: str | None = None) -> Path:
    """Write a prepared suite directory (as ``eval-data`` does)."""
    path.mkdir(parents=True, exist_ok=True)
    meta = {"suite": suite, "config": cfg.model_dump(mode="json"), "runtime": runtime or {"device": "auto", "dtype": "auto",
            "batch_size": 8}, "source": source, "judge_template_text": template}
    with open(path / "items.jsonl", "w") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    (path / "suite.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return path


def run_suite(meta: dict[str, Any], items: list[dict[str, Any]], lm: Any,
              progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Evaluate ``lm`` on one prepared suite; returns (results with this suite's config, samples)."""
    suite = meta["suite"]
    cfg = suite_config(suite, meta["config"])
    source = meta.get("source") or {}
    original = int(source.get("rows", len(items)))
    if suite == "truthfulqa":
        from stages.evals_lib import truthfulqa

        results, samples = truthfulqa.evaluate(lm, items, cfg.tasks, cfg.add_bos, original, progress)
    elif suite == "harmbench":
        from stages.evals_lib import harmbench

        results, samples = harmbench.evaluate(lm, items, cfg, original, meta.get("judge_template_text"), progress)
    elif suite == "xstest":
        from stages.evals_lib import xstest

        results, samples = xstest.evaluate(lm, items, cfg, progress)
    elif suite == "engagement":
        from stages.evals_lib import engagement

        results, samples = engagement.evaluate(lm, items, cfg, original, progress)
    else:
        raise ValueError(f"unknown suite {suite!r}")
    results["config"] = {"suite": suite, "config": meta["config"], "source": source}
    return results, samples


def cache_key(model_digest: str, data_digest: str, stage_version: int) -> str:
    """Digest addressing one suite's results for one model."""
    return hashlib.sha256(json.dumps([RESULTS_VERSION, stage_version, model_digest, data_digest]).encode()).hexdigest()


def _atomic_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, ensure_ascii=False)
    os.replace(tmp, path)


def run_all(model_dir: Path, model_digest: str, suites: dict[str, tuple[Path, str]], out_dir: Path, cache_dir: Path | None,
            progress: Callable[..., None] | None = None,
            log: Callable[[str], None] | None = None, stage_version: int = 1) -> tuple[dict[str, Any], list[str]]:
    """Evaluate ``model_dir`` on prepared suites ``{suite: (dir, data digest)}``; see the module doc."""
    log = log or (lambda m: None)
    merged = Results()
    config: dict[str, Any] = {"suites": {}}
    reused: list[str] = []
    lm = None
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    order = [s for s in SUITES if s in suites]
    for n, suite in enumerate(order):
        path, digest = suites[suite]
        meta, items = read_prepared(path)
        entry = cache_dir / (k := cache_key(model_digest, digest, stage_version))[:2] / f"{k}.json" if cache_dir else None
        if entry is not None and entry.is_file():
            cached = json.loads(entry.read_text())
            results, samples = cached["results"], cached["samples"]
            reused.append(suite)
            log(f"{suite}: reused cached results ({entry.name[:12]}…)")
        else:
            if lm is None:
                from stages.evals_lib.lm import LocalLM

                rt = meta.get("runtime") or {}
                lm = LocalLM(model_dir, rt.get("device", "auto"), rt.get("dtype", "auto"), int(rt.get("batch_size", 8)))
                config.update({"device": str(lm.device), "dtype": str(lm.model.dtype).replace("torch.", ""),
                               "runtime": rt, "max_length": lm.max_length})
            cb = (lambda done, total, s=suite, i=n: progress(done, total, desc=f"eval {s} ({i + 1}/{len(order)})")) if progress else None
            log(f"{suite}: {len(items)} items ({meta['source'].get('kind')})")
            results, samples = run_suite(meta, items, lm, cb)
            if entry is not None:
                _atomic_json(entry, {"results": results, "samples": samples})
        merged.merge(results)
        config["suites"][suite] = results.get("config", {})
        with open(out_dir / "samples" / f"{suite}.jsonl", "w") as f:
            for s in samples:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
    # which suites came from the per-suite result cache is history, not a result: it goes to the manifest's
    # stats (the caller's), so two builds of the same inputs write the same results.json
    config["model_digest"] = model_digest
    config["python"] = platform.python_version()
    try:
        import torch
        import transformers

        config["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    except ImportError:  # pragma: no cover - the eval stage always has them
        pass
    if any(s.get("source", {}).get("kind") == "builtin" for s in config["suites"].values()):
        config["note"] = "some suites ran on genesis-build's built-in sets (ours, not the benchmarks): smoke-test numbers"
    return merged.to_dict(config), reused
