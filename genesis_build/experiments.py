"""Experiments: ``--set`` overrides, ``--sweep``, ``genesis-build diff`` and ``genesis-build exp``.

An override ``--set model.training.lr=1e-3`` makes an *ephemeral variant* of a spec, exactly like a
spec file that ``extends`` the base and sets one field, except that it lives only in this command's
SpecStore. The variant is named ``<base>@<overrides>`` (``model:tiny@training.lr=0.001``); every
spec that references an overridden spec (transitively) becomes a variant too, with its references
rewritten, so stage hooks that name their inputs with ``spec_name``/``ref_name`` see variant names.
Keys never contain names, only values: nodes whose fields the override does not touch keep their
keys and stay cached, and a repeated override is a no-op.

The workspace keeps a log of the variants it built (``.genesis/experiments.jsonl``) for ``exp``
and so a built variant's name works as a target; ``diff`` and ``exp`` are in ``compare.py``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import GenesisError
from .specs import RawSpec, SpecStore, did_you_mean, find_refs

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
LOG_NAME = "experiments.jsonl"


# --------------------------------------------------------------------------------------------
# Parsing --set


@dataclass(frozen=True)
class SetArg:
    """One ``--set`` as typed: ``[kind:name.]`` or ``kind.`` address part, field path, parsed value."""

    arg: str  # the original text, for messages
    kind: str
    rest: str  # ``name.field.path`` when addressed, else ``field.path``
    addressed: bool
    value: Any
    flag: str = "--set"


def parse_value(text: str) -> Any:
    """A TOML value (``1e-3``, ``true``, ``"x"``, ``[1, 2]``, ``{a = 1}``); a bare word that is not
    valid TOML (``refusal``) is taken as a string, as a shell user means it."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text and not any(c in text for c in "[]{}\"'=\n"):
            return text
        raise GenesisError(f"invalid TOML value {text!r}") from None
    _check_finite(value)
    return value


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise GenesisError(f"{value} is not allowed (numbers must be finite)")
    if isinstance(value, list):
        for v in value:
            _check_finite(v)
    if isinstance(value, dict):
        for v in value.values():
            _check_finite(v)


def parse_set(arg: str, kinds: Iterable[str], flag: str = "--set") -> SetArg:
    """Parse ``KIND[:NAME].FIELD.PATH=VALUE`` (syntax only; the address is bound later)."""
    lhs, eq, rhs = arg.partition("=")
    where = f"{flag} {arg}"
    if not eq or not lhs.strip():
        raise GenesisError(f"{where}: expected KIND[:NAME].FIELD=VALUE, e.g. model.training.lr=1e-3")
    lhs = lhs.strip()
    m = re.match(r"^([a-z][a-z0-9_-]*)(:|\.)(.+)$", lhs)
    if not m:
        raise GenesisError(f"{where}: expected KIND[:NAME].FIELD=VALUE, e.g. model.training.lr=1e-3")
    kind = m.group(1)
    kinds = list(kinds)
    if kind not in kinds:
        raise GenesisError(f"{where}: unknown spec kind '{kind}'{did_you_mean(kind, kinds)}")
    try:
        value = parse_value(rhs.strip())
    except GenesisError as e:
        raise GenesisError(f"{where}: {e}") from None
    return SetArg(arg, kind, m.group(3), m.group(2) == ":", value, flag)


def split_sweep(arg: str, kinds: Iterable[str]) -> list[SetArg]:
    """``model.training.lr=1e-3,3e-3`` → one SetArg per value (commas inside []/{}/"" are kept)."""
    lhs, eq, rhs = arg.partition("=")
    if not eq:
        raise GenesisError(f"--sweep {arg}: expected KIND[:NAME].FIELD=V1,V2,…")
    values, depth, cur, quote = [], 0, "", None
    for c in rhs:
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            values.append(cur)
            cur = ""
            continue
        cur += c
    values.append(cur)
    values = [v.strip() for v in values]
    if any(not v for v in values):
        raise GenesisError(f"--sweep {arg}: empty value in the list")
    return [parse_set(f"{lhs}={v}", kinds, flag="--sweep") for v in values]


# --------------------------------------------------------------------------------------------
# One set of overrides → variant specs


@dataclass
class Override:
    """A bound override: which spec, which field, which value."""

    arg: str
    address: str  # base kind:name
    path: tuple[Any, ...]
    value: Any
    flag: str = "--set"

    def as_json(self) -> list[Any]:
        """Serialisable form (the worker rebuilds the variant from it)."""
        return [self.arg, self.address, list(self.path), self.value]

    @property
    def where(self) -> str:
        """``--set ARG`` for messages."""
        return f"{self.flag} {self.arg}"


