"""Stage protocol and registry.

A *spec kind* (``corpus``, ``model`` …) is a pydantic model that validates ``specs/<kind>/<name>.toml``.
A *stage* reads one kind: node ``<stage>:<name>[/<part>]`` runs the stage on spec ``<kind>:<name>``.
Its key is built from the values of exactly the spec ``fields`` it declares, its ``version``, the
output digests of its ``inputs`` and the content digests of its ``files``.

Hooks (``inputs``, ``parts``, ``files``, ``check``, ``describe``, ``pin``) get a read-only :class:`SpecView`
(the spec, its name, ``resolve``, the workspace root); ``run`` gets a :class:`Context`. Plugin CLI
commands (``serve``, ``probe`` …) register with :func:`command`. The reference is docs/stage-api.md.

Stage modules import only pydantic at module level; torch & co. are imported inside ``run``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import StageDefinitionError, TargetError, did_you_mean

# --------------------------------------------------------------------------------------------
# Spec kinds


@dataclass(frozen=True)
class Kind:
    """A spec kind: its pydantic model and the stage a bare ``kind:name`` target builds."""

    name: str
    model: type
    default_stage: str | None = None
    module: str = ""  # the module that registered it (the file-name rule, tests/test_stage_files.py)


@dataclass(frozen=True)
class InputRef:
    """A built input as a stage sees it."""

    node: str
    path: Path  # the object's data directory (read-only)
    manifest: dict[str, Any]


@dataclass(frozen=True)
class SpecView:
    """What a stage's hooks get: one validated spec and where it sits (read-only).

    ``view.spec`` is the pydantic model, ``view.name`` its name (``tiny`` for ``specs/model/tiny.toml``),
    so a hook names sibling nodes as ``{"tokens": f"tokenize:{view.name}"}``; ``view.resolve("kind:name")``
    is another validated spec (``extends`` merged), ``view.workspace`` the workspace root.
    """

    spec: Any
    address: str  # kind:name
    workspace: Path
    resolver: Callable[[str], Any] = field(repr=False, compare=False)
    cache_root: Path | None = field(default=None, repr=False, compare=False)  # set by the engine: for lookup

    @property
    def kind(self) -> str:
        """The spec kind (``model``)."""
        return self.address.split(":", 1)[0]

    @property
    def name(self) -> str:
        """The spec name (``tiny``)."""
        return ref_name(self.address)

    def resolve(self, address: str) -> Any:
        """The validated pydantic spec ``kind:name`` of the same workspace; a bad reference raises SpecError."""
        return self.resolver(address)

    def lookup(self, node: str) -> "InputRef | None":
        """The object ``node`` last built in this workspace (read-only; None when never built, no
        longer cached, or the view has no cache): e.g. a planner row's throughput measured last time."""
        if self.cache_root is None:
            return None
        return lookup_object(self.workspace, self.cache_root, node)

    @classmethod
    def of(cls, spec: Any, address: str, workspace: Path | str = ".",
           resolve: Callable[[str], Any] | None = None) -> "SpecView":
        """A view of a spec built outside the engine (tests, scripts); ``resolve`` defaults to the
        specs under ``workspace``."""
        root = Path(workspace)
        return cls(spec, address, root, resolve or _store_resolver(root))


def _store_resolver(root: Path) -> Callable[[str], Any]:
    """``resolve`` over the specs of ``root`` with the engine's loader (validated, ``extends`` merged)."""
    from .specs import SpecStore

    store = SpecStore(root, _KINDS)
    return lambda address: store.get(address).model


@dataclass(frozen=True)
class Command:
    """A CLI command a plugin adds (``genesis-build serve …``). See :func:`command`."""

    name: str
    help: str
    configure: Callable[[Any], None] | None  # argparse.ArgumentParser -> None: add the command's arguments
    run: Callable[[Any, Any], int]  # (args, Session) -> exit code
    module: str = ""


