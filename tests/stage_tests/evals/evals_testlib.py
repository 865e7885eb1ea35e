"""Helpers for the eval / serving / report tests: the tiny real HF models (built by the shared
``tests/tinylm.py``), the shared benchmark files, and our OpenAI-compatible server on a free port."""

from __future__ import annotations

import threading
from pathlib import Path

from genesis_testlib import free_port  # noqa: F401 — re-exported for the tests
from tinylm import ROOT, SHARED, make_constant_lm, make_tiny_lm  # noqa: F401 — re-exported for the tests

SHARED_EVALS = SHARED / "data" / "evals"
# the eval tests' tiny LM: wider than the default, a long context, peaky scores between choices
EVAL_LM = {"hidden": 64, "vocab": 512, "context": 1024, "init_std": 0.2, "tie": False, "sources": ("evals", "seed")}


def make_eval_lm(out: Path, **overrides) -> Path:
    """The eval tests' tiny LM (``EVAL_LM`` with ``overrides``)."""
    return make_tiny_lm(out, **{**EVAL_LM, **overrides})



def start_server(model_dir: Path, name: str | None = None):
    """Our OpenAI-compatible server on a free port in a daemon thread; returns (httpd, base_url)."""
    from stages.serving.openai_server import make_server

    httpd = make_server(model_dir, "127.0.0.1", 0, model_name=name, device="cpu")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    host, port = httpd.server_address[:2]
    return httpd, f"http://{host}:{port}"