def _path(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def set_in(data: dict[str, Any], path: tuple[Any, ...], value: Any, where: str, kind: str = "") -> None:
    """Set ``value`` at ``path`` in raw spec data, creating missing tables."""
    from .specs import dotted

    cur: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(cur, dict):
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
            cur = nxt
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            cur = cur[part]
        else:
            shown = dotted(kind, path[:i]).lstrip(".")
            raise GenesisError(f"{where}: {shown} is a value, not a table")
    last = path[-1]
    if isinstance(cur, dict):
        cur[last] = copy.deepcopy(value)
    elif isinstance(cur, list) and isinstance(last, int) and last < len(cur):
        cur[last] = copy.deepcopy(value)
    else:
        shown = dotted(kind, path[:-1]).lstrip(".")
        raise GenesisError(f"{where}: {shown} is a value, not a table")


def fmt_value(value: Any) -> str:
    """A value as it appears in a variant name: short, and only characters a node id allows."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)
    if SAFE.match(text) and len(text) <= 40:
        return text
    import xxhash

    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:24]
    return f"{clean}~{xxhash.xxh3_64_hexdigest(text.encode())[:6]}"


class Overrides:
    """One group of overrides (one variant per affected spec) installed in a SpecStore."""

    def __init__(self, items: list[Override]) -> None:
        self.items = items
        self.store: SpecStore | None = None
        self._memo: dict[str, str | None] = {}
        self._variants: dict[str, tuple[str, dict[str, Any]]] = {}  # variant → (base, data)
        self._affecting: dict[str, list[Override]] = {}

    @classmethod
    def from_json(cls, rows: list[list[Any]]) -> "Overrides":
        """Inverse of ``as_json``."""
        return cls([Override(a, addr, tuple(p), v) for a, addr, p, v in rows])

    def as_json(self) -> list[list[Any]]:
        """Serialisable form (goes into worker payloads and the experiments log)."""
        return [o.as_json() for o in self.items]

    def variant_of(self, address: str, _stack: tuple[str, ...] = ()) -> str | None:
        """The variant address of base spec ``address`` under these overrides (None: unaffected)."""
        if address in self._memo:
            return self._memo[address]
        if address in _stack or self.store is None:
            return None
        store = self.store
        try:
            raw = store.raw(address)
        except GenesisError:
            return None  # the normal load reports it, with its location
        data = copy.deepcopy(raw.data)
        own = [o for o in self.items if o.address == address]
        for o in own:
            set_in(data, o.path, o.value, o.where, address.split(":")[0])
        affecting = list(own)
        for loc, ref in find_refs(data, store.kinds):
            if "@" in ref:
                continue
            v = self.variant_of(ref, (*_stack, address))
            if v is not None:
                set_in(data, loc, v, address)
                affecting += [o for o in self._affecting[v] if o not in affecting]
        if not affecting:
            self._memo[address] = None
            return None
        name = f"{address}@{self._suffix(address, affecting)}"
        self._memo[address] = name
        self._variants[name] = (address, data)
        self._affecting[name] = affecting
        return name

    def _suffix(self, address: str, affecting: list[Override]) -> str:
        kinds_seen: dict[str, set[str]] = {}
        for o in affecting:
            kinds_seen.setdefault(o.address.split(":")[0], set()).add(o.address)
        labels = []
        for o in affecting:
            label = self._field_label(o)
            if o.address != address:
                kind, name = o.address.split(":", 1)
                label = f"{kind}.{name}.{label}" if len(kinds_seen[kind]) > 1 else f"{kind}.{label}"
            labels.append(f"{label}={fmt_value(o.value)}")
        return ",".join(sorted(labels))

    def _field_label(self, o: Override) -> str:
        """The field's last name when no other field of that spec has it (``lr`` is not unique in a
        model spec: training.lr, sft.lr, dpo.lr → ``training.lr``), else the full path."""
        full = ".".join(map(str, o.path))
        leaf = str(o.path[-1])
        try:
            from .graph import flatten

            keys = flatten(self.store.get(o.address).dump) if self.store else {}
        except GenesisError:
            return full
        leaves = [re.split(r"[.\[]", k)[-1].rstrip("]") for k in keys]
        others = [k for k in keys if re.split(r"[.\[]", k)[-1].rstrip("]") == leaf]
        return leaf if leaves.count(leaf) <= 1 and (not others or others == [full]) else full

    def base_of(self, variant: str) -> str | None:
        """The base address of a variant these overrides define, else None."""
        base = variant.split("@", 1)[0]
        return base if self.variant_of(base) == variant else None

    def variant_raw(self, store: SpecStore, variant: str) -> RawSpec:
        """The variant's merged data, located in its base's files (errors name ``--set``)."""
        base, data = self._variants[variant]
        raw = store.raw(base)
        out = RawSpec(variant, raw.path, raw.text, data)
        out.chain = raw.chain
        return out

    def blame(self, variant: str, err: dict[str, Any], model_cls: Any) -> str | None:
        """A pydantic error on a variant as ``--set ARG: message`` when an override caused it."""
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        o = self._culprit(variant, loc)
        if o is None:
            return None
        from .specs import _fields_at, dotted

        kind = variant.split(":")[0]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field{did_you_mean(loc[-1], _fields_at(model_cls, loc[:-1]))}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and err["type"] not in ("value_error", "assertion_error"):
                shown = repr(err["input"])
                msg += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        where = "" if loc == o.path else f"{dotted(kind, loc)}: "
        return f"{o.where}: {where}{msg}"

    def blame_field(self, variant: str, loc: tuple[Any, ...], message: str) -> str | None:
        """A stage check's FieldError on a variant as ``--set ARG: message`` when an override caused it."""
        o = self._culprit(variant, loc)
        return f"{o.where}: {message}" if o else None

    def _culprit(self, variant: str, loc: tuple[Any, ...]) -> Override | None:
        base = self._variants.get(variant, (None,))[0]
        for o in self.items:
            if o.address != base:
                continue
            n = min(len(o.path), len(loc))
            if n and tuple(map(str, o.path[:n])) == tuple(map(str, loc[:n])):
                return o
        return None

    def label(self) -> str:
        """All overrides as ``field=value`` (for tables)."""
        return ", ".join(f"{o.address}.{'.'.join(map(str, o.path))}={fmt_value(o.value)}" for o in self.items)


