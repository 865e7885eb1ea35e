"""Shared fixtures: temporary workspaces driven through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

# tests/ is on sys.path because pytest imports this conftest in its default "prepend" mode, so the
# shared helpers (genesis_testlib, tinylm) import by name from every test folder
from genesis_testlib import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh workspace with the `text:demo` spec and two data files."""
    return Workspace(tmp_path / "ws")
