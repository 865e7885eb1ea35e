"""Status (what would run and why) and execution of a build graph.

Nodes run in topological order; independent nodes run concurrently (``-j``). A node's key needs its
inputs' *output digests*, so a rebuilt input that produced identical bytes leaves its consumers
cached (early cutoff). Heavy stages run in a subprocess (``genesis_build.worker``) whose output goes
to a per-node log in the cache.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from array import array
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from . import __version__
from .cache import Cache, CorruptObject, ImmovableObject
from .errors import DISK_FULL, DISK_FULL_EXIT, BuildError, GenesisError, Unresolved
from .graph import Node, Project, describe_changes, trajectory_material
from .keys import digest_json
from .state import Refs, StateDB
from .workspace import Workspace

CACHED, STALE, MISSING, WAITING, FORCED = "cached", "stale", "missing", "waiting", "forced"
UNRESOLVED = "unresolved"  # the stage's pin hook cannot resolve the node's outside material now (offline)
REFS_FLUSH_S = 0.5  # how long a built object may wait to be recorded as a gc root (see _write_cache_ref)


@dataclass
class NodeStatus:
    """A node's state as ``--dry-run`` reports it."""

    id: str
    stage: str
    key: str | None
    state: str
    reasons: list[str]
    inputs: list[str]
    digest: str | None = None  # output digest when cached
    warnings: list[str] = field(default_factory=list)
    describe: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``--dry-run --format json`` record."""
        return {"id": self.id, "stage": self.stage, "key": self.key, "state": self.state,
                "reason": "; ".join(self.reasons), "inputs": self.inputs, "warnings": self.warnings,
                "details": [{"label": str(label), "value": str(value)} for label, value in self.describe]}


@dataclass
class NodeResult:
    """What happened to a node during a build."""

    id: str
    outcome: str  # "cached", "built", "failed", "skipped", "pulled"
    key: str | None = None
    seconds: float = 0.0
    error: str | None = None
    log: Path | None = None
    summary: str | None = None  # the stage's one-line ``summary`` stat of this build (shown after the node's line)


def _waiting_reason(pending: list[str]) -> str:
    """Why a node waits, in one plain clause: "because input A will be rebuilt", "because inputs A, B
    and 2 more will be rebuilt"."""
    if len(pending) == 1:
        return f"because input {pending[0]} will be rebuilt"
    named = ", ".join(pending[:2]) if len(pending) > 2 else " and ".join(pending)
    more = f" and {len(pending) - 2} more" if len(pending) > 2 else ""
    return f"because inputs {named}{more} will be rebuilt"


def workspace_id(ws: Workspace) -> str:
    """Stable id of a workspace (its resolved path) for per-workspace refs in a shared cache."""
    return digest_json(str(ws.root.resolve()))[:16]


