"""Stat-only no-op path.

When a status found every node of a target cached, we record the stat signature (inode, size,
mtime_ns, ctime_ns) of everything that status depended on: spec files, ``genesis.toml``, the engine's and
plugins' source files, every file input and the directories globs walked, and the manifests of the
objects it pointed at. The next ``genesis-build`` / ``--dry-run`` with the same arguments first
compares those signatures; if none changed it prints the recorded answer without importing
pydantic, networkx or rich, or reading any file's content. Any difference falls back to the full
path, which is always correct on its own. As in the state DB, no record is written while any of
those files changed less than ``state.RACY_NS`` ago (a same-size edit in the same timestamp tick
would be invisible).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

FORMAT = 3
ALLOWED = {"-n", "--dry-run", "-q", "--quiet", "-k", "--keep-going"}
WITH_VALUE = {"--format", "-j", "--jobs", "-w", "--workers", "-C", "--workspace", "--cache"}


def positive_int_or_none(text: str) -> int | None:
    """``text`` as an integer >= 1, or None (shared with the argparse path so both reject alike)."""
    try:
        n = int(text, 10)
    except ValueError:
        return None
    return n if n >= 1 else None


def _parse(argv: list[str]) -> dict[str, Any] | None:
    """The subset of build arguments the fast path understands, or None."""
    out: dict[str, Any] = {"targets": [], "dry_run": False, "format": "text", "workspace": None, "cache": None}
    it = iter(argv)
    for a in it:
        if a.startswith("-"):
            name, eq, val = a.partition("=")
            if name in WITH_VALUE:
                val = val if eq else next(it, None)
                if val is None:
                    return None
                if name in ("-j", "--jobs", "-w", "--workers") and positive_int_or_none(val) is None:
                    return None  # invalid: the full path prints the one-line error (exit 2)
                if name == "--format":
                    out["format"] = val
                elif name in ("-C", "--workspace"):
                    out["workspace"] = val
                elif name == "--cache":
                    out["cache"] = val
            elif a in ALLOWED:
                if a in ("-n", "--dry-run"):
                    out["dry_run"] = True
            else:
                # --force, --reset-optimizer, --help, and --set/--sweep/--save (a variant is not the
                # plain target: its record would answer the plain run, or the reverse): full path
                return None
        elif "@" in a:
            return None  # a --set variant's name (experiments.from_log): never on the fast path
        else:
            out["targets"].append(a)
    return out


def _root(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / "genesis.toml").is_file():
            return d
    return None


def _record_path(root: Path, args: dict[str, Any]) -> Path:
    import xxhash

    ident = json.dumps([sorted(args["targets"]), args["format"], args["dry_run"], args["cache"],
                        {k: v for k, v in sorted(os.environ.items()) if k.startswith("GENESIS_")}, sys.executable])
    return root / ".genesis" / "noop" / f"{xxhash.xxh3_64_hexdigest(ident.encode())}.json"


def _sig(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def try_noop(argv: list[str]) -> int | None:
    """Print the recorded no-op answer if nothing it depended on changed; else None."""
    if os.environ.get("GENESIS_NO_FASTPATH"):
        return None
    args = _parse(argv)
    if args is None:
        return None
    root = _root(Path(args["workspace"]).resolve() if args["workspace"] else Path.cwd())
    if root is None:
        return None
    path = _record_path(root, args)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("format") != FORMAT:
        return None
    for p, sig in rec["stats"]:
        if _sig(p) != sig:
            return None
    for p in rec["must_exist"]:
        if not os.path.exists(p):
            return None
    tty = sys.stdout.isatty()
    sys.stdout.write(rec["ansi"] if tty and rec.get("ansi") else rec["plain"])
    return 0


def snapshot(paths: Iterable[str], known: dict[str, tuple[int, ...]] | None = None) -> list[list[Any]]:
    """Stat signatures of ``paths`` (taken before the status that they justify); ``known`` holds
    signatures already taken that way (by the listing of file inputs), so no file is stat'ed twice."""
    known = known or {}
    return [[p, known.get(p) or _sig(p)] for p in sorted(set(paths))]  # a tuple is saved as a list


