"""Seeded spec fuzzer: mutate every spec of a workspace and run each mutation through the real CLI.

    python tests/reliability/spec_fuzz.py --workspace WS --seed 1 --out results.json [--sample 20]

For every spec file ``specs/<kind>/<name>.toml`` it finds a target whose ``--dry-run`` loads that spec
(the first candidate for which a deliberately broken copy of the file makes the CLI name it), checks
the unmutated spec passes, then generates mutations — unknown fields (typos and novel names), wrong
types, negative and huge numbers, non-finite floats, missing required fields, missing / wrong-kind /
path-escaping references, ``extends`` and reference cycles, invalid TOML, non-UTF-8 bytes, and
cross-field ones (heads not dividing hidden, batch not divisible by the world size, vocab sizes) —
and runs each through ``genesis_build.cli.main(["--dry-run", TARGET])`` in this process (stdout and
stderr captured). A sample of ``--sample`` mutations is also run through real ``genesis-build``
subprocesses, half of them as real builds. Every run is classified:

* ``rejected``: exit code 2, exactly one stderr line ``error: specs/<file>.toml:<line>: <field>: …``
  naming the mutated file (and field where there is one), no traceback, cache byte-identical;
* ``accepted``: exit code 0 (a silent acceptance: a finding unless listed as a known gap);
* ``bad``: anything else (traceback, wrong exit code, several lines, no file/field, cache changed).

Spec files are written with temp file + rename (a new inode each time) and restored after each
mutation. This module imports only the stdlib and ``genesis_build`` (plus the workspace's plugins).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ERROR_RE = re.compile(r"^error: (specs/[^\s:]+\.toml):(\d+): (.+)$")
REF_RE = re.compile(r"^([a-z][a-z0-9_-]*):([A-Za-z0-9][A-Za-z0-9._-]*)$")
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
HEAD_FIELDS = ("num_heads", "n_heads", "heads", "num_attention_heads")
HIDDEN_FIELDS = ("hidden_size", "d_model", "hidden", "n_embd")


# ------------------------------------------------------------------------------------------------
# TOML writing (tomllib only reads)


def _key(k: str) -> str:
    return k if BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_dumps(data: dict[str, Any]) -> str:
    """Serialise a TOML document: scalars first, then ``[tables]`` and ``[[arrays of tables]]``."""
    lines: list[str] = []

    def emit(table: dict[str, Any], path: list[str]) -> None:
        for k, v in table.items():
            if not isinstance(v, dict) and not _is_table_array(v):
                lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in table.items():
            if isinstance(v, dict):
                lines.append("")
                lines.append("[" + ".".join(_key(p) for p in [*path, k]) + "]")
                emit(v, [*path, k])
            elif _is_table_array(v):
                for item in v:
                    lines.append("")
                    lines.append("[[" + ".".join(_key(p) for p in [*path, k]) + "]]")
                    emit(item, [*path, k])

    emit(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------
# pydantic model introspection


def _model_in(ann: Any) -> Any:
    """The pydantic model class inside an annotation (``Foo``, ``Foo | None``), else None."""
    if ann is None:
        return None
    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        return ann
    if typing.get_origin(ann) in (dict, list, tuple, set):
        return None
    for arg in typing.get_args(ann):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _container_arg(ann: Any, origins: tuple[type, ...], index: int) -> Any:
    if ann is None:
        return None
    if typing.get_origin(ann) in origins:
        args = typing.get_args(ann)
        if not args:
            return None
        if index == -1 or len(args) <= index:
            return args[-1] if args[-1] is not Ellipsis else args[0]
        return args[index]
    for arg in typing.get_args(ann):
        found = _container_arg(arg, origins, index)
        if found is not None:
            return found
    return None


def _field(model: Any, name: str) -> Any:
    fields = model.model_fields
    if name in fields:
        return fields[name]
    for f in fields.values():
        if f.alias == name:
            return f
    return None


@dataclass
class Shape:
    """What a merged spec looks like, as seen through its pydantic model."""

    tables: list[tuple[tuple, Any]] = field(default_factory=list)  # (path, model class) of model-typed tables
    leaves: list[tuple[tuple, Any, Any, str]] = field(default_factory=list)  # (path, value, annotation, what)


def walk(value: Any, ann: Any, path: tuple = (), shape: Shape | None = None) -> Shape:
    """Every table and leaf of a merged spec with its annotation."""
    shape = shape or Shape()
    model = _model_in(ann)
    if isinstance(value, dict):
        if model is not None:
            shape.tables.append((path, model))
            for k, v in value.items():
                f = _field(model, k)
                walk(v, f.annotation if f else None, (*path, k), shape)
        else:
            inner = _container_arg(ann, (dict,), 1)
            for k, v in value.items():
                walk(v, inner, (*path, k), shape)
        if path:
            shape.leaves.append((path, value, ann, "table" if model is not None else "dict"))
    elif isinstance(value, list):
        shape.leaves.append((path, value, ann, "list"))
        for i, v in enumerate(value):
            walk(v, _container_arg(ann, (list, tuple, set), min(i, 1) if typing.get_origin(ann) is tuple else 0),
                 (*path, i), shape)
    else:
        shape.leaves.append((path, value, ann, "scalar"))
    return shape


def dotted(kind: str, path: tuple) -> str:
    """``model.architecture.num_heads`` / ``text.parts[1]`` as the engine prints it."""
    out = kind
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


# ------------------------------------------------------------------------------------------------
# specs on disk


@dataclass
class SpecFile:
    """One spec file with its own data and the data merged over its ``extends`` chain."""

    address: str
    kind: str
    name: str
    rel: str
    text: bytes
    own: dict[str, Any]
    parent: dict[str, Any]  # merged data of the extends chain above this file ({} without extends)
    merged: dict[str, Any]


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_specs(ws: Path) -> tuple[list[SpecFile], dict[str, str]]:
    """Parsable spec files of the workspace (others are reported as baseline problems)."""
    import tomllib

    raw: dict[str, dict[str, Any]] = {}
    texts: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for p in sorted((ws / "specs").glob("*/*.toml")):
        address = f"{p.parent.name}:{p.stem}"
        texts[address] = p.read_bytes()
        try:
            raw[address] = tomllib.loads(texts[address].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            problems[address] = f"unparsable: {e}"

    def merged_of(address: str, stack: tuple[str, ...] = ()) -> dict[str, Any]:
        data = dict(raw.get(address, {}))
        parent = data.pop("extends", None)
        if isinstance(parent, str) and parent in raw and parent not in stack:
            return _deep_merge(merged_of(parent, (*stack, address)), data)
        return data

    out = []
    for address, data in raw.items():
        kind, name = address.split(":", 1)
        parent = data.get("extends")
        pdata = merged_of(parent, (address,)) if isinstance(parent, str) and parent in raw else {}
        out.append(SpecFile(address, kind, name, f"specs/{kind}/{name}.toml", texts[address], data, pdata,
                            merged_of(address)))
    return out, problems


# ------------------------------------------------------------------------------------------------
# mutations


@dataclass
class Mutation:
    """One seeded change to one or two spec files, with what the error must say."""

    id: str
    address: str
    mtype: str
    path: str  # dotted field path ("" for whole-file mutations)
    files: dict[str, bytes]  # workspace-relative path → new content
    expect_files: list[str]  # the error must name one of these
    expect_field: str | None = None  # the error must name this (dotted, engine style)
    exact_field: bool = False  # the error's field must be exactly expect_field
    expect_text: str | None = None  # and contain this
    note: str = ""


def _ensure(own: dict[str, Any], merged: dict[str, Any], path: tuple) -> tuple[Any, Any]:
    """Make ``own`` hold the containers along ``path[:-1]`` (copying lists from ``merged``, since
    ``extends`` replaces lists rather than merging them); return (container, last key)."""
    cur, mcur = own, merged
    for p in path[:-1]:
        mnext = _get(mcur, p)
        if isinstance(cur, dict) and not isinstance(cur.get(p), (dict, list)):
            cur[p] = copy.deepcopy(mnext) if isinstance(mnext, list) else {}
        cur, mcur = cur[p], mnext
    return cur, path[-1]


def _get(data: Any, p: Any) -> Any:
    if isinstance(data, dict):
        return data.get(p)
    if isinstance(data, list) and isinstance(p, int) and p < len(data):
        return data[p]
    return None


def set_in(spec: SpecFile, path: tuple, value: Any) -> dict[str, Any]:
    """A copy of the spec's own data with ``path`` set (created in this file, overriding a parent)."""
    own = copy.deepcopy(spec.own)
    container, last = _ensure(own, spec.merged, path)
    container[last] = value
    return own