class VariantSet:
    """Every override group of one command (one for ``--set``, one per point of a ``--sweep``)."""

    def __init__(self, groups: list[Overrides]) -> None:
        self.groups = groups

    def _owner(self, variant: str) -> Overrides | None:
        return next((g for g in self.groups if g.base_of(variant) is not None), None)

    def base_of(self, variant: str) -> str | None:
        """Base address of a variant any group defines."""
        g = self._owner(variant)
        return g.base_of(variant) if g else None

    def variant_raw(self, store: SpecStore, variant: str) -> RawSpec:
        """See Overrides.variant_raw."""
        return self._owner(variant).variant_raw(store, variant)  # type: ignore[union-attr]

    def blame(self, variant: str, err: dict[str, Any], model_cls: Any) -> str | None:
        """See Overrides.blame."""
        g = self._owner(variant)
        return g.blame(variant, err, model_cls) if g else None

    def blame_field(self, variant: str, loc: tuple[Any, ...], message: str) -> str | None:
        """See Overrides.blame_field."""
        g = self._owner(variant)
        return g.blame_field(variant, loc, message) if g else None

    def payload_for(self, address: str) -> list[list[Any]] | None:
        """The override group that defines ``address`` (for the worker), or None for a base spec."""
        if "@" not in address:
            return None
        g = self._owner(address)
        return g.as_json() if g else None


def install(store: SpecStore, groups: list[Overrides]) -> None:
    """Make the variants of ``groups`` loadable from ``store``."""
    for g in groups:
        g.store = store
    store.overrides = VariantSet(groups)
    # specs validated before the overrides existed stay valid (a base spec is never changed)


def install_payload(store: SpecStore, rows: list[list[Any]] | None) -> None:
    """Worker side: rebuild the node's override group from its payload."""
    if rows:
        install(store, [Overrides.from_json(rows)])


def base_node(nid: str) -> str:
    """``pretrain:tiny@lr=0.001/part`` → ``pretrain:tiny/part`` (the node a variant was made from)."""
    prefix, _, rest = nid.partition(":")
    name, slash, part = rest.partition("/")
    return f"{prefix}:{name.split('@', 1)[0]}{slash}{part}"


# --------------------------------------------------------------------------------------------
# Binding --set to specs of a target's graph


