"""Fixtures for the release tests (model card, GGUF, checksums, push)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
ROOT = _here.parents[2]
# the repo root must precede tests/ (else ``stages`` is the tests/stages namespace); the eval tests'
# helpers build the tiny HF models used here
for p in (str(_here.parent / "evals"), str(_here), str(ROOT)):
    if p in sys.path:
        sys.path.remove(p)
    sys.path.insert(0, p)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # shared cores: one intra-op thread is faster for tiny models

from evals_testlib import make_tiny_lm  # noqa: E402


@pytest.fixture(scope="session")
def odd_lm(tmp_path_factory) -> Path:
    """A tiny random Llama whose hidden size (48) is not a multiple of Q8_0's 32-value blocks."""
    return make_tiny_lm(tmp_path_factory.mktemp("odd-lm"), hidden=48)
