"""Shared fixtures: temporary workspaces driven through the real CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from genesis_testlib import Workspace  # noqa: E402


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh workspace with the `text:demo` spec and two data files."""
    return Workspace(tmp_path / "ws")
