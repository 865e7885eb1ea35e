"""Workspace discovery and settings (``genesis.toml`` + environment overrides)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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
    from .errors import did_you_mean
    from .specs import locate

    for section, values in data.items():
        if section not in KNOWN:
            raise SpecError(f"{WORKSPACE_FILE}:{locate(text, (section,)) or 1}: unknown section [{section}]{did_you_mean(section, KNOWN)}")
        for k in values:
            if k not in KNOWN[section]:
                line = locate(text, (section, k)) or 1
                raise SpecError(f"{WORKSPACE_FILE}:{line}: {section}.{k}: unknown field{did_you_mean(k, KNOWN[section])}")
    ws = data.get("workspace", {})
    cache = cache_override or os.environ.get("GENESIS_CACHE") or ws.get("cache") or "cache"
    cache_dir = Path(os.path.expanduser(cache))
    if not cache_dir.is_absolute():
        cache_dir = root / cache_dir
    remote = data.get("remote", {})
    plugins = ws.get("plugins", ["stages"])
    return Workspace(
        root=root,
        default=ws.get("default"),
        cache_dir=cache_dir,
        plugins=list(plugins),
        remote_url=os.environ.get("GENESIS_REMOTE", remote.get("url")),
        remote_push=bool(remote.get("push", True)),
        remote_pull=bool(remote.get("pull", True)),
        remote_options=dict(remote.get("options", {})),
        settings=data,
        allow_paths=[(root / os.path.expanduser(p)) for p in ws.get("allow_paths", [])],
    )
