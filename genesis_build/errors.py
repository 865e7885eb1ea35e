"""Errors the CLI turns into one clear line and exit code 2 (no traceback)."""

from __future__ import annotations


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


class BuildError(GenesisError):
    """A stage failed while running (its log holds the details)."""

    exit_code = 1
