"""Targets → a networkx DiGraph of nodes, and each node's key material.

A node is ``stage:name[/part]``: stage ``stage`` run on spec ``<stage.kind>:name``. A target is a node
id, or ``kind:name`` for a kind with a default stage (``model:tiny`` → ``report:tiny``).
"""

from __future__ import annotations

import glob as globmod
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import KEY_SCHEMA
from .errors import FieldError, TargetError, Unresolved, did_you_mean
from .specs import Spec, SpecStore
from .stage import SpecView, Stage, get_stage, kinds, node_id, parse_node_id, stages

GLOB_CHARS = set("*?[")


@dataclass
class Node:
    """One node of the build graph."""

    id: str
    stage: Stage
    spec: Spec
    part: str | None
    inputs: dict[str, str] = field(default_factory=dict)  # input name → node id
    file_patterns: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The spec name (``tiny`` in ``tokenize:tiny``)."""
        return self.spec.name


class Project:
    """A workspace's specs and registered stages; builds graphs and key material."""

    def __init__(self, root: Path, plugins: list[str], allow_paths: list[Path] | None = None) -> None:
        from .stage import load_plugins

        self.root = root
        # file inputs must resolve (symlinks followed) inside one of these roots
        import sysconfig

        self.allowed_roots = [root.resolve(), Path(sysconfig.get_paths()["stdlib"]).resolve(),
                              *[p.resolve() for p in allow_paths or []]]
        self._allowed = [str(r) for r in self.allowed_roots]
        self._file_inputs: dict[str, list[tuple[str, str]]] = {}
        self._file_paths: dict[str, list[tuple[str, Path]]] = {}
        self._real_dirs: dict[str, str] = {}
        self._parts: dict[tuple[str, str], list[str] | None] = {}
        self._part_sets: dict[tuple[str, str], set[str]] = {}
        self.file_sigs: dict[str, tuple[int, int, int, int]] = {}  # file → stat signature when listed
        import sys

        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        load_plugins(plugins)
        self.plugins = plugins
        self.specs = SpecStore(root, kinds())
        self._nodes: dict[str, Node] = {}
        self._pins: dict[str, dict[str, Any] | Unresolved] = {}  # node → its stage's pin material
        self.cache_root: Path | None = None  # the engine's cache: hooks' view.lookup reads last builds
        self.watched_dirs: set[str] = set()  # dirs whose listing a glob/dir input depends on

    # ---- targets
    def resolve_target(self, target: str) -> list[str]:
        """Node ids a target stands for."""
        prefix, name, part = parse_node_id(target)
        all_stages = stages()
        if prefix in all_stages:
            stage = all_stages[prefix]
            spec = self._spec_for(stage, name, target)
            parts = self._parts_of(stage, spec)
            if parts is None:
                if part:
                    raise TargetError(f"{target}: stage {prefix} has no parts")
                return [node_id(prefix, name)]
            if part is None:
                return [node_id(prefix, name, p) for p in parts]
            if part not in parts:
                raise TargetError(f"{target}: no part '{part}' (parts: {', '.join(parts)}){did_you_mean(part, parts)}")
            return [node_id(prefix, name, part)]
        k = kinds().get(prefix)
        if k is not None:
            if not k.default_stage:
                raise TargetError(f"{target}: kind '{prefix}' has no default stage; build one of its stages instead")
            return self.resolve_target(node_id(k.default_stage, name, part))
        choices = sorted(set(all_stages) | set(kinds()))
        raise TargetError(f"{target}: unknown stage or kind '{prefix}'{did_you_mean(prefix, choices)}")

    def _parts_of(self, stage: Stage, spec: Spec) -> list[str] | None:
        """``stage.node_parts`` memoised per spec: a fan-out of N parts is asked N times while
        expanding (once per node), which must not cost N² work."""
        k = (stage.name, spec.address)
        if k not in self._parts:
            parts = self._parts[k] = stage.node_parts(self.view(spec))
            self._part_sets[k] = set(parts or ())
        return self._parts[k]

    def _spec_for(self, stage: Stage, name: str, where: str) -> Spec:
        address = f"{stage.kind}:{name}"
        if not self.specs.exists(address):
            hint = did_you_mean(name, self.specs.names(stage.kind))
            raise TargetError(f"{where}: no spec {address} ({self.specs.rel(self.specs.path_of(address))} does not exist){hint}")
        return self.specs.get(address)

    # ---- nodes
    def node(self, nid: str) -> Node:
        """The node with this id (memoised); validates its spec and the stage's checks."""
        if nid in self._nodes:
            return self._nodes[nid]
        prefix, name, part = parse_node_id(nid)
        stage = get_stage(prefix)
        spec = self._spec_for(stage, name, nid)
        view = self.view(spec)
        if stage.check:
            try:
                stage.check(view)
            except FieldError as e:
                target = self.specs.get(e.address) if e.address else spec
                raise self.specs.field_error(target, e) from None
        parts = self._parts_of(stage, spec)
        if (parts is None) != (part is None) or (part is not None and part not in self._part_sets[(stage.name, spec.address)]):
            raise TargetError(f"{nid}: not a node of stage {prefix} (parts: {', '.join(parts or []) or 'none'})")
        try:
            inputs = stage.node_inputs(view, part)
            patterns = stage.node_files(view, part)
        except FieldError as e:
            raise self.specs.field_error(spec, e) from None
        node = Node(nid, stage, spec, part, inputs, patterns)
        self._nodes[nid] = node
        return node

    def input_ids(self, node: Node) -> dict[str, str]:
        """Input name → node id; an input naming a fanned-out stage gets one entry per part."""
        out: dict[str, str] = {}
        for name, dep in node.inputs.items():
            ids = self.resolve_target(dep)
            if len(ids) == 1:
                out[name] = ids[0]
            else:
                for dep_id in ids:
                    out[f"{name}/{parse_node_id(dep_id)[2]}"] = dep_id
        return out

    def resolve(self, address: str) -> Any:
        """Validated pydantic spec for ``kind:name`` (``view.resolve`` / ``ctx.resolve`` of the stages)."""
        return self.specs.get(address).model

    def view(self, spec: Spec) -> SpecView:
        """The read-only view of a spec that stage hooks get."""
        return SpecView(spec.model, spec.address, self.root, self.resolve, self.cache_root)

    def expand(self, targets: list[str]) -> Any:
        """The DiGraph (edges input → consumer) of everything the targets need."""
        import networkx as nx

        g = nx.DiGraph()
        todo: list[str] = []
        for t in targets:
            todo += self.resolve_target(t)
        seen: set[str] = set()
        while todo:
            nid = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            node = self.node(nid)
            g.add_node(nid)
            for name, dep_id in self.input_ids(node).items():
                g.add_edge(dep_id, nid, name=name)
                todo.append(dep_id)
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            raise TargetError("dependency cycle: " + " → ".join([e[0] for e in cycle] + [cycle[0][0]]))
        return g

    # ---- key material
    def spec_values(self, node: Node) -> dict[str, Any]:
        """The declared spec fields' values, keyed by display path (``model.training.lr``)."""
        dump = node.spec.dump
        kind = node.spec.kind
        if node.stage.select:
            return {f"{kind}.{k}": v for k, v in node.stage.select(dump, node.part).items()}
        out: dict[str, Any] = {}
        for f in node.stage.fields:
            if f.startswith("@"):
                ref_field, _, path = f[1:].partition(".")
                address = dump.get(ref_field)
                if not address:
                    out[f"{ref_field}.{path}"] = None
                    continue
                ref = self.specs.get(address)
                out[f"{ref.kind}.{path}" if path else ref.kind] = _get_path(ref.dump, path)
            else:
                out[f"{kind}.{f}"] = _get_path(dump, f)
        return out

    def file_inputs(self, node: Node) -> list[tuple[str, Path]]:
        """(key path, absolute path) of every file input, sorted (memoised per command)."""
        if node.id not in self._file_paths:
            self._file_paths[node.id] = [(k, Path(f)) for k, f in self.file_input_strs(node)]
        return self._file_paths[node.id]

    def file_input_strs(self, node: Node) -> list[tuple[str, str]]:
        """``file_inputs`` as strings (no Path objects: cheap at 200,000 files). Each listed file's
        stat signature, taken while listing it, is left in ``file_sigs`` for the state DB and the
        no-op record, so a file is stat'ed once per command."""
        if node.id not in self._file_inputs:
            self._file_inputs[node.id] = self._expand_files(node)
        return self._file_inputs[node.id]

    def _expand_files(self, node: Node) -> list[tuple[str, str]]:
        out: dict[str, str] = {}
        for pattern in node.file_patterns:
            p = Path(os.path.expanduser(pattern))
            if not p.is_absolute():
                p = self.root / p
            if GLOB_CHARS & set(pattern):
                base = _glob_base(p)
                self._watch(base, recursive="**" in pattern)
                for m in sorted(globmod.glob(str(p), recursive=True)):
                    self._add_path(node, out, m, str(base))
            else:
                try:
                    st = os.stat(p)
                except OSError:
                    raise TargetError(f"{node.id}: file input {pattern} does not exist") from None
                if stat.S_ISDIR(st.st_mode):
                    self._add_tree(node, out, str(p), str(p.parent), dirs=self.watched_dirs)
                elif stat.S_ISREG(st.st_mode):
                    self._add_path(node, out, str(p), str(p.parent))
                else:
                    raise TargetError(f"{node.id}: file input {pattern} does not exist")
        return [(k, out[k]) for k in sorted(out)]  # sorting the keys alone: no tuple comparisons

    def _add_path(self, node: Node, out: dict[str, str], path: str, base: str) -> None:
        """A glob match or a named file: a directory adds its files, a regular file itself."""
        try:
            lst = os.lstat(path)
            st = os.stat(path) if stat.S_ISLNK(lst.st_mode) else lst
        except OSError:
            return  # vanished, or a dangling link: as before, not an input
        if stat.S_ISDIR(st.st_mode):
            self._add_tree(node, out, path, base, dirs=None)
        elif stat.S_ISREG(st.st_mode):
            self._check_inside(node, path, stat.S_ISLNK(lst.st_mode))
            self.file_sigs[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            out[self._key_prefix(os.path.dirname(path), base) + os.path.basename(path)] = path

    def _add_tree(self, node: Node, out: dict[str, str], top: str, base: str, dirs: set[str] | None) -> None:
        """Every file below ``top`` through ``os.scandir`` (one stat a file, from its entry).

        Symlinks to files are inputs (their target is checked to lie inside an allowed root);
        symlinks to directories are neither followed nor inputs, as with ``keys.list_files``."""
        prefix = self._key_prefix(top, base)
        real_top = os.path.realpath(top)
        top_inside = self._inside(real_top)  # then so is every non-link below it
        sigs = self.file_sigs
        stack = [(top, real_top, prefix)]
        while stack:
            d, real_d, pre = stack.pop()
            if dirs is not None:
                dirs.add(d)
            with os.scandir(d) as it:
                for e in it:  # the hot loop at 200,000 files: keep the common case short
                    if e.is_dir(follow_symlinks=False):
                        stack.append((e.path, f"{real_d}/{e.name}", f"{pre}{e.name}/"))
                        continue
                    path = e.path
                    if e.is_symlink():
                        try:
                            st = e.stat()
                        except OSError:
                            st = None  # dangling link: listed, and reading it fails as before
                        if st is not None and stat.S_ISDIR(st.st_mode):
                            continue  # a linked dir's files are not inputs
                        self._check_inside(node, path, True)
                        if st is None:
                            out[pre + e.name] = path
                            continue
                    else:
                        st = e.stat(follow_symlinks=False)
                        if not top_inside and not self._inside(f"{real_d}/{e.name}"):
                            self._check_inside(node, path, False)
                    sigs[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    out[pre + e.name] = path

    def _key_prefix(self, d: str, base: str) -> str:
        """Key path prefix of files in directory ``d``: relative to the root (lexically, like
        ``Path.relative_to``), else ``@/`` + relative to ``base``."""
        root = str(self.root)
        for anchor, head in ((root, ""), (base, "@/")):
            if d == anchor:
                return head
            if d.startswith(anchor.rstrip("/") + "/"):
                return head + d[len(anchor.rstrip("/")) + 1:] + "/"
        return "@/"  # not reached: d is always below base

    def _inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in self._allowed)

    def _check_real(self, node: Node, f: str, real: str) -> None:
        if not self._inside(real):
            shown = f if f == real else f"{f} → {real}"
            raise TargetError(f"{node.id}: file input {shown} is outside the workspace; add its directory to "
                              f"[workspace] allow_paths in genesis.toml to read it")

    def _check_inside(self, node: Node, f: str, link: bool) -> None:
        d = os.path.dirname(f)
        real_d = self._real_dirs.get(d)
        if real_d is None:
            real_d = self._real_dirs[d] = os.path.realpath(d)
        self._check_real(node, f, os.path.realpath(f) if link else f"{real_d}/{os.path.basename(f)}")

    def _watch(self, base: Path, recursive: bool) -> None:
        self.watched_dirs.add(str(base))
        if recursive and base.is_dir():
            for dirpath, _, _ in os.walk(base):
                self.watched_dirs.add(dirpath)
        elif base.is_dir():
            for child in base.iterdir():
                if child.is_dir():
                    self.watched_dirs.add(str(child))

    def pinned(self, node: Node) -> dict[str, Any]:
        """The stage's ``pin`` material of ``node`` (what it reads from outside the workspace, e.g. a
        hub dataset's commit sha), computed once per command and memoised, an ``Unresolved`` too:
        the hook may ask the network, and status, keys and the build all need it."""
        if node.id not in self._pins:
            try:
                self._pins[node.id] = node.stage.node_pin(self.view(node.spec), node.part)
            except Unresolved as e:
                self._pins[node.id] = e
        got = self._pins[node.id]
        if isinstance(got, Unresolved):
            raise got
        return got

    def has_pins(self) -> bool:
        """Whether any node computed so far has pin material (or could not resolve it)."""
        return any(v for v in self._pins.values())

    def key_material(self, node: Node, input_digests: dict[str, str], file_digests: dict[str, str]) -> dict[str, Any]:
        """Everything the node's key is made of (raises ``Unresolved`` when its ``pin`` cannot be resolved)."""
        material = {
            "schema": KEY_SCHEMA,
            "stage": node.stage.name,
            "version": node.stage.version,
            "part": node.part,
            "spec": self.spec_values(node),
            "inputs": input_digests,
            "files": file_digests,
        }
        pinned = self.pinned(node) if node.stage.pin else {}
        if pinned:  # only then: the keys of every stage without pins stay what they were
            material["external"] = pinned
        return material


FILES_EXCLUDE = "@files"  # in trajectory_exclude: file input digests are not part of the run dir's identity


def trajectory_material(material: dict[str, Any], exclude: tuple[str, ...], kind: str) -> dict[str, Any]:
    """Key material minus fields that only extend a run (``training.steps``); with ``@files`` also
    minus the file digests (a stage that checks its inputs per item keeps its run dir across edits)."""
    spec = {}
    for k, v in material["spec"].items():
        spec[k] = v
    if FILES_EXCLUDE in exclude:
        material = {**material, "files": {}}
    for path in exclude:
        if path == FILES_EXCLUDE:
            continue
        full = f"{kind}.{path}"
        for k in list(spec):
            if full == k:
                del spec[k]
            elif full.startswith(k + "."):
                spec[k] = _without(spec[k], full[len(k) + 1 :].split("."))
    return {**material, "spec": spec, "trajectory": True}


def _without(value: Any, path: list[str]) -> Any:
    if not isinstance(value, dict) or not path:
        return value
    if len(path) == 1:
        return {k: v for k, v in value.items() if k != path[0]}
    return {k: (_without(v, path[1:]) if k == path[0] else v) for k, v in value.items()}


def _get_path(data: Any, path: str) -> Any:
    cur = data
    for part in path.split(".") if path else []:
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit():
            cur = cur[int(part)]
        else:
            return None
    return cur


def _glob_base(p: Path) -> Path:
    parts = []
    for part in p.parts:
        if GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path, for human-readable diffs."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def describe_changes(old: dict[str, Any] | None, new: dict[str, Any], limit: int | None = 3) -> list[str]:
    """Why a node's key differs from its last build: named fields, inputs, files, version."""
    if old is None:
        return ["never built"]
    reasons: list[str] = []
    if old.get("schema") != new.get("schema"):
        reasons.append(f"key schema {old.get('schema')}→{new.get('schema')}")
    if old.get("version") != new.get("version"):
        reasons.append(f"stage version {old.get('version')}→{new.get('version')}")
    fo, fn = flatten(old.get("spec", {})), flatten(new.get("spec", {}))
    for k in sorted(fo.keys() | fn.keys()):
        if k not in fn:
            reasons.append(f"spec field {k} removed")
        elif k not in fo:
            reasons.append(f"spec field {k} added")
        elif fo[k] != fn[k]:
            reasons.append(f"spec field {k} changed {_change(fo[k], fn[k])}")
    eo, en = flatten(old.get("external", {})), flatten(new.get("external", {}))
    for k in sorted(eo.keys() | en.keys()):
        if eo.get(k) != en.get(k):  # a pinned outside thing moved (a hub branch now at another commit)
            reasons.append(f"external {k} changed {_change(eo.get(k), en.get(k))}")
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for k in sorted(oi.keys() | ni.keys()):
        if oi.get(k) != ni.get(k):
            reasons.append(f"input {k} " + ("added" if k not in oi else "removed" if k not in ni else "digest changed"))
    of, nf = old.get("files", {}), new.get("files", {})
    added = sorted(nf.keys() - of.keys())
    removed = sorted(of.keys() - nf.keys())
    changed = sorted(k for k in nf.keys() & of.keys() if nf[k] != of[k])
    for label, items in (("added", added), ("removed", removed), ("changed", changed)):
        if items:
            more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
            reasons.append(f"file {items[0]} {label}{more}")
    if not reasons:
        reasons.append("key changed")
    return reasons if limit is None else reasons[:limit] + ([f"… {len(reasons) - limit} more"] if len(reasons) > limit else [])


def _short(v: Any) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 40 else s[:37] + "…"


def _change(old: Any, new: Any) -> str:
    """``old→new``; two long texts are shown around their first difference."""
    if not (isinstance(old, str) and isinstance(new, str)) or max(len(old), len(new)) <= 38:
        return f"{_short(old)}→{_short(new)}"
    i = next((n for n, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    start = max(0, i - 12)

    def window(t: str) -> str:
        part = t[start:start + 30]
        return repr(("…" if start else "") + part + ("…" if start + 30 < len(t) else ""))

    return f"{window(old)}→{window(new)}"
