"""Fixtures for the instruct / chat-data tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinylm import make_tiny_lm

# shared cores: one intra-op thread per process (subprocesses inherit it), as in the CAI tests
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny real HF model dir (random init, trained BPE tokenizer, chat template)."""
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def other_lm(tmp_path_factory) -> Path:
    """A second tiny model with other weights (another judge / critic)."""
    return make_tiny_lm(tmp_path_factory.mktemp("other-lm"), seed=1)
