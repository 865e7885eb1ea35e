"""Stage protocol and registry.

A *spec kind* (``corpus``, ``model`` …) is a pydantic model that validates ``specs/<kind>/<name>.toml``.
A *stage* reads one kind: node ``<stage>:<name>[/<part>]`` runs the stage on spec ``<kind>:<name>``.
Its key is built from the values of exactly the spec ``fields`` it declares, its ``version``, the
output digests of its ``inputs`` and the content digests of its ``files``.

Stage modules import only pydantic at module level; torch & co. are imported inside ``run``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import TargetError

# --------------------------------------------------------------------------------------------
# Spec kinds


@dataclass(frozen=True)
class Kind:
    """A spec kind: its pydantic model and the stage a bare ``kind:name`` target builds."""

    name: str
    model: type
    default_stage: str | None = None


@dataclass(frozen=True)
class InputRef:
    """A built input as a stage sees it."""

    node: str
    path: Path  # the object's data directory (read-only)
    manifest: dict[str, Any]


@dataclass
class Stage:
    """A registered stage. See module docstring."""

    name: str
    version: int
    kind: str
    run: Callable[["Context"], None]
    fields: tuple[str, ...] = ()
    # (spec, part) -> {input name: node id}
    inputs: Callable[[Any, str | None], dict[str, str]] | None = None
    # spec -> part names (fan-out: one node per part)
    parts: Callable[[Any], list[str]] | None = None
    # (spec dict, part) -> the key-relevant subset; default: the declared ``fields``
    select: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None
    # (spec, part) -> file/dir paths or globs, workspace-relative or absolute: content is in the key
    files: Callable[[Any, str | None], list[str]] | None = None
    # (spec, resolve) -> None; raise FieldError for cross-spec problems. resolve("kind:name") -> spec
    check: Callable[[Any, Callable[[str], Any]], None] | None = None
    # (spec, resolve) -> [(label, value)] rows shown under the node by --dry-run (e.g. a planner)
    describe: Callable[[Any, Callable[[str], Any]], list[tuple[str, str]]] | None = None
    heavy: bool = False  # run in a subprocess
    resumable: bool = False
    trajectory_exclude: tuple[str, ...] = ()
    entry: str | None = None  # the output file a user opens (printed after a build, e.g. index.html)
    description: str = ""
    module: str = ""
    source_file: str = ""

    def node_inputs(self, spec: Any, part: str | None) -> dict[str, str]:
        """The input nodes of one node of this stage."""
        return dict(self.inputs(spec, part)) if self.inputs else {}

    def node_parts(self, spec: Any) -> list[str] | None:
        """Part names when the stage fans out, else None."""
        return list(self.parts(spec)) if self.parts else None

    def node_files(self, spec: Any, part: str | None) -> list[str]:
        """File inputs (paths or globs) whose content goes into the key."""
        return list(self.files(spec, part)) if self.files else []


_KINDS: dict[str, Kind] = {}
_STAGES: dict[str, Stage] = {}


def register_kind(name: str, model: type, default_stage: str | None = None) -> None:
    """Register the pydantic model of ``specs/<name>/*.toml``."""
    _KINDS[name] = Kind(name, model, default_stage)


def stage(
    name: str,
    *,
    version: int,
    kind: str,
    fields: Iterable[str] = (),
    inputs: Callable[[Any, str | None], dict[str, str]] | None = None,
    parts: Callable[[Any], list[str]] | None = None,
    select: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None,
    files: Callable[[Any, str | None], list[str]] | None = None,
    check: Callable[[Any, Callable[[str], Any]], None] | None = None,
    describe: Callable[[Any, Callable[[str], Any]], list[tuple[str, str]]] | None = None,
    heavy: bool = False,
    resumable: bool = False,
    trajectory_exclude: Iterable[str] = (),
    entry: str | None = None,
) -> Callable[[Callable[["Context"], None]], Callable[["Context"], None]]:
    """Decorator registering ``run(ctx)`` as a stage."""

    def register(run: Callable[[Context], None]) -> Callable[[Context], None]:
        import inspect

        _STAGES[name] = Stage(
            name=name,
            version=version,
            kind=kind,
            run=run,
            fields=tuple(fields),
            inputs=inputs,
            parts=parts,
            select=select,
            files=files,
            check=check,
            describe=describe,
            heavy=heavy,
            resumable=resumable,
            trajectory_exclude=tuple(trajectory_exclude),
            entry=entry,
            description=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else "",
            module=run.__module__,
            source_file=inspect.getsourcefile(run) or "",
        )
        return run

    return register


def kinds() -> dict[str, Kind]:
    """All registered spec kinds."""
    return _KINDS


def stages() -> dict[str, Stage]:
    """All registered stages."""
    return _STAGES


def get_stage(name: str) -> Stage:
    """The stage called ``name`` or a TargetError with a did-you-mean."""
    if name not in _STAGES:
        from .specs import did_you_mean

        raise TargetError(f"unknown stage '{name}'{did_you_mean(name, _STAGES)}")
    return _STAGES[name]


def load_plugins(modules: Iterable[str]) -> None:
    """Import the modules that register kinds and stages (idempotent)."""
    import importlib

    for mod in modules:
        importlib.import_module(mod)


_SPEC_ADDRESSES: dict[int, tuple[Any, str]] = {}


def remember_address(model: Any, address: str) -> None:
    """Called by the spec loader so stages can ask a spec instance for its own name."""
    _SPEC_ADDRESSES[id(model)] = (model, address)


def spec_address(spec: Any) -> str:
    """``kind:name`` of a validated spec instance given to a stage hook."""
    entry = _SPEC_ADDRESSES.get(id(spec))
    if entry is None or entry[0] is not spec:
        raise TargetError("spec_address() needs a spec instance loaded by the engine")
    return entry[1]


def spec_name(spec: Any) -> str:
    """The name of a validated spec instance (``tiny`` for ``specs/model/tiny.toml``).

    Stage hooks use it to name sibling nodes: ``{"tokens": f"tokenize:{spec_name(spec)}"}``.
    """
    return ref_name(spec_address(spec))


def ref_name(address: str) -> str:
    """``"corpus:tiny"`` → ``"tiny"``."""
    return address.split(":", 1)[1]


# --------------------------------------------------------------------------------------------
# Run-time context


@dataclass
class Context:
    """What a stage's ``run`` gets. Write outputs only under ``out``."""

    node: str
    stage: str
    spec: Any  # the validated pydantic spec of the node's kind
    spec_name: str
    part: str | None
    out: Path
    inputs: dict[str, InputRef]
    files: list[Path]
    workspace: Path
    cache_root: Path
    key: str
    run_dir: Path | None = None  # resumable stages: survives failures, one writer at a time
    options: dict[str, Any] = field(default_factory=dict)  # CLI options (e.g. reset_optimizer)
    progress_fd: int | None = None
    progress_cb: Callable[[dict[str, Any]], None] | None = None
    log_file: Any = None
    _stats: dict[str, Any] = field(default_factory=dict)

    def progress(self, done: float, total: float | None = None, desc: str | None = None, **extra: Any) -> None:
        """Report progress; the CLI shows a bar when ``total`` is given."""
        msg = {"node": self.node, "done": done, "total": total, "desc": desc, "t": time.time(), **extra}
        if self.progress_cb is not None:
            self.progress_cb(msg)
        elif self.progress_fd is not None:
            try:
                os.write(self.progress_fd, (json.dumps(msg) + "\n").encode())
            except OSError:
                pass  # the parent went away; progress is best-effort, the build itself is not

    def log(self, message: str) -> None:
        """Append a line to the node's log file in the cache."""
        f = self.log_file
        if f is None:
            import sys

            f = sys.stdout
        f.write(message.rstrip("\n") + "\n")
        f.flush()

    def stats(self, **values: Any) -> None:
        """Record JSON-serialisable statistics into the manifest (shown by ``show``)."""
        self._stats.update(values)

    @property
    def recorded_stats(self) -> dict[str, Any]:
        """What ``stats`` recorded so far."""
        return dict(self._stats)

    def samples_dir(self, namespace: str) -> Path:
        """A content-addressed store shared by all builds, for per-item caching inside a stage.

        Items are addressed by keys the stage computes; write with ``publish_file`` semantics
        (temp file + rename) so a crash never leaves a half-written item.
        """
        d = self.cache_root / "samples" / namespace
        d.mkdir(parents=True, exist_ok=True)
        return d


def node_id(stage_name: str, spec_name: str, part: str | None = None) -> str:
    """Compose a node id ``stage:name[/part]``."""
    return f"{stage_name}:{spec_name}" + (f"/{part}" if part else "")


def parse_node_id(node: str) -> tuple[str, str, str | None]:
    """Split ``stage:name[/part]``."""
    if ":" not in node:
        raise TargetError(f"'{node}' is not a target: expected kind:name or stage:name[/part]")
    prefix, rest = node.split(":", 1)
    name, _, part = rest.partition("/")
    if not prefix or not name:
        raise TargetError(f"'{node}' is not a target: expected kind:name or stage:name[/part]")
    return prefix, name, part or None
