"""Fault-injection points for the reliability tests.

``GENESIS_FAULT="publish.before_rename:kill"`` makes the process SIGKILL itself when it reaches that
point (``:sleep=2`` sleeps instead, so a test can kill it from outside; ``:kill@3`` kills at the third
hit). Unset in normal use: the check is one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

_hits: dict[str, int] = {}


def point(name: str) -> None:
    """A named moment where a test may inject a crash or a delay."""
    spec = os.environ.get("GENESIS_FAULT")
    if not spec:
        return
    for entry in spec.split(","):
        where, _, action = entry.partition(":")
        if where != name:
            continue
        _hits[name] = _hits.get(name, 0) + 1
        action, _, nth = action.partition("@")
        if nth and _hits[name] != int(nth):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep="):
            time.sleep(float(action.split("=", 1)[1]))
