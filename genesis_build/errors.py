"""Errors the CLI turns into one clear line and exit code 2 (no traceback)."""

from __future__ import annotations

import errno
from typing import Iterable

# OSError numbers that mean "out of space": the worker and the engine both report them as disk full
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DISK_FULL_EXIT = 28  # the worker's exit code when error.json could not be written either (disk full)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class GenesisError(Exception):
    """A user-facing error: printed as one line, exit code 2."""

    exit_code = 2


class SpecError(GenesisError):
    """A spec file is invalid; the message names file, line and field."""


class TargetError(GenesisError):
    """A target or node id does not resolve."""


class FieldError(GenesisError):
    """Raised by a stage's ``check`` hook: a spec field (dotted path) is wrong.

    The engine turns it into a SpecError naming the spec file and line of ``field``.
    """

    def __init__(self, field: str, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.address = address


class Unresolved(GenesisError):
    """Raised by a stage's ``pin`` hook: key material outside the workspace cannot be resolved now
    (a hub branch name while offline, a gated dataset without a token).

    ``--dry-run`` shows the node as ``unresolved`` with this message; a build refuses before running
    anything (exit 2). The message says how to fix it (e.g. pin ``revision = "<sha>"``).
    """


class BuildError(GenesisError):
    """A stage failed while running (its log holds the details)."""

    exit_code = 1


class StageDefinitionError(GenesisError):
    """A plugin registered a stage wrongly (e.g. a declared ``fields`` path its kind does not have)."""