def _is_ref(v: Any, kinds: dict[str, Any]) -> bool:
    return isinstance(v, str) and bool(REF_RE.match(v)) and v.split(":", 1)[0] in kinds


def _typo(name: str, r: random.Random) -> str:
    if len(name) < 4:
        return name + name[-1]
    i = r.randrange(1, len(name) - 1)
    return name[:i] + name[i + 1:] if r.random() < 0.5 else name[:i] + name[i + 1] + name[i] + name[i + 2:]


def _line_starts(text: bytes) -> list[int]:
    starts = [0]
    for i, b in enumerate(text):
        if b == 0x0A and i + 1 < len(text):
            starts.append(i + 1)
    return starts


def _stratified(muts: list[Mutation], cap: int, r: random.Random) -> list[Mutation]:
    """A seeded sample of ``cap`` mutations that keeps every mutation type (round-robin over types)."""
    groups: dict[str, list[Mutation]] = {}
    for m in muts:
        groups.setdefault(m.mtype, []).append(m)
    for g in groups.values():
        r.shuffle(g)
    picked: list[Mutation] = []
    while len(picked) < cap:
        for g in groups.values():
            if g and len(picked) < cap:
                picked.append(g.pop())
    return sorted(picked, key=lambda m: m.id)


def generate(specs: list[SpecFile], kinds: dict[str, Any], seed: int, per_spec_cap: int = 80) -> list[Mutation]:
    """Every mutation for every spec (deterministic for a seed and the specs' contents)."""
    by_kind: dict[str, list[SpecFile]] = {}
    for s in specs:
        by_kind.setdefault(s.kind, []).append(s)
    out: list[Mutation] = []
    for spec in specs:
        r = random.Random(f"{seed}:{spec.address}")
        model = kinds[spec.kind].model
        shape = walk(spec.merged, model)
        muts: list[Mutation] = []
        own_file = [spec.rel]

        def add(mtype: str, path: tuple, own: dict[str, Any] | None = None, raw: bytes | None = None,
                variant: str = "", **kw: Any) -> None:
            content = raw if raw is not None else toml_dumps(own).encode()  # type: ignore[arg-type]
            dp = dotted(spec.kind, path) if path else ""
            files = kw.pop("files", None) or {spec.rel: content}
            muts.append(Mutation(id=f"{spec.address}|{mtype}|{dp}|{variant}", address=spec.address, mtype=mtype,
                                 path=dp, files=files, expect_files=kw.pop("expect_files", own_file), **kw))

        # -- unknown fields: a typo of a known field and a novel name, in every model-typed table
        for path, tmodel in shape.tables:
            present = [k for k in _table_at(spec.merged, path) if isinstance(k, str)]
            if present:
                name = _typo(r.choice(sorted(present)), r)
                if _field(tmodel, name) is None:
                    add("unknown_field", (*path, name), set_in(spec, (*path, name), 1), variant="typo",
                        expect_field=dotted(spec.kind, (*path, name)), exact_field=True, expect_text="unknown field")
            name = f"zz_unknown_{r.randrange(1000)}"
            add("unknown_field", (*path, name), set_in(spec, (*path, name), "x"), variant="novel",
                expect_field=dotted(spec.kind, (*path, name)), exact_field=True, expect_text="unknown field")
            # -- a required field deleted from the file that defines it (and not inherited)
            for fname, f in tmodel.model_fields.items():
                key = f.alias or fname
                if f.is_required() and _has(spec.own, (*path, key)) and not _has(spec.parent, (*path, key)):
                    own = copy.deepcopy(spec.own)
                    del _table_at(own, path)[key]
                    add("missing_required", (*path, key), own, expect_field=dotted(spec.kind, (*path, key)),
                        exact_field=True, expect_text="required field is missing")

        for path, value, ann, what in shape.leaves:
            parent_field = dotted(spec.kind, path[:-1] if len(path) > 1 else path)
            if any(isinstance(p, int) for p in path) and what != "scalar":
                continue
            # -- wrong types
            if what in ("table", "dict"):
                add("wrong_type", path, set_in(spec, path, 7), variant="table->int",
                    expect_field=dotted(spec.kind, path), exact_field=True)
            elif what == "list":
                add("wrong_type", path, set_in(spec, path, "not-a-list"), variant="list->str",
                    expect_field=dotted(spec.kind, path))
            elif isinstance(value, bool):
                for variant, bad in (("bool->str", "yes please"), ("bool->int", 7), ("bool->list", [True]),
                                     ("bool->table", {"a": 1})):
                    add("wrong_type", path, set_in(spec, path, bad), variant=variant,
                        expect_field=dotted(spec.kind, path))
                # the error quotes the value: text that looks like rich markup must come out verbatim
                add("markup_text", path, set_in(spec, path, "[/x] [bold]"), variant="bool->'[/x] [bold]'",
                    expect_field=dotted(spec.kind, path), expect_text="[/x] [bold]")
            elif isinstance(value, (int, float)):
                wrong: tuple = (("number->str", "twelve"), ("number->list", [value]), ("number->table", {"a": 1}))
                if isinstance(value, int) and not _admits(ann, float):  # a float field written as 24 takes 24.5
                    wrong += (("int->fraction", value + 0.5),)
                for variant, bad in wrong:
                    add("wrong_type", path, set_in(spec, path, bad), variant=variant,
                        expect_field=dotted(spec.kind, path))
                if value > 0 and not re.search(r"seed", str(path[-1])):
                    add("negative", path, set_in(spec, path, -value if r.random() < 0.5 else -1), variant="",
                        expect_field=parent_field)
                if isinstance(value, int):
                    add("huge", path, set_in(spec, path, 10**30), variant="10**30 (beyond TOML's 64-bit integers)",
                        expect_field=parent_field)
                else:
                    add("non_finite", path, set_in(spec, path, math.inf), variant="inf", expect_field=parent_field)
                    add("non_finite", path, set_in(spec, path, math.nan), variant="nan", expect_field=parent_field)
            elif isinstance(value, str):
                if _is_ref(value, kinds):
                    rkind = value.split(":", 1)[0]
                    add("missing_ref", path, set_in(spec, path, f"{rkind}:zz-missing"),
                        expect_field=dotted(spec.kind, path), expect_text="not found")
                    add("ref_escape", path, set_in(spec, path, f"{rkind}:../../../etc/passwd"),
                        expect_field=dotted(spec.kind, path))
                    others = [o for o in specs if o.kind != rkind and o.kind != spec.kind]
                    if others:
                        o = r.choice(others)
                        add("wrong_kind_ref", path, set_in(spec, path, o.address), variant=o.address,
                            expect_field=dotted(spec.kind, path))
                    if rkind == spec.kind:  # a reference to its own kind: point it at itself
                        add("ref_cycle", path, set_in(spec, path, spec.address), variant="self",
                            expect_field=dotted(spec.kind, path), expect_text="cycle")
                    target = next((o for o in specs if o.address == value), None)
                    if target is not None and target.kind != spec.kind:
                        _ref_back(spec, target, kinds, add)
                else:
                    for variant, bad in (("str->int", 12345), ("str->bool", True), ("str->table", {"a": "b"})):
                        add("wrong_type", path, set_in(spec, path, bad), variant=variant,
                            expect_field=dotted(spec.kind, path))

        # -- cross-field mutations
        for path, _tmodel in shape.tables:
            table = _table_at(spec.merged, path)
            hidden = next((h for h in HIDDEN_FIELDS if isinstance(table.get(h), int)), None)
            heads = next((h for h in HEAD_FIELDS if isinstance(table.get(h), int)), None)
            if hidden and heads and table[hidden] > 2:
                bad = next(h for h in range(3, table[hidden] + 2) if table[hidden] % h)
                add("heads_not_dividing", (*path, heads), set_in(spec, (*path, heads), bad), variant=str(bad),
                    expect_field=dotted(spec.kind, path))
            if heads and isinstance(table.get("num_kv_heads"), int) or heads and "num_kv_heads" in _model_fields(_tmodel):
                nh = table[heads]
                bad = next((h for h in range(2, nh + 3) if nh % h), nh + 1)
                add("kv_heads_not_dividing", (*path, "num_kv_heads"), set_in(spec, (*path, "num_kv_heads"), bad),
                    variant=str(bad), expect_field=dotted(spec.kind, path))
            if isinstance(table.get("vocab_size"), int):
                add("vocab_too_small", (*path, "vocab_size"), set_in(spec, (*path, "vocab_size"), 7),
                    expect_field=dotted(spec.kind, path))
        _batch_mutations(spec, specs, kinds, add)

        # -- references to specs that are not there, and extends cycles
        add("missing_ref", ("extends",), {**spec.own, "extends": f"{spec.kind}:zz-missing"}, variant="extends",
            expect_text="not found")
        same = [o for o in by_kind[spec.kind] if o.address != spec.address and "extends" not in o.own]
        if "extends" not in spec.own:
            add("extends_cycle", ("extends",), {**spec.own, "extends": spec.address}, variant="self",
                expect_text="cycle")
        if same and "extends" not in spec.own:
            o = r.choice(same)
            files = {spec.rel: toml_dumps({**spec.own, "extends": o.address}).encode(),
                     o.rel: toml_dumps({**o.own, "extends": spec.address}).encode()}
            add("extends_cycle", ("extends",), files=files, variant=o.address, raw=b"",
                expect_files=[spec.rel, o.rel], expect_text="cycle")
        add("wrong_type", ("extends",), {**spec.own, "extends": 3}, variant="extends->int")

        # -- files that are not TOML or not UTF-8 (textual, on the original bytes)
        text = spec.text
        starts = _line_starts(text)
        for variant, insert in (("stray '='", b"= broken\n"), ("unterminated string", b'zz = "abc\n'),
                                ("unclosed table", b"[broken\n"), ("bare word", b"hello world\n"),
                                ("unclosed array", b"zz = [1, 2\n"), ("missing value", b"zz =\n"),
                                ("bad escape", b'zz = "\\q"\n'), ("bad date", b"zz = 2024-13-45\n"),
                                ("leading zero", b"zz = 012\n")):
            # a line start inside a multi-line string would keep the file valid: take one that breaks it
            for at in r.sample(starts, len(starts)):
                broken = text[:at] + insert + text[at:]
                if not _parses(broken):
                    add("invalid_toml", (), raw=broken, variant=f"{variant} at byte {at}", expect_text="invalid TOML")
                    break
        dup = _first_key_line(text)
        if dup is not None:
            a, b = dup
            add("invalid_toml", (), raw=text[:b] + text[a:b] + text[b:], variant="duplicate key",
                expect_text="invalid TOML")
        for variant, junk in (("\\xff", b"\xff"), ("latin-1 e-acute", b"caf\xe9"), ("truncated utf-8", b"\xe2\x82")):
            at = r.choice(starts)
            add("non_utf8", (), raw=text[:at] + b"# " + junk + b"\n" + text[at:], variant=f"{variant} at byte {at}",
                expect_text="not valid UTF-8")

        if len(muts) > per_spec_cap:
            muts = _stratified(muts, per_spec_cap, r)
        out += muts
    return out


