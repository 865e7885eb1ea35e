"""Fixtures for the eval / serving / report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals_testlib import make_constant_lm, make_eval_lm


@pytest.fixture(scope="session")
def eval_lm(tmp_path_factory) -> Path:
    """A tiny real HF model dir (random init, trained BPE tokenizer with chat template)."""
    return make_eval_lm(tmp_path_factory.mktemp("eval-lm"))


@pytest.fixture(scope="session")
def yes_lm(tmp_path_factory) -> Path:
    """A real model that always answers "yes"."""
    return make_constant_lm(tmp_path_factory.mktemp("yes-lm"), "yes")


@pytest.fixture(scope="session")
def no_lm(tmp_path_factory) -> Path:
    """A real model that always answers "no"."""
    return make_constant_lm(tmp_path_factory.mktemp("no-lm"), "no")