def save(root: Path, argv_args: dict[str, Any], stats: list[list[Any]], must_exist: list[str], plain: str, ansi: str) -> None:
    """Record a no-op answer for these arguments (unless a file it vouches for is too fresh)."""
    import time

    from .state import RACY_NS

    now = time.time_ns()
    if any(sig is not None and now - max(sig[2], sig[3]) < RACY_NS for _, sig in stats):  # state.is_racy, inlined
        return
    path = _record_path(root, argv_args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "stats": stats, "must_exist": must_exist, "plain": plain, "ansi": ansi}))
    os.replace(tmp, path)


def parse(argv: list[str]) -> dict[str, Any] | None:
    """Public wrapper of the argument parser (the CLI records under the same identity)."""
    return _parse(argv)


def watched_sources(plugins: list[str]) -> list[str]:
    """Source files whose change may change any answer: the engine's and the plugins' modules."""
    out = []
    prefixes = tuple(plugins) + ("genesis_build",)
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in prefixes or name in prefixes:
            f = getattr(mod, "__file__", None)
            if f:
                out.append(f)
    return out


# --------------------------------------------------------------------------------------------
# Recording (the full path, after a status or a build that found everything cached)


class Recorder:
    """What one full ``genesis-build`` / ``--dry-run`` depended on, collected as it runs, so that the
    next invocation with the same arguments can answer from :func:`try_noop`.

    Stats are taken *before* the files are read (a change while we read makes the record stale,
    never wrong). Inactive (records nothing) for arguments the fast path does not understand.
    """

    def __init__(self, engine: Any, argv: list[str] | None) -> None:
        self.engine = engine
        self.args = parse(argv) if argv is not None else None
        self.stats: list[list[Any]] = spec_stats(engine) if self.args else []

    @property
    def active(self) -> bool:
        """True when these arguments can be answered by the fast path; never for a graph with pin
        material (a hub commit): it lies outside the files whose stat signatures the record checks."""
        return self.args is not None and not self.engine.project.has_pins()

    def add_graph(self, graph: Any) -> None:
        """Stat the graph's file inputs and the directories their globs listed (before the status)."""
        if self.active:
            self.stats += input_stats(self.engine, graph)

    def save_dry_run(self, status: dict[str, Any], plain: str, ansi: str) -> None:
        """Record a dry-run answer when every node was cached."""
        if not self.active or not all(s.state == "cached" for s in status.values()):
            return
        keys = [s.key for s in status.values()]
        must = [str(self.engine.cache.object_dir(k) / "manifest.json") for k in keys]
        save(self.engine.ws.root, self.args, self.stats + output_stats(self.engine, keys), must, plain, ansi)

    def save_build(self, results: list[Any], text: str) -> None:
        """Record the answer (``text``) of the next identical build, once this one left every node
        built or cached (none failed or skipped)."""
        if not self.active or not results or any(r.outcome == "failed" or not r.key for r in results):
            return
        keys = [r.key for r in results]
        must = [str(self.engine.cache.object_dir(k) / "manifest.json") for k in keys] + [str(self.engine.ws.out_dir)]
        save(self.engine.ws.root, self.args, self.stats + output_stats(self.engine, keys), must, text, text)


def spec_stats(engine: Any) -> list[list[Any]]:
    """Stats of spec files, workspace settings and sources, taken before they are read."""
    spec_dir = engine.ws.root / "specs"
    paths = [str(engine.ws.root / "genesis.toml"), str(spec_dir)]
    if spec_dir.is_dir():
        for d in spec_dir.iterdir():
            paths.append(str(d))
            if d.is_dir():
                paths += [str(f) for f in d.iterdir()]
    return snapshot(paths + watched_sources(engine.ws.plugins))


def output_stats(engine: Any, keys: list[str]) -> list[list[Any]]:
    """Stats of every published output file (a truncated or edited object must not look cached)."""
    paths = []
    for key in keys:
        data = engine.cache.data_dir(key)
        paths += [str(data / e["path"]) for e in (engine.cache.manifest(key) or {}).get("outputs", [])]
    return snapshot(paths)


def input_stats(engine: Any, graph: Any) -> list[list[Any]]:
    """Stats of every node's file inputs and of the directories their globs listed."""
    paths: list[str] = []
    for nid in graph.nodes:
        paths += [p for _, p in engine.project.file_input_strs(engine.project.node(nid))]
    # the signatures the listing took (before any content was read) vouch for the files
    return snapshot(paths + sorted(engine.project.watched_dirs), known=engine.project.file_sigs)
