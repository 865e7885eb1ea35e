"""Fixtures for the eval / serving / report tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
sys.path.insert(0, str(_here))
from evals_testlib import fix_sys_path, make_constant_lm, make_tiny_lm  # noqa: E402

fix_sys_path()


@pytest.fixture(scope="session")
def eval_lm(tmp_path_factory) -> Path:
    """A tiny real HF model dir (random init, trained BPE tokenizer with chat template)."""
    return make_tiny_lm(tmp_path_factory.mktemp("eval-lm"))


@pytest.fixture(scope="session")
def yes_lm(tmp_path_factory) -> Path:
    """A real model that always answers "yes"."""
    return make_constant_lm(tmp_path_factory.mktemp("yes-lm"), "yes")


@pytest.fixture(scope="session")
def no_lm(tmp_path_factory) -> Path:
    """A real model that always answers "no"."""
    return make_constant_lm(tmp_path_factory.mktemp("no-lm"), "no")