@dataclass
class Stage:
    """A registered stage. See module docstring."""

    name: str
    version: int
    kind: str
    run: Callable[["Context"], None]
    fields: tuple[str, ...] = ()
    # (view, part) -> {input name: node id}
    inputs: Callable[[SpecView, str | None], dict[str, str]] | None = None
    # view -> part names (fan-out: one node per part)
    parts: Callable[[SpecView], list[str]] | None = None
    # (spec dict, part) -> the key-relevant subset; default: the declared ``fields``
    select: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None
    # (view, part) -> file/dir paths or globs, workspace-relative or absolute: content is in the key
    files: Callable[[SpecView, str | None], list[str]] | None = None
    # view -> None; raise FieldError for problems pydantic cannot see (other specs via view.resolve)
    check: Callable[[SpecView], None] | None = None
    # view -> [(label, value)] rows shown under the node by --dry-run (e.g. a planner); a describe
    # taking two parameters gets (view, part), so a fanned-out stage describes each part
    describe: Callable[..., list[tuple[str, str]]] | None = None
    # (view, part) -> extra key material from outside the workspace (a hub dataset's commit sha),
    # computed once per command; raises errors.Unresolved when it cannot be resolved now (offline)
    pin: Callable[[SpecView, str | None], dict[str, Any]] | None = None
    heavy: bool = False  # run in a subprocess
    resumable: bool = False
    trajectory_exclude: tuple[str, ...] = ()
    entry: str | None = None  # the output file a user opens (printed after a build, e.g. index.html)
    # ``build --push DEST``: push(output dir, DEST) -> where it went; check_push(DEST) runs before building
    push: Callable[[Path, str], str] | None = None
    check_push: Callable[[str], None] | None = None
    description: str = ""
    module: str = ""
    source_file: str = ""

    def node_inputs(self, view: SpecView, part: str | None) -> dict[str, str]:
        """The input nodes of one node of this stage."""
        return dict(self.inputs(view, part)) if self.inputs else {}

    def node_parts(self, view: SpecView) -> list[str] | None:
        """Part names when the stage fans out, else None."""
        return list(self.parts(view)) if self.parts else None

    def node_files(self, view: SpecView, part: str | None) -> list[str]:
        """File inputs (paths or globs) whose content goes into the key."""
        return list(self.files(view, part)) if self.files else []

    def node_describe(self, view: SpecView, part: str | None) -> list[tuple[str, str]]:
        """The ``--dry-run`` rows of one node: ``describe(view, part)`` when it takes two parameters,
        else ``describe(view)`` (the same rows for every part)."""
        if self.describe is None:
            return []
        return list(self.describe(view, part) if _arity(self.describe) >= 2 else self.describe(view))

    def node_pin(self, view: SpecView, part: str | None) -> dict[str, Any]:
        """Extra key material from outside the workspace (``pin``), or ``{}``."""
        return dict(self.pin(view, part) or {}) if self.pin else {}


@functools.lru_cache(maxsize=None)
def _arity(fn: Callable[..., Any]) -> int:
    """How many parameters a hook takes, read once per hook (status asks for every node)."""
    import inspect

    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 1


_KINDS: dict[str, Kind] = {}
_STAGES: dict[str, Stage] = {}
_COMMANDS: dict[str, Command] = {}
_UNCHECKED: list[tuple[str, str, str]] = []  # (stage, field, kind) whose kind is not registered yet


def register_kind(name: str, model: type, default_stage: str | None = None) -> None:
    """Register the pydantic model of ``specs/<name>/*.toml``."""
    import sys

    _KINDS[name] = Kind(name, model, default_stage, sys._getframe(1).f_globals.get("__name__", ""))
    _check_pending_fields()


def stage(
    name: str,
    *,
    version: int,
    kind: str,
    fields: Iterable[str] = (),
    inputs: Callable[[SpecView, str | None], dict[str, str]] | None = None,
    parts: Callable[[SpecView], list[str]] | None = None,
    select: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None,
    files: Callable[[SpecView, str | None], list[str]] | None = None,
    check: Callable[[SpecView], None] | None = None,
    describe: Callable[..., list[tuple[str, str]]] | None = None,
    pin: Callable[[SpecView, str | None], dict[str, Any]] | None = None,
    heavy: bool = False,
    resumable: bool = False,
    trajectory_exclude: Iterable[str] = (),
    entry: str | None = None,
    push: Callable[[Path, str], str] | None = None,
    check_push: Callable[[str], None] | None = None,
) -> Callable[[Callable[["Context"], None]], Callable[["Context"], None]]:
    """Decorator registering ``run(ctx)`` as a stage.

    Every entry of ``fields`` must name a field of the kind's model (dotted into nested models;
    ``@ref.path`` follows the spec that field ``ref`` refers to): a typo is a StageDefinitionError
    naming the stage and the field, raised when the plugin is imported.
    """

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
            pin=pin,
            heavy=heavy,
            resumable=resumable,
            trajectory_exclude=tuple(trajectory_exclude),
            entry=entry,
            push=push,
            check_push=check_push,
            description=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else "",
            module=run.__module__,
            source_file=inspect.getsourcefile(run) or "",
        )
        for f in _STAGES[name].fields:
            _UNCHECKED.append((name, f, kind))
        _check_pending_fields()
        return run

    return register


