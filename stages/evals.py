"""Evals: the ``evals`` spec kind (``specs/evals/<name>.toml``); its two stages are in ``eval_data.py``
and ``eval.py``.

``eval-data:<evals>/<suite>`` loads one suite's items (model-independent, shared by every model
evaluated with that suite); ``eval:<model>/<variant>`` runs every suite on the base, instruct or
aligned export. Their docstrings say what each reads and writes::

    genesis-build eval:tiny                 # base, instruct and aligned
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
