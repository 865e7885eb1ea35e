"""Aggregation and the results layout (stdlib only).

Standard errors are lm-evaluation-harness's ``mean_stderr``: the sample standard deviation
(``n - 1`` in the denominator) over ``sqrt(n)``; for a 0/1 metric that is
``sqrt(p (1 - p) / (n - 1))``. With fewer than two samples the stderr is ``None``.

Results layout (one JSON per evaluated model, lm-eval-like)::

    {"results":   {task: {metric: value, metric + "_stderr": value, ...}},
     "n-samples": {task: {"original": rows in the source, "effective": items scored}},
     "higher_is_better": {task: {metric: true|false}},
     "config":    {"model": ..., "suites": {suite: {config, source}}, ...}}
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean (None for no values)."""
    return sum(values) / len(values) if values else None


def mean_stderr(values: Sequence[float]) -> float | None:
    """lm-eval's ``mean_stderr``: sample std (ddof=1) / sqrt(n)."""
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def metric(values: Sequence[float], name: str, out: dict[str, Any]) -> None:
    """Write ``name`` and ``name_stderr`` of ``values`` into ``out``."""
    out[name] = mean(values)
    out[f"{name}_stderr"] = mean_stderr(values)


def words(text: str) -> list[str]:
    """Lower-cased whitespace tokens (the unit of distinct-n and length)."""
    return text.lower().split()


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Corpus-level distinct-n (Li et al., 2016): unique n-grams / all n-grams over all texts,
    n-grams taken within each text over :func:`words`. None when there is no n-gram at all."""
    total, seen = 0, set()
    for t in texts:
        w = words(t)
        grams = [tuple(w[i: i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


class Results:
    """Accumulates tasks into the lm-eval-like layout."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.n_samples: dict[str, dict[str, int]] = {}
        self.higher_is_better: dict[str, dict[str, bool]] = {}

    def add(self, task: str, metrics: dict[str, Any], original: int, effective: int,
            higher_is_better: dict[str, bool] | None = None) -> None:
        """Record one task's metrics (with ``*_stderr`` entries) and sample counts."""
        self.results[task] = {"alias": task, **metrics}
        self.n_samples[task] = {"original": original, "effective": effective}
        if higher_is_better:
            self.higher_is_better[task] = dict(higher_is_better)

    def merge(self, other: dict[str, Any]) -> None:
        """Merge another results dict (e.g. one suite's cached results)."""
        self.results.update(other.get("results", {}))
        self.n_samples.update(other.get("n-samples", {}))
        self.higher_is_better.update(other.get("higher_is_better", {}))

    def to_dict(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON-ready layout."""
        return {"results": self.results, "n-samples": self.n_samples, "higher_is_better": self.higher_is_better,
                "config": config or {}}