def command(name: str, *, help: str, configure: Callable[[Any], None] | None = None
            ) -> Callable[[Callable[[Any, Any], int]], Callable[[Any, Any], int]]:
    """Decorator registering ``run(args, session) -> exit code`` as ``genesis-build NAME``.

    ``configure(parser)`` adds the command's arguments to its ``argparse`` parser (``-C``/``--cache``
    are added by the engine); ``session`` is a :class:`genesis_build.commands.Session`. Import heavy
    libraries inside ``run``: the plugin is imported to parse the command line.
    """

    def register(run: Callable[[Any, Any], int]) -> Callable[[Any, Any], int]:
        _COMMANDS[name] = Command(name, help, configure, run, run.__module__)
        return run

    return register


def commands() -> dict[str, Command]:
    """All registered plugin commands."""
    return _COMMANDS


def _check_pending_fields() -> None:
    """Validate the declared ``fields`` whose kinds are registered now (see :func:`stage`); a stage
    with a bad field is unregistered again and the error raised."""
    pending = list(_UNCHECKED)
    _UNCHECKED.clear()
    error = None
    for entry in pending:
        stage_name, f, kind = entry
        ref_field, path = (f[1:].partition(".")[::2]) if f.startswith("@") else (None, f)
        # ``@ref.path``: ``ref`` is a field of this kind holding an address of the kind named ``ref``
        needed = [kind] + ([ref_field] if ref_field and path else [])
        if any(k not in _KINDS for k in needed):
            _UNCHECKED.append(entry)
            continue
        if ref_field is not None:
            problem = _field_problem(_KINDS[kind].model, ref_field)
            if problem is None and path:
                problem = _field_problem(_KINDS[ref_field].model, path)
        else:
            problem = _field_problem(_KINDS[kind].model, path)
        if problem and error is None:
            error = StageDefinitionError(f"stage {stage_name} ({_STAGES[stage_name].module}): fields: '{f}': {problem}")
            _STAGES.pop(stage_name, None)
    if error is not None:
        bad = str(error).split(" ", 2)[1]
        _UNCHECKED[:] = [e for e in _UNCHECKED if e[0] != bad]
        raise error


def _field_problem(model: Any, path: str) -> str | None:
    """Why the dotted ``path`` is not a field of ``model`` (None when it is, or cannot be checked:
    below a field that is not a pydantic model, e.g. a dict, a list index or ``Any``)."""
    import typing

    from .specs import model_in

    cur = model
    walked: list[str] = []
    for part in path.split("."):
        fields = getattr(cur, "model_fields", None)
        if fields is None:
            return None
        if part.isdigit():
            continue
        names = {n: fi for n, fi in fields.items()}
        names.update({fi.alias: fi for fi in fields.values() if fi.alias})
        if part not in names:
            where = ".".join(walked) or cur.__name__
            return f"no field '{part}' in {where}{did_you_mean(part, list(names))}"
        walked.append(part)
        cur = model_in(names[part].annotation, typing)
        if cur is None:
            return None
    return None


def kinds() -> dict[str, Kind]:
    """All registered spec kinds."""
    return _KINDS


def stages() -> dict[str, Stage]:
    """All registered stages."""
    return _STAGES


def get_stage(name: str) -> Stage:
    """The stage called ``name`` or a TargetError with a did-you-mean."""
    if name not in _STAGES:
        raise TargetError(f"unknown stage '{name}'{did_you_mean(name, _STAGES)}")
    return _STAGES[name]