class Engine:
    """Ties workspace, project, cache and state together for one CLI invocation."""

    def __init__(self, ws: Workspace, console: Any = None) -> None:
        self.ws = ws
        self.project = Project(ws.root, ws.plugins, ws.allow_paths)
        self.project.cache_root = ws.cache_dir  # hooks' view.lookup (planner rows from the last build)
        self.cache = Cache(ws.cache_dir)
        if self.cache.is_group_shared():
            os.umask(0o002)  # objects, locks and dirs we create stay usable by the group's other builders
        self.state = StateDB(ws.state_dir / "state.db")
        self.refs = Refs(self.state)
        self.console = console
        self._source_hashes: dict[str, str] = {}
        self._cache_refs: dict[str, str] | None = None  # this workspace's refs file in the cache, as read
        self._refs_lock = threading.Lock()
        self._pending_refs: dict[str, str] = {}
        self._refs_flushed = time.monotonic()
        self.remote = None
        if ws.remote_url:
            from .remote import Remote

            self.remote = Remote(ws.remote_url, self.cache, ws.remote_options)

    # ---- keys
    def source_hash(self, node: Node) -> str:
        """Digest of the stage's source file (warns when it changes without a version bump)."""
        f = node.stage.source_file
        if f not in self._source_hashes:
            self._source_hashes[f] = self.state.digest(Path(f)) if f and os.path.isfile(f) else ""
        return self._source_hashes[f]

    def file_digests(self, node: Node) -> dict[str, str]:
        """Content digests of the node's file inputs, through the state DB (reusing the stat
        signatures the listing took)."""
        files = self.project.file_input_strs(node)
        digests = self.state.digest_many([p for _, p in files], self.project.file_sigs)
        return {k: digests[p] for k, p in files}

    def material(self, node: Node, input_digests: dict[str, str]) -> dict[str, Any]:
        """Key material of a node given its inputs' output digests."""
        return self.project.key_material(node, input_digests, self.file_digests(node))

    def node_key(self, node: Node, input_digests: dict[str, str],
                 memo: dict[str, tuple[str, str]] | None = None,
                 writes: list[tuple[str, str, str]] | None = None) -> tuple[str, dict[str, Any] | None]:
        """The node's key, and its key material when it had to be computed.

        A node over thousands of files would look up every file's digest and hash a material that
        lists them all. Instead, the fingerprint of (material without file digests, every file's key
        path and stat signature) is compared with the one recorded beside the key last time: equal
        means no file changed (the signatures are those the state DB trusts, and a fingerprint is
        only recorded when none of them is within the racy window), so the key is reused.
        """
        files = self.project.file_input_strs(node)
        sigs = self.project.file_sigs
        listed = [sigs.get(f) for _, f in files]
        fp = None
        if files and None not in listed:
            import xxhash

            from .keys import canonical_json

            h = xxhash.xxh3_128(canonical_json(self.project.key_material(node, input_digests, {})).encode())
            h.update("\0".join([k for k, _ in files]).encode())
            try:
                h.update(array("q", chain.from_iterable(listed)).tobytes())  # type: ignore[arg-type]
            except OverflowError:  # a 64-bit unsigned inode number
                h.update(repr(listed).encode())
            fp = h.hexdigest()
            known = memo.get(node.id) if memo is not None else None
            if known is None and memo is None:
                known = self.state.memo_keys([node.id]).get(node.id)
            if known is not None and known[0] == fp:
                return known[1], None
        material = self.material(node, input_digests)
        key = digest_json(material)
        if fp is not None:
            newest = max(max(sig[2], sig[3]) for sig in listed)  # type: ignore[index]
            if time.time_ns() - newest >= self.state.racy_ns:
                if writes is not None:
                    writes.append((node.id, fp, key))
                else:
                    self.state.put_keys([(node.id, fp, key)])
        return key, material

    def last_ref(self, nid: str) -> dict[str, Any] | None:
        """The last build of ``nid``; for a ``--set`` variant never built, that of its base node, so
        reasons name the overridden fields (``spec field model.training.lr changed 0.003→0.001``)."""
        ref = self.refs.get(nid)
        if ref is None and "@" in nid:
            from .experiments import base_node

            ref = self.refs.get(base_node(nid))
        return ref

    def _last_head(self, nid: str) -> tuple[str, str, int, str] | None:
        """``last_ref``'s (key, source_hash, version, output_digest), without parsing its material."""
        head = self.refs.head(nid)
        if head is None and "@" in nid:
            from .experiments import base_node

            head = self.refs.head(base_node(nid))
        return head

    def source_warning(self, node: Node) -> str | None:
        """A warning when the stage's source changed since the last build but its version did not."""
        ref = self._last_head(node.id)
        if ref and ref[2] == node.stage.version and ref[1] and ref[1] != self.source_hash(node):
            return (f"stage {node.stage.name} source changed since the last build of {node.id} but its version "
                    f"is still {node.stage.version}: bump `version` if outputs change")
        return None

    # ---- status
    def status(self, graph: Any, force: set[str] = frozenset()) -> dict[str, NodeStatus]:
        """Every node's state and reason, without running anything."""
        import networkx as nx

        out: dict[str, NodeStatus] = {}
        order = list(nx.topological_sort(graph))
        memo = self.state.memo_keys(order)
        writes: list[tuple[str, str, str]] = []
        blocked: set[str] = set()  # unresolved nodes and those downstream of one
        for nid in order:
            node = self.project.node(nid)
            inputs = self.project.input_ids(node)
            warnings = [w for w in [self.source_warning(node)] if w]
            describe = node.stage.node_describe(self.project.view(node.spec), node.part)
            unresolved = [i for i in inputs.values() if i in blocked]
            if unresolved:
                blocked.add(nid)
                out[nid] = NodeStatus(nid, node.stage.name, None, WAITING,
                                      [f"because unresolved input{'s' if len(unresolved) > 1 else ''} "
                                       f"{', '.join(unresolved[:2])}{' …' if len(unresolved) > 2 else ''} must be pinned first"],
                                      list(inputs.values()), warnings=warnings, describe=describe)
                continue
            pending = [i for i in inputs.values() if out[i].digest is None]
            if pending:
                out[nid] = NodeStatus(nid, node.stage.name, None, WAITING, [_waiting_reason(pending)], list(inputs.values()),
                                      warnings=warnings, describe=describe)
                continue
            input_digests = {n: out[i].digest for n, i in inputs.items()}
            try:
                key, material = self.node_key(node, input_digests, memo, writes)  # type: ignore[arg-type]
            except Unresolved as e:  # planned anyway: the build refuses with this message
                blocked.add(nid)
                out[nid] = NodeStatus(nid, node.stage.name, None, UNRESOLVED, [str(e)], list(inputs.values()),
                                      warnings=warnings, describe=describe)
                continue
            if nid in force:
                why = "--force: fresh run from step 0" if node.stage.resumable else "--force"
                st = NodeStatus(nid, node.stage.name, key, FORCED, [why], list(inputs.values()))
            elif self.cache.has(key):
                m = self.cache.manifest(key) or {}
                st = NodeStatus(nid, node.stage.name, key, CACHED, [], list(inputs.values()), digest=m.get("output_digest"))
            elif self.remote is not None and self.remote.has(key):
                st = NodeStatus(nid, node.stage.name, key, CACHED, ["in remote cache (will pull)"], list(inputs.values()),
                                digest=self.remote.output_digest(key))
            else:
                ref = self.last_ref(nid)
                if ref is None:
                    st = NodeStatus(nid, node.stage.name, key, MISSING, ["never built"], list(inputs.values()))
                elif ref["key"] == key:
                    st = NodeStatus(nid, node.stage.name, key, MISSING, ["object missing from the cache (gc'd or quarantined)"],
                                    list(inputs.values()))
                else:
                    if material is None:
                        material = self.material(node, input_digests)  # type: ignore[arg-type]
                    st = NodeStatus(nid, node.stage.name, key, STALE, describe_changes(ref["material"], material),
                                    list(inputs.values()))
            st.warnings, st.describe = warnings, describe
            out[nid] = st
        self.state.put_keys(writes)
        return out

    # ---- build
    def preflight(self, graph: Any) -> None:
        """Resolve every node's ``pin`` material before anything runs or the cache is touched: a hub
        branch that cannot be pinned offline, a missing or gated dataset fails the build in its first
        second with the stage's one-line message, never after other nodes ran for hours."""
        for nid in sorted(graph.nodes):
            node = self.project.node(nid)
            if node.stage.pin:
                try:
                    self.project.pinned(node)
                except Unresolved as e:
                    raise Unresolved(f"{nid}: {e}") from None

    def build(self, graph: Any, targets: list[str], jobs: int = 1, keep_going: bool = False,
              force: set[str] = frozenset(), options: dict[str, Any] | None = None,
              ui: "Any" = None) -> list[NodeResult]:
        """Run what is not cached, in dependency order; returns one result per node."""
        import networkx as nx

        self.preflight(graph)
        self.cache.ensure()
        self.cache.clean_tmp()
        options = options or {}
        results: dict[str, NodeResult] = {}
        digests: dict[str, str] = {}  # node → output digest
        built_keys: dict[str, str] = {}  # node → key
        failed: set[str] = set()
        lock = threading.Lock()
        cancel = threading.Event()
        remaining = {n: set(graph.predecessors(n)) for n in graph.nodes}
        order = {n: i for i, n in enumerate(nx.topological_sort(graph))}
        git = _git_commit(self.ws.root)

        def run_one(nid: str) -> NodeResult:
            node = self.project.node(nid)
            inputs = self.project.input_ids(node)
            return self._build_node(node, inputs, digests, built_keys, nid in force, options, git, ui, cancel)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            running: dict[Future, str] = {}

            def schedule() -> None:
                ready = sorted((n for n, deps in remaining.items() if not deps), key=order.get)
                for n in ready:
                    if len(running) >= max(1, jobs):
                        break
                    del remaining[n]
                    if cancel.is_set():
                        results[n] = NodeResult(n, "skipped", error="cancelled")
                        continue
                    running[pool.submit(run_one, n)] = n

            try:
                schedule()
                while running:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        nid = running.pop(fut)
                        try:
                            res = fut.result()
                        except GenesisError as e:
                            res = NodeResult(nid, "failed", error=str(e))
                            res.user_error = e  # type: ignore[attr-defined]
                        except Exception as e:  # noqa: BLE001 — reported with the node's log
                            if isinstance(e, OSError) and e.errno in DISK_FULL:
                                where = f" writing {e.filename}" if e.filename else ""
                                res = NodeResult(nid, "failed", error=f"{os.strerror(e.errno)}{where}; nothing was "
                                                                       "published, free space there and rerun")
                            else:
                                res = NodeResult(nid, "failed", error=f"{type(e).__name__}: {e}")
                                res.traceback = traceback.format_exc()  # type: ignore[attr-defined]
                        results[nid] = res
                        with lock:
                            if res.outcome == "failed":
                                failed.add(nid)
                                for d in nx.descendants(graph, nid):
                                    if d in remaining:
                                        del remaining[d]
                                        results[d] = NodeResult(d, "skipped", error=f"input {nid} failed")
                                if not keep_going:
                                    cancel.set()
                            for succ in graph.successors(nid):
                                if succ in remaining:
                                    remaining[succ].discard(nid)
                        if ui:
                            ui.finished(res)
                    schedule()
            except KeyboardInterrupt:
                cancel.set()
                _terminate_children()
                for fut in running:
                    fut.cancel()
                wait(list(running))
                raise
            finally:
                self.flush_refs()
        for n in remaining:
            results.setdefault(n, NodeResult(n, "skipped", error="cancelled"))
        self._link_outputs(targets, results)
        return [results[n] for n in sorted(results, key=order.get)]

    def _build_node(self, node: Node, inputs: dict[str, str], digests: dict[str, str], built_keys: dict[str, str], forced: bool,
                    options: dict[str, Any], git: str | None, ui: Any, cancel: threading.Event) -> NodeResult:
        t0 = time.time()
        input_digests = {name: digests[i] for name, i in inputs.items()}
        key, material = self.node_key(node, input_digests)
        warning = self.source_warning(node)
        if warning and ui:
            ui.warn(warning)
        hit = None if forced else self._lookup(key, node, ui)
        if hit is None:
            waiting_msg = (lambda info: ui.waiting(node.id, info)) if ui else None
            with self.cache.lock(key, node.id, on_wait=waiting_msg):
                hit = None if forced else self._lookup(key, node, ui)
                if hit is None:
                    if cancel.is_set():
                        return NodeResult(node.id, "skipped", key, error="cancelled")
                    if material is None:
                        material = self.material(node, input_digests)
                    before = self.cache.manifest(key) if forced and self.cache.has(key) else None
                    manifest = self._run_and_publish(node, key, material, {n: (i, built_keys[i]) for n, i in inputs.items()},
                                                     options, git, ui, fresh=forced)
                    outcome = "built"
                    if before is not None and ui and hasattr(ui, "note"):
                        same = before.get("output_digest") == manifest["output_digest"]
                        ui.note(f"{node.id}: output {'unchanged' if same else 'changed'} by the forced rebuild"
                                f"{' (same digest): dependents stay cached' if same else ': dependents rebuild'}")
                    if self.remote is not None and self.ws.remote_push:
                        self._push(node, key, ui)
                else:
                    manifest, outcome = hit
        else:
            manifest, outcome = hit
        digests[node.id] = manifest["output_digest"]
        built_keys[node.id] = key
        head = (key, self.source_hash(node), node.stage.version, manifest["output_digest"])
        if self.refs.head(node.id) != head:  # unchanged for a cached node: skip re-serialising its material
            if material is None:
                material = self.material(node, input_digests)
            self.refs.put(node.id, key, material, *head[1:])
        self._write_cache_ref(node.id, key)
        # a stage's own words about what this build did (e.g. how much it generated vs reused): only
        # for a run, since a cached object did nothing now
        summary = (manifest.get("stats") or {}).get("summary") if outcome == "built" else None
        return NodeResult(node.id, outcome, key, time.time() - t0, log=self.cache.log_path(key),
                          summary=str(summary) if summary is not None else None)

    def _write_cache_ref(self, nid: str, key: str) -> None:
        """Record ``nid → key`` in the cache's refs of this workspace (a gc root).

        Already there (a cached node): nothing is written. Otherwise refs are batched: written (and
        fsync'd) at most every ``REFS_FLUSH_S`` and once when the build ends, instead of one locked
        read-modify-fsync of a file that grows with the graph for every node."""
        with self._refs_lock:
            if self._cache_refs is None:
                try:
                    path = self.cache.root / "refs" / f"{workspace_id(self.ws)}.json"
                    self._cache_refs = dict(json.loads(path.read_text()).get("nodes", {}))
                except (OSError, ValueError, AttributeError):
                    self._cache_refs = {}
            if self._cache_refs.get(nid) == key:
                return
            self._pending_refs[nid] = key
            due = time.monotonic() - self._refs_flushed >= REFS_FLUSH_S
        if due:
            self.flush_refs()

    def flush_refs(self) -> None:
        """Write the batched refs (durably) to the cache."""
        with self._refs_lock:
            pending, self._pending_refs = self._pending_refs, {}
            self._refs_flushed = time.monotonic()
            if not pending:
                return
            self.cache.write_refs(workspace_id(self.ws), str(self.ws.root), pending)
            assert self._cache_refs is not None
            self._cache_refs.update(pending)

    def _push(self, node: Node, key: str, ui: Any) -> None:
        """Push a freshly built object; an unreachable remote is a warning, the local build stands."""
        try:
            self.remote.push(key)
        except (OSError, GenesisError) as e:
            if ui:
                ui.warn(f"{node.id}: push to the remote cache failed ({e}); the local build is complete")

    def _lookup(self, key: str, node: Node, ui: Any) -> tuple[dict[str, Any], str] | None:
        """A usable cached object (checked before use; corrupt ones are quarantined) or a pull."""
        if self.cache.has(key):
            try:
                self.cache.check_quick(key)
                m = self.cache.manifest(key)
                if m is not None:
                    return m, "cached"
            except CorruptObject as e:
                try:
                    where = self.cache.quarantine(key)
                except ImmovableObject as im:
                    raise GenesisError(f"{node.id}: {e}; {im}") from None
                if ui:
                    ui.warn(f"{node.id}: {e}; quarantined to {where} and rebuilding")
        if self.remote is not None and self.ws.remote_pull and self.remote.has(key):
            if ui:
                self.remote.warn = ui.warn  # a corrupt remote object is named, not skipped silently
            if self.remote.pull(key, progress=ui.transfer if ui else None):
                return self.cache.manifest(key) or {}, "pulled"
        return None

    def _run_and_publish(self, node: Node, key: str, material: dict[str, Any], inputs: dict[str, tuple[str, str]],
                         options: dict[str, Any], git: str | None, ui: Any, fresh: bool = False) -> dict[str, Any]:
        """Run the stage into a temp dir and publish it; ``fresh`` (--force): a resumable stage starts at step 0."""
        tmp = self.cache.new_tmp(key)
        log_path = self.cache.log_path(key)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        input_refs = {}
        for name, (dep, dep_key) in inputs.items():
            self.cache.check_quick(dep_key)
            input_refs[name] = {"node": dep, "key": dep_key, "path": str(self.cache.data_dir(dep_key))}
        run_dir = None
        traj_key = None
        if node.stage.resumable:
            traj_key = digest_json(trajectory_material(material, node.stage.trajectory_exclude, node.spec.kind))
            run_dir = self.cache.run_dir(traj_key)
            run_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "workspace": str(self.ws.root), "plugins": self.ws.plugins, "allow_paths": [str(p) for p in self.ws.allow_paths], "node": node.id, "stage": node.stage.name,
            "spec": node.spec.address, "part": node.part, "out": str(tmp / "data"), "inputs": input_refs,
            "files": [str(p) for _, p in self.project.file_inputs(node)], "cache_root": str(self.cache.root),
            "key": key, "run_dir": str(run_dir) if run_dir else None, "options": options,
            "stats_path": str(tmp / "stats.json"), "error_path": str(tmp / "error.json"),
            "external": material.get("external", {}),
        }
        variant = self.project.specs.overrides.payload_for(node.spec.address) if self.project.specs.overrides else None
        if variant:
            payload["overrides"] = variant  # the worker rebuilds the --set variant spec from it
        t0 = time.time()
        if ui:
            ui.started(node.id, key)
        try:
            if node.stage.resumable:
                with self.cache.lock(f"run-{traj_key}", node.id, on_wait=(lambda i: ui.waiting(node.id, i)) if ui else None):
                    if fresh and run_dir is not None and any(run_dir.iterdir()):
                        # --force means a new trajectory, not a resume of the finished one. The stage empties
                        # its run dir itself: only it knows whether something else still writes there (a
                        # SLURM job of an earlier build)
                        payload["options"] = {**payload["options"], "fresh_run": True}
                        if ui and hasattr(ui, "note"):
                            ui.note(f"{node.id}: --force: fresh run from step 0 (run directory {run_dir.name[:12]})")
                    peak = self._execute(node, payload, log_path, ui)
            else:
                peak = self._execute(node, payload, log_path, ui)
            stats = json.loads((tmp / "stats.json").read_text()) if (tmp / "stats.json").is_file() else {}
            for extra in ("stats.json", "error.json"):
                (tmp / extra).unlink(missing_ok=True)
            manifest = {
                "key": key, "node": node.id, "stage": node.stage.name, "version": node.stage.version,
                "source_hash": self.source_hash(node), "spec": material["spec"], "part": node.part,
                "inputs": {n: {"node": r["node"], "key": r["key"], "digest": material["inputs"][n]} for n, r in input_refs.items()},
                "files": material["files"], "trajectory": traj_key, "wall_time_s": round(time.time() - t0, 3),
                "peak_rss_mb": round(peak / 1024, 1), "host": socket.gethostname(), "user": _user(),
                "genesis_build": __version__, "python": sys.version.split()[0], "git_commit": git,
                "created": time.time(), "options": options, "stats": stats, "schema": material["schema"],
            }
            if material.get("external"):  # what the pin hook resolved (a hub commit sha): in the key, shown here
                manifest["external"] = material["external"]
            if variant:  # run metadata, not key material: which --set variant built this object
                manifest["variant"] = {"spec": node.spec.address, "overrides": {o[0]: o[3] for o in variant}}
            return self.cache.publish(tmp, key, manifest)
        except OSError as e:
            self.cache.discard(tmp)
            if e.errno in DISK_FULL and not e.filename:  # write() errors carry no path: say where
                raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(tmp)) from None
            raise
        except BaseException:
            self.cache.discard(tmp)
            raise

    def _execute(self, node: Node, payload: dict[str, Any], log_path: Path, ui: Any) -> int:
        """Run the stage (subprocess when heavy); returns peak RSS in KiB."""
        if not node.stage.heavy:
            from .worker import run_payload

            with open(log_path, "a") as log:
                log.write(f"== {node.id} {time.strftime('%Y-%m-%d %H:%M:%S')} (in process)\n")
                log.flush()
                run_payload(payload, log=log, progress=(lambda m: ui.progress(m)) if ui else None)
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        payload_path = Path(payload["out"]).parent / "payload.json"
        payload_path.write_text(json.dumps(payload))
        read_fd, write_fd = os.pipe()
        # The lifeline: we hold its write end and never write; when this process dies, however it
        # dies, the worker reads EOF and takes its process group down (see worker.watch_lifeline).
        life_r, life_w = os.pipe()
        env = {**os.environ, "GENESIS_PROGRESS_FD": str(write_fd), "GENESIS_LIFELINE_FD": str(life_r),
               "PYTHONUNBUFFERED": "1"}
        try:
            with open(log_path, "a") as log:
                log.write(f"== {node.id} {time.strftime('%Y-%m-%d %H:%M:%S')} (subprocess)\n")
                log.flush()
                proc = subprocess.Popen([sys.executable, "-m", "genesis_build.worker", str(payload_path)],
                                        stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd, life_r), env=env,
                                        cwd=str(self.ws.root), start_new_session=True)
        finally:
            os.close(write_fd)
            os.close(life_r)
        _CHILDREN.add(proc.pid)
        reader = threading.Thread(target=_relay_progress, args=(read_fd, ui), daemon=True)
        reader.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            _CHILDREN.discard(proc.pid)
            os.close(life_w)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=5)
        payload_path.unlink(missing_ok=True)
        if proc.returncode != 0:
            err = _read_worker_error(Path(payload["error_path"]))
            if proc.returncode == DISK_FULL_EXIT or err.get("errno") in DISK_FULL:
                code = err.get("errno", errno.ENOSPC)
                raise OSError(code, os.strerror(code), err.get("filename"))
            if err.get("user_error"):
                raise GenesisError(err["message"])
            if "message" in err:
                raise BuildError(f"{err['message']} (log: {log_path})")
            raise BuildError(f"exit code {proc.returncode} (log: {log_path})")
        return usage.ru_maxrss

    def _link_outputs(self, targets: list[str], results: dict[str, NodeResult]) -> None:
        """``out/<target>`` → the object's data dir, for every target that built."""
        for t in targets:
            ids = self.project.resolve_target(t)
            if len(ids) != 1 or results.get(ids[0]) is None or results[ids[0]].key is None:
                continue
            if results[ids[0]].outcome in ("failed", "skipped"):
                continue
            link = self.ws.out_dir / t.replace("/", "__")
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            os.symlink(self.cache.data_dir(results[ids[0]].key), tmp)  # type: ignore[arg-type]
            os.replace(tmp, link)


_CHILDREN: set[int] = set()


def _terminate_children() -> None:
    """SIGTERM every running stage subprocess group (resumable stages checkpoint on it)."""
    for pid in list(_CHILDREN):
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def _read_worker_error(path: Path) -> dict[str, Any]:
    """What the worker recorded about its failure ({} when it could not record it, e.g. disk full)."""
    try:
        err = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return err if isinstance(err, dict) else {}


def _relay_progress(fd: int, ui: Any) -> None:
    with os.fdopen(fd, "rb") as f:
        for line in f:
            if ui is None:
                continue
            try:
                ui.progress(json.loads(line))
            except ValueError:
                continue


def _git_commit(root: Path) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())
