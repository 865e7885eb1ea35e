"""Fixtures for the release tests (model card, GGUF, checksums, push)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinylm import make_tiny_lm

os.environ.setdefault("OMP_NUM_THREADS", "1")  # shared cores: one intra-op thread is faster for tiny models


@pytest.fixture(scope="session")
def odd_lm(tmp_path_factory) -> Path:
    """A tiny random Llama whose hidden size (48) is not a multiple of Q8_0's 32-value blocks."""
    return make_tiny_lm(tmp_path_factory.mktemp("odd-lm"), hidden=48)