def load_plugins(modules: Iterable[str]) -> None:
    """Import the modules that register kinds and stages (idempotent)."""
    import importlib

    for mod in modules:
        importlib.import_module(mod)


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
    kind: str = ""  # the spec kind (``model``); "" in a hand-built Context: then taken from the node's stage
    # set by the engine; a Context built by hand (tests) falls back to the specs and cache of ``workspace``
    resolver: Callable[[str], Any] | None = field(default=None, repr=False)
    # what the stage's ``pin`` hook resolved for this node (in its key): read these, not the spec's
    # unresolved names (a hub branch), so the run reads exactly what the key promises
    external: dict[str, Any] = field(default_factory=dict)
    _stats: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``kind:name`` of the node's spec (``model:tiny``)."""
        kind = self.kind or (_STAGES[self.stage].kind if self.stage in _STAGES else self.stage)
        return f"{kind}:{self.spec_name}"

    @property
    def view(self) -> SpecView:
        """The node's spec as the hooks saw it (so ``run`` can call the same helpers)."""
        return SpecView(self.spec, self.address, self.workspace, self.resolve, self.cache_root)

    def resolve(self, address: str) -> Any:
        """The validated pydantic spec ``kind:name`` of this workspace (``extends`` merged): the same
        object the hooks' ``view.resolve`` gave, e.g. ``ctx.resolve(ctx.spec.parallel)``."""
        if self.resolver is None:
            self.resolver = _store_resolver(self.workspace)
        return self.resolver(address)

    def lookup(self, node: str | None = None, *, key: str | None = None) -> InputRef | None:
        """A built object in the cache, read-only: by ``key``, or the one ``node`` last built in this
        workspace (None when there is none, or it is no longer in the cache). Inputs of this node are
        in ``inputs``; this is for what a stage reads beyond them (e.g. manifests upstream of an input)."""
        return lookup_object(self.workspace, self.cache_root, node, key=key)

    @property
    def published_path(self) -> Path:
        """Where ``out`` will be once this node is published (read-only then): for relative links from
        this node's files to other objects' (``os.path.relpath(other.path / f, ctx.published_path)``)."""
        from .cache import Cache

        return Cache(Path(self.cache_root)).data_dir(self.key)

    def upstream_manifests(self) -> list[dict[str, Any]]:
        """Manifests of this node's inputs and of every node upstream of them, sorted by node id, read
        from the cache through :meth:`lookup` (objects pulled partially from a remote may lack some:
        skipped). What a report or a release card needs to name every spec and key behind it."""
        seen: dict[str, dict[str, Any]] = {}
        todo = [(ref.node, ref.manifest) for ref in self.inputs.values()]
        while todo:
            node, manifest = todo.pop()
            if node in seen or not manifest:
                continue
            seen[node] = manifest
            for dep in (manifest.get("inputs") or {}).values():
                if dep.get("node") not in seen and dep.get("key"):
                    found = self.lookup(key=dep["key"])
                    todo.append((dep["node"], found.manifest if found is not None else {}))
        return [seen[n] for n in sorted(seen)]

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


def lookup_object(workspace: Path, cache_root: Path, node: str | None = None, *,
                  key: str | None = None) -> InputRef | None:
    """See :meth:`Context.lookup` (shared with the commands' :class:`~genesis_build.commands.Session`)."""
    from .cache import Cache

    if (node is None) == (key is None):
        raise TypeError("lookup() takes a node id or key=, not both")
    if key is None:
        from .state import Refs, StateDB
        from .workspace import STATE_DIR

        db = Path(workspace) / STATE_DIR / "state.db"
        if not db.is_file():
            return None
        state = StateDB(db)
        try:
            ref = Refs(state).get(node)
        finally:
            state.close()
        if not ref:
            return None
        key = ref["key"]
    cache = Cache(Path(cache_root))
    manifest = cache.manifest(key) if cache.has(key) else None
    if manifest is None:
        return None
    return InputRef(manifest.get("node", node or ""), cache.data_dir(key), manifest)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The records of an append-only JSON-lines file (metrics, logs); a line that does not parse — the
    torn last line of a killed writer — is skipped. Missing file: no records."""
    out = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


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