def _admits(ann: Any, tp: type) -> bool:
    """Whether an annotation accepts values of type ``tp`` (``float``, ``float | None`` …)."""
    if ann is tp:
        return True
    return any(_admits(a, tp) for a in typing.get_args(ann))


def _parses(text: bytes) -> bool:
    import tomllib

    try:
        tomllib.loads(text.decode("utf-8"))
        return True
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def _model_fields(model: Any) -> dict[str, Any]:
    return getattr(model, "model_fields", {}) or {}


def _table_at(data: dict[str, Any], path: tuple) -> Any:
    cur: Any = data
    for p in path:
        cur = cur[p]
    return cur


def _has(data: dict[str, Any], path: tuple) -> bool:
    cur: Any = data
    for p in path:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            return False
    return True


def _first_key_line(text: bytes) -> tuple[int, int] | None:
    """Byte span of the first one-line ``key = value`` of the top-level table (to duplicate it)."""
    pos = 0
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s.startswith(b"["):
            return None
        if line.endswith(b"\n") and re.match(rb"^[A-Za-z0-9_-]+\s*=\s*[^\[{\"']", s):
            return pos, pos + len(line)
        pos += len(line)
    return None


def _ref_back(spec: SpecFile, target: SpecFile, kinds: dict[str, Any], add: Any) -> None:
    """Reference cycle across kinds: make the referenced spec refer back (if its model has such a field)."""
    for path, value, _ann, what in walk(target.merged, kinds[target.kind].model).leaves:
        if what == "scalar" and _is_ref(value, kinds) and value.split(":", 1)[0] == spec.kind:
            own = copy.deepcopy(target.own)
            container, last = _ensure(own, target.merged, path)
            container[last] = spec.address
            add("ref_cycle", path, files={target.rel: toml_dumps(own).encode()}, raw=b"", variant=f"via {target.address}",
                expect_files=[spec.rel, target.rel], expect_text="cycle")
            return