def _spec_kind_of_target(project: Any, target: str) -> tuple[str, str, str | None, str]:
    """(prefix, name, part, kind) of a target (stage:name[/part] or kind:name)."""
    from .stage import kinds, parse_node_id, stages

    prefix, name, part = parse_node_id(target)
    st = stages().get(prefix)
    if st is not None:
        return prefix, name, part, st.kind
    if prefix in kinds():
        return prefix, name, part, prefix
    project.resolve_target(target)  # raises the usual "unknown stage or kind" error
    raise GenesisError(f"{target}: not a target")


def graph_specs(project: Any, targets: list[str]) -> list[str]:
    """Base spec addresses the targets' graph uses: node specs and everything they reference."""
    g = project.expand(targets)
    todo = sorted({project.node(n).spec.address for n in g.nodes})
    seen: list[str] = []
    while todo:
        a = todo.pop(0)
        if a in seen:
            continue
        seen.append(a)
        todo += [r for _, r in find_refs(project.specs.raw(a).data, project.specs.kinds) if r not in seen]
    return seen


def bind(project: Any, targets: list[str], sets: list[SetArg]) -> list[Override]:
    """Resolve each ``--set``'s spec: ``kind:name.`` explicitly, else the target's spec of that kind,
    else the single spec of that kind in the targets' graph."""
    store: SpecStore = project.specs
    out: list[Override] = []
    used: list[str] | None = None
    for s in sets:
        where = f"{s.flag} {s.arg}"
        if s.addressed:
            names = store.names(s.kind)
            match = max((n for n in names if s.rest.startswith(n + ".")), key=len, default=None)
            if match is None:
                guess = s.rest.split(".", 1)[0]
                raise GenesisError(f"{where}: no spec {s.kind}:{guess} (specs/{s.kind}/{guess}.toml does not exist)"
                                   f"{did_you_mean(guess, names)}")
            address, field_path = f"{s.kind}:{match}", s.rest[len(match) + 1:]
        else:
            own = sorted({f"{s.kind}:{_spec_kind_of_target(project, t)[1]}" for t in targets
                          if _spec_kind_of_target(project, t)[3] == s.kind})
            if len(own) == 1:
                address = own[0]
            else:
                if used is None:
                    used = graph_specs(project, targets)
                cands = own or [a for a in used if a.split(":")[0] == s.kind]
                if not cands:
                    raise GenesisError(f"{where}: no {s.kind} spec in the graph of {', '.join(targets)}")
                if len(cands) > 1:
                    raise GenesisError(f"{where}: {len(cands)} {s.kind} specs in the graph ({', '.join(cands)}); "
                                       f"name one, e.g. {cands[0]}.{s.rest}=…")
                address = cands[0]
            field_path = s.rest
        if not field_path or not all(field_path.split(".")):
            raise GenesisError(f"{where}: no field named (expected {address}.FIELD=VALUE)")
        out.append(Override(s.arg, address, _path(field_path), s.value, s.flag))
    seen: dict[tuple[str, tuple[Any, ...]], str] = {}
    for o in out:
        k = (o.address, o.path)
        if k in seen:
            raise GenesisError(f"{o.where}: {o.address}.{'.'.join(map(str, o.path))} is already set by {seen[k]}")
        seen[k] = o.arg
    return out


def rewrite_target(group: Overrides, project: Any, target: str) -> str:
    """A target under overrides: ``model:tiny`` → ``model:tiny@training.lr=0.001``."""
    prefix, name, part, kind = _spec_kind_of_target(project, target)
    v = group.variant_of(f"{kind}:{name}")
    if v is None:
        return target
    return f"{prefix}:{v.split(':', 1)[1]}" + (f"/{part}" if part else "")


@dataclass
class Variant:
    """One variant of a command: its override group and its targets (rewritten)."""

    group: Overrides
    base_targets: list[str]
    targets: list[str]
    sets: list[str] = field(default_factory=list)


def apply(project: Any, targets: list[str], sets: list[str], sweeps: list[str]) -> list[Variant]:
    """Bind ``--set``/``--sweep`` arguments, install their variants in the project's SpecStore and
    return one Variant per point (one for plain ``--set``). Every override must reach the targets."""
    import itertools

    kinds = list(project.specs.kinds)
    base = [parse_set(a, kinds) for a in sets]
    axes = [split_sweep(a, kinds) for a in sweeps]
    points = [list(p) for p in itertools.product(*axes)] if axes else [[]]
    groups: list[Overrides] = []
    for point in points:
        groups.append(Overrides(bind(project, targets, base + point)))
    install(project.specs, groups)
    variants = []
    for g in groups:
        new = [rewrite_target(g, project, t) for t in targets]
        variants.append(Variant(g, targets, new, [o.arg for o in g.items]))
    # every override must change some spec the targets use (else it is a typo or a wrong address)
    project.expand([t for v in variants for t in v.targets])
    loaded = set(project.specs._raw)
    for g in groups:
        for o in g.items:
            v = g.variant_of(o.address)
            if v is None or v not in loaded:
                raise GenesisError(f"{o.where}: {o.address} is not used by {', '.join(targets)}")
    return variants


