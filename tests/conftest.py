"""Shared fixtures: temporary workspaces driven through the real CLI."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

# tests/ is on sys.path because pytest imports this conftest in its default "prepend" mode, so the
# shared helpers (genesis_testlib, tinylm) import by name from every test folder
from genesis_testlib import Workspace

# A shell without job control starts background commands with SIGINT ignored, and an ignored signal
# stays ignored across exec: every CLI the Ctrl-C tests spawn would then shrug the signal off. A
# handled signal is reset to the default on exec, so the children get Python's KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh workspace with the `text:demo` spec and two data files."""
    return Workspace(tmp_path / "ws")
