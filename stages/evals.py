"""Evals: the ``evals`` spec kind (``specs/evals/<name>.toml``); its two stages are in ``eval_data.py``
and ``eval.py``.

``eval-data:<evals>/<suite>`` (kind ``evals``, one node per suite in ``specs/evals/<evals>.toml``)
loads and normalises that suite's items — from ``path`` (its content is in the key), a dataset id,
or the built-in set — and writes ``items.jsonl`` + ``suite.json`` (config, runtime, source). It is
model-independent: every model evaluated with the same suite shares it, and a bad file fails here,
before any model is loaded.

``eval:<model>/<variant>`` (kind ``model``; ``base`` = ``export:<model>``, ``instruct`` =
``export-instruct:<model>`` with an ``[instruct]`` section, ``aligned`` = ``export-aligned:<model>``
when the model has a constitution) runs every suite of the model spec's
``evals`` reference on that model and writes ``results.json`` (lm-eval-like) and
``samples/<suite>.jsonl``. Its key is made of its inputs only: the model's output digest and each
``eval-data`` node's output digest (which carries the suite's config). Each suite's results are
also cached per (model digest, suite data digest) under ``cache/samples/evals/``, so editing one
suite re-runs only that suite::

    genesis-build eval:tiny                 # base, instruct and aligned
    genesis-build eval:tiny/base
    genesis-build evals:tiny                # just the data nodes (the kind's default stage)
"""

from __future__ import annotations

from typing import Any

from genesis_build.stage import register_kind

from stages.evals_lib.spec import EvalsSpec

register_kind("evals", EvalsSpec, default_stage="eval-data")


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without None values, recursively: unset optional fields stay out of a key, so adding one
    to the model changes no existing key."""
    return {k: (drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}