def from_log(engine: Any, targets: list[str]) -> list[Variant]:
    """Targets naming a variant built before (``model:tiny@training.lr=0.001``, as in out/): install
    the overrides the experiments log recorded for it, so the name works as a handle."""
    rows = list(reversed(read_log(engine.ws)))  # newest first
    groups: list[Overrides] = []
    variants = []
    for t in targets:
        if "@" not in t:
            continue
        _, name, _, kind = _spec_kind_of_target(engine.project, t)
        row = None
        for r in rows:  # any node of a logged variant's graph: its group defines this spec name
            g = Overrides.from_json(r["group"])
            g.store = engine.project.specs
            if g.base_of(f"{kind}:{name}") is not None:
                row = r
                break
        if row is None:
            raise GenesisError(f"{t}: a --set variant this workspace has not built; give its overrides with --set "
                               "(variants exist only while their overrides are given, or once saved with --save)")
        g = Overrides.from_json(row["group"])
        groups.append(g)
        variants.append(Variant(g, [row["base"]], [t], [o.arg for o in g.items]))
    if groups:
        install(engine.project.specs, groups)
    return variants


# --------------------------------------------------------------------------------------------
# --save


def toml_value(v: Any) -> str:
    """A TOML literal for a JSON-like value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise GenesisError(f"cannot write {v!r} as TOML")


def _toml_key(k: Any) -> str:
    return str(k) if re.match(r"^[A-Za-z0-9_-]+$", str(k)) else json.dumps(str(k))


def save(project: Any, variant: Variant, name: str) -> Path:
    """Write the variant as ``specs/<kind>/<name>.toml`` extending its base (the target's spec)."""
    from .specs import REF_RE

    addresses = sorted({o.address for o in variant.group.items})
    if len(addresses) != 1:
        raise GenesisError(f"--save {name}: the overrides change {len(addresses)} specs ({', '.join(addresses)}); "
                           "--save writes one spec: set fields of one spec only")
    address = addresses[0]
    kind = address.split(":")[0]
    if not REF_RE.match(f"{kind}:{name}") or "@" in name:
        raise GenesisError(f"--save {name}: not a spec name (letters, digits, '.', '_' or '-')")
    path = project.specs.path_of(f"{kind}:{name}")
    if path.exists():
        raise GenesisError(f"--save {name}: {project.specs.rel(path)} already exists")
    lines = [f"# made by genesis-build --save from: {' '.join('--set ' + o.arg for o in variant.group.items)}",
             f"extends = {toml_value(address)}", ""]
    if any(isinstance(p, int) for o in variant.group.items for p in o.path):
        raise GenesisError(f"--save {name}: overrides of list items cannot be saved as an extends file")
    for o in variant.group.items:
        lines.append(f"{'.'.join(_toml_key(p) for p in o.path)} = {toml_value(o.value)}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what we write must read back
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# The experiments log


def log_path(ws: Any) -> Path:
    """``.genesis/experiments.jsonl`` of the workspace."""
    return ws.state_dir / LOG_NAME


def record(engine: Any, variant: Variant, results: list[Any]) -> None:
    """Append one line per built variant target: name, base, overrides, when, node → key."""
    by_id = {r.id: r for r in results}
    path = log_path(engine.ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    for base, t in zip(variant.base_targets, variant.targets):
        if t == base:
            continue
        ids = engine.project.resolve_target(t)
        if len(ids) != 1 or ids[0] not in by_id or by_id[ids[0]].key is None:
            continue
        r = by_id[ids[0]]
        if r.outcome in ("failed", "skipped"):
            continue
        row = {"variant": t, "base": base, "node": ids[0], "key": r.key, "time": time.time(),
               "overrides": {o.arg: o.value for o in variant.group.items}, "group": variant.group.as_json()}
        with open(path, "a") as f:  # one short line per write: appends do not interleave
            f.write(json.dumps(row, default=str) + "\n")


def read_log(ws: Any) -> list[dict[str, Any]]:
    """Every logged variant build (bad lines skipped)."""
    from .stage import read_json_lines

    return read_json_lines(log_path(ws))
