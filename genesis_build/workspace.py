"""Workspace discovery and settings (``genesis.toml`` + environment overrides)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GenesisError, SpecError

WORKSPACE_FILE = "genesis.toml"
KNOWN = {"workspace": {"default", "cache", "plugins", "allow_paths"}, "remote": {"url", "push", "pull", "options"}}

STATE_DIR = ".genesis"  # per-workspace private state under the root


@dataclass
class Workspace:
    """A workspace: its root, default target, cache dir, stage plugins and remote cache."""

    root: Path
    default: str | None
    cache_dir: Path
    plugins: list[str]
    remote_url: str | None = None
    remote_push: bool = True
    remote_pull: bool = True
    remote_options: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    allow_paths: list[Path] = field(default_factory=list)  # roots outside the workspace specs may read

    @property
    def state_dir(self) -> Path:
        """Per-workspace private state (digest memo, refs)."""
        return self.root / STATE_DIR

    @property
    def out_dir(self) -> Path:
        """Symlinks to the latest result of each target."""
        return self.root / "out"


def find_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding ``genesis.toml``."""
    cur = start.resolve()
    for d in (cur, *cur.parents):
        if (d / WORKSPACE_FILE).is_file():
            return d
    raise GenesisError(f"no {WORKSPACE_FILE} found in {start} or its parents (run `genesis-build init`)")


def load(start: Path | None = None, cache_override: str | None = None) -> Workspace:
    """Load the workspace; cache dir precedence: ``--cache`` > ``GENESIS_CACHE`` > genesis.toml > ``cache/``."""
    root = find_root(start or Path.cwd())
    path = root / WORKSPACE_FILE
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{WORKSPACE_FILE}: invalid TOML: {e}") from None
    settings = validate(text, data)
    ws = settings["workspace"]
    cache = cache_override or os.environ.get("GENESIS_CACHE") or ws["cache"] or "cache"
    cache_dir = Path(os.path.expanduser(cache))
    if not cache_dir.is_absolute():
        cache_dir = root / cache_dir
    remote = settings["remote"]
    return Workspace(
        root=root,
        default=ws["default"],
        cache_dir=cache_dir,
        plugins=list(ws["plugins"]),
        remote_url=os.environ.get("GENESIS_REMOTE", remote["url"]),
        remote_push=remote["push"],
        remote_pull=remote["pull"],
        remote_options=dict(remote["options"]),
        settings=data,
        allow_paths=[(root / os.path.expanduser(p)) for p in ws["allow_paths"]],
    )


def _models() -> tuple[type, type, type]:
    """The pydantic models of ``genesis.toml`` (built on first use: pydantic is imported lazily)."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class WorkspaceSection(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        default: str | None = None
        cache: str | None = Field(None, min_length=1)
        plugins: list[str] = ["stages"]
        allow_paths: list[str] = []

        @field_validator("plugins")
        @classmethod
        def _modules(cls, v: list[str]) -> list[str]:
            for name in v:
                if not all(part.isidentifier() for part in name.split(".")):
                    raise ValueError(f"{name!r} is not a Python module name (like \"stages\" or \"my_pkg.stages\")")
            return v

    class RemoteSection(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        url: str | None = Field(None, min_length=1)
        push: bool = True
        pull: bool = True
        options: dict[str, Any] = {}

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        workspace: WorkspaceSection = WorkspaceSection()
        remote: RemoteSection = RemoteSection()

    return Settings, WorkspaceSection, RemoteSection


def validate(text: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate parsed ``genesis.toml``; a wrong field is one ``genesis.toml:LINE: field: problem`` line."""
    from pydantic import ValidationError

    from .specs import did_you_mean, locate

    settings_cls, *_ = _models()
    try:
        return settings_cls.model_validate(data).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        line = locate(text, loc) or 1
        if err["type"] == "extra_forbidden":
            if len(loc) == 1:
                return _raise(f"{WORKSPACE_FILE}:{line}: unknown section [{loc[0]}]{did_you_mean(str(loc[0]), KNOWN)}")
            known = KNOWN.get(str(loc[0]), set())
            return _raise(f"{WORKSPACE_FILE}:{line}: {_dotted(loc)}: unknown field{did_you_mean(str(loc[-1]), known)}")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("value_error",) and "input" in err:
            shown = repr(err["input"])
            msg += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        return _raise(f"{WORKSPACE_FILE}:{line}: {_dotted(loc)}: {msg}")


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _raise(message: str) -> dict[str, Any]:
    raise SpecError(message)