def _batch_mutations(spec: SpecFile, specs: list[SpecFile], kinds: dict[str, Any], add: Any) -> None:
    """A global batch that the parallel layout cannot split evenly (sequences per step not divisible by
    the world size), and a world size that does not divide the batch."""
    training = spec.merged.get("training")
    arch = spec.merged.get("architecture")
    if isinstance(training, dict) and isinstance(arch, dict) and isinstance(training.get("global_batch_tokens"), int) \
            and isinstance(arch.get("context_length"), int):
        ctx = arch["context_length"]
        par = next((s for s in specs if s.address == spec.merged.get("parallel")), None)
        if par is not None and par.merged.get("layout", "given") != "auto":  # auto picks a micro-batch that divides
            add("batch_not_divisible", ("training", "global_batch_tokens"),
                set_in(spec, ("training", "global_batch_tokens"), ctx * 3), variant="3 sequences",
                expect_files=_with_parallel(spec, specs), note="3 sequences per step on a world size of 2")
        add("batch_not_divisible", ("training", "global_batch_tokens"),
            set_in(spec, ("training", "global_batch_tokens"), ctx * 4 + ctx // 2), variant="half a sequence",
            expect_files=_with_parallel(spec, specs), note="global_batch_tokens not a multiple of context_length")
    if spec.kind == "parallel" and isinstance(spec.merged.get("nproc_per_node"), int):
        add("batch_not_divisible", ("nproc_per_node",), set_in(spec, ("nproc_per_node",), 7), variant="world size 7",
            expect_files=[spec.rel, *[s.rel for s in specs if s.kind == "model"]],
            note="a world size of 7 splits no power-of-two batch")


def _with_parallel(spec: SpecFile, specs: list[SpecFile]) -> list[str]:
    par = spec.merged.get("parallel")
    return [spec.rel, *[s.rel for s in specs if s.address == par or s.kind == "parallel"]]


# ------------------------------------------------------------------------------------------------
# running the CLI in this process


@dataclass
class CliResult:
    """One CLI run."""

    rc: Any
    out: str
    err: str
    seconds: float


def run_cli(args: list[str]) -> CliResult:
    """``genesis_build.cli.main(args)`` with stdout/stderr captured; an escaping exception is a traceback."""
    from genesis_build import cli

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc: Any = cli.main(args)
        except SystemExit as e:
            rc = e.code
        except Exception:  # noqa: BLE001 — what a user would have seen
            rc = "exception"
            err.write(traceback.format_exc())
    return CliResult(rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace a file with temp file + rename (a new inode, like most editors)."""
    tmp = path.with_name(f".{path.name}.fuzz.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def applied(ws: Path, files: dict[str, bytes]) -> Iterator[None]:
    """Write mutated files, restore the originals afterwards (byte for byte)."""
    saved = {rel: (ws / rel).read_bytes() for rel in files}
    try:
        for rel, data in files.items():
            write_atomic(ws / rel, data)
        yield
    finally:
        for rel, data in saved.items():
            write_atomic(ws / rel, data)


def tree_snapshot(root: Path) -> dict[str, Any]:
    """Every entry under the cache: files by size and xxh3, dirs, symlinks."""
    from genesis_build.keys import digest_file

    snap: dict[str, Any] = {}
    if not root.exists():
        return snap
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                snap[rel] = ["link", os.readlink(p)]
            elif p.is_dir():
                snap[rel] = ["dir"]
            else:
                snap[rel] = ["file", p.stat().st_size, digest_file(p)]
    return snap


def classify(m: Mutation, res: CliResult, cache_same: bool) -> tuple[str, str]:
    """``rejected`` / ``accepted`` / ``bad`` with the reason."""
    if not cache_same:
        return "bad", "the cache changed"
    if "Traceback (most recent call last)" in res.out + res.err:
        return "bad", "traceback: " + res.err.strip().splitlines()[-1][:300]
    if res.rc == 0:
        return "accepted", "exit code 0"
    if res.rc != 2:
        return "bad", f"exit code {res.rc}"
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    if len(lines) != 1:
        return "bad", f"{len(lines)} stderr lines: {res.err[:300]!r}"
    line = lines[0]
    hit = ERROR_RE.match(line)
    if not hit:
        return "bad", f"no specs/<file>.toml:<line>: in {line!r}"
    where, rest = hit.group(1), hit.group(3)
    if where not in m.expect_files:
        return "bad", f"names {where}, expected {' or '.join(m.expect_files)}: {line!r}"
    if m.expect_field:
        if m.exact_field and not rest.startswith(m.expect_field + ":"):
            return "bad", f"field is not {m.expect_field}: {line!r}"
        if not m.exact_field and m.expect_field not in rest:
            return "bad", f"does not name {m.expect_field}: {line!r}"
    elif not re.match(r"^(invalid TOML|not valid UTF-8|[a-z][a-z0-9_-]*[.\[]|extends\b)", rest):
        return "bad", f"names no field: {line!r}"
    if m.expect_text and m.expect_text not in rest:
        return "bad", f"does not say {m.expect_text!r}: {line!r}"
    return "rejected", line


# ------------------------------------------------------------------------------------------------
# targets: which CLI target loads a given spec


def candidate_targets(spec: SpecFile, specs: list[SpecFile], default: str | None) -> list[str]:
    """Targets that may load ``spec``: its kind's default stage, its kind's stages, the targets of the
    specs that reference it (two levels), and the workspace default."""
    from genesis_build.stage import kinds, stages

    def own(s: SpecFile) -> list[str]:
        out = []
        k = kinds().get(s.kind)
        if k is not None and k.default_stage:
            out.append(s.address)
        out += [f"{st.name}:{s.name}" for st in stages().values() if st.kind == s.kind]
        return out

    cands = own(spec)
    level = [spec]
    for _ in range(2):
        nxt = []
        for s in level:
            needle = [f'"{s.address}"'.encode(), f"'{s.address}'".encode()]
            for o in specs:
                if o is not s and any(n in o.text for n in needle):
                    cands += own(o)
                    nxt.append(o)
        level = nxt
    if default:
        cands.append(default)
    cands += [t for o in specs for t in own(o)][:12]
    seen: list[str] = []
    for c in cands:
        if c not in seen:
            seen.append(c)
    return seen


def find_target(ws: Path, spec: SpecFile, specs: list[SpecFile], default: str | None) -> tuple[str | None, str]:
    """The first candidate target whose dry-run names this spec when it is broken, and whose dry-run
    passes when it is not; or (None, why)."""
    failures = []
    for t in candidate_targets(spec, specs, default):
        with applied(ws, {spec.rel: b"[[[ canary\n"}):
            res = run_cli(["--dry-run", "-C", str(ws), t])
        if res.rc == 2 and spec.rel in res.err:
            base = run_cli(["--dry-run", "-C", str(ws), t])
            if base.rc == 0:
                return t, ""
            failures.append(f"{t}: {(base.err.strip().splitlines() or ['?'])[-1][:300]}")
    if failures:
        return None, "every target that loads it fails unmutated: " + " | ".join(failures[:4])
    return None, "no target loads it"


# ------------------------------------------------------------------------------------------------
# workspaces


def make_real_workspace(repo: Path, dest: Path, cache: Path | None = None) -> Path:
    """A temp copy of the repo's workspace: ``specs/`` and ``genesis.toml`` copied (the stage plugins are
    imported from the installed package), other top-level entries and the repo's siblings symlinked so
    workspace-relative data paths resolve, the repo root allowed for file inputs, no remote cache."""
    import shutil
    import tomllib

    dest.mkdir(parents=True, exist_ok=True)
    ws = dest / repo.name
    ws.mkdir()
    shutil.copytree(repo / "specs", ws / "specs")
    for sib in repo.parent.iterdir():  # ../shared/data etc. resolve as they do from the repo
        if sib.name != repo.name and not (dest / sib.name).exists():
            (dest / sib.name).symlink_to(sib)
    skip = {"specs", "cache", "out", "tests", "genesis_build", "stages", "benchmarks", "notes"}
    for entry in repo.iterdir():  # data directories a spec may name relative to the workspace
        if entry.is_dir() and entry.name not in skip and not entry.name.startswith(".") \
                and not entry.name.endswith(".egg-info") and not (ws / entry.name).exists():
            (ws / entry.name).symlink_to(entry)
    conf = tomllib.loads((repo / "genesis.toml").read_text()) if (repo / "genesis.toml").is_file() else {}
    wsconf = conf.get("workspace", {})
    allow = [str((repo / a).resolve()) if not os.path.isabs(a) else a for a in wsconf.get("allow_paths", [])]
    lines = ["[workspace]"]
    if wsconf.get("default"):
        lines.append(f"default = {json.dumps(wsconf['default'])}")
    lines.append(f"cache = {json.dumps(str(cache) if cache else 'cache')}")
    lines.append(f"plugins = {json.dumps(wsconf.get('plugins', ['stages']))}")
    lines.append(f"allow_paths = {json.dumps([str(repo.resolve()), *allow])}")
    (ws / "genesis.toml").write_text("\n".join(lines) + "\n")
    return ws


# ------------------------------------------------------------------------------------------------
# driver


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer over one workspace and write the results as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample", type=int, default=20, help="mutations also run through real subprocesses")
    ap.add_argument("--max", type=int, default=0, help="cap on mutations (0: all)")
    args = ap.parse_args(argv)
    ws = Path(args.workspace).resolve()
    t_start = time.time()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from genesis_build.stage import kinds, load_plugins
    from genesis_build.workspace import load

    wsconf = load(ws)
    sys.path.insert(0, str(ws))
    load_plugins(wsconf.plugins)
    cache_root = wsconf.cache_dir
    specs, unparsable = load_specs(ws)
    specs = [s for s in specs if s.kind in kinds()]
    report: dict[str, Any] = {"workspace": str(ws), "seed": args.seed, "specs": {}, "mutations": [], "subprocess": []}
    for a, why in unparsable.items():
        report["specs"][a] = {"target": None, "skipped": why}
    covered: list[SpecFile] = []
    for s in specs:
        target, why = find_target(ws, s, specs, wsconf.default)
        report["specs"][s.address] = {"target": target, "skipped": why or None}
        if target:
            covered.append(s)
    targets = {s.address: report["specs"][s.address]["target"] for s in covered}
    muts = generate(covered, kinds(), args.seed)
    if args.max and len(muts) > args.max:
        muts = sorted(random.Random(args.seed).sample(muts, args.max), key=lambda m: m.id)
    before = tree_snapshot(cache_root)
    originals = {s.rel: s.text for s in specs}
    results: list[tuple[Mutation, str, CliResult]] = []
    for i, m in enumerate(muts):
        target = targets[m.address]
        with applied(ws, m.files):
            res = run_cli(["--dry-run", "-C", str(ws), target])
        after = tree_snapshot(cache_root)
        outcome, reason = classify(m, res, after == before)
        before = after
        results.append((m, outcome, res))
        report["mutations"].append({"id": m.id, "address": m.address, "kind": m.address.split(":")[0],
                                    "type": m.mtype, "path": m.path, "target": target, "outcome": outcome,
                                    "reason": reason, "rc": res.rc, "seconds": round(res.seconds, 4),
                                    "note": m.note})
        if i % 50 == 49:
            gc.collect()
    # a sample through real subprocesses: the same one line, exit code 2, no cache change
    r = random.Random(f"{args.seed}:subprocess")
    rejected = [(m, res) for m, o, res in results if o == "rejected"]
    for j, (m, res) in enumerate(r.sample(rejected, min(args.sample, len(rejected)))):
        mode = "build" if j % 2 else "dry-run"
        cmd = [sys.executable, "-m", "genesis_build.cli", *(["--dry-run"] if mode == "dry-run" else []), targets[m.address]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
        with applied(ws, m.files):
            snap = tree_snapshot(cache_root)
            p = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
            same = tree_snapshot(cache_root) == snap
        ok = p.returncode == 2 and p.stderr.strip() == res.err.strip() and same and "Traceback" not in p.stdout + p.stderr
        report["subprocess"].append({"id": m.id, "mode": mode, "ok": ok, "rc": p.returncode,
                                     "err": p.stderr.strip()[-500:], "in_process_err": res.err.strip()[-500:],
                                     "cache_same": same})
    report["specs_restored"] = all((ws / rel).read_bytes() == data for rel, data in originals.items())
    report["seconds"] = round(time.time() - t_start, 2)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    counts: dict[str, int] = {}
    for mm in report["mutations"]:
        counts[mm["outcome"]] = counts.get(mm["outcome"], 0) + 1
    print(f"{len(muts)} mutations over {len(covered)} specs in {report['seconds']}s: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
