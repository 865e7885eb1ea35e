"""Path placeholders of corpus sources (stdlib only: the ``corpus`` stage imports it at module level
and ``ingest`` imports it at run time, so neither imports the other)."""

from __future__ import annotations

import os
import sysconfig

STDLIB = "{stdlib}"


def resolve_path(path: str) -> str:
    """Expand the ``{stdlib}`` placeholder and ``~``; relative paths stay workspace-relative."""
    if STDLIB in path:
        path = path.replace(STDLIB, sysconfig.get_paths()["stdlib"])
    return os.path.expanduser(path)
