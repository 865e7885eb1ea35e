"""Fixtures for the CAI tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cai_testlib import make_tiny_lm

# The test machine's cores are shared: one intra-op thread per process is ~10-50x faster for these
# tiny models than threads spinning against each other (subprocesses inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny real HF model dir (random init, trained BPE tokenizer, chat template)."""
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))
