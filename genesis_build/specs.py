"""Spec files: TOML loading, ``extends`` deep-merge, ``kind:name`` references, validation.

Every problem becomes a one-line SpecError ``specs/model/1b.toml:12: model.hiden_size: unknown field
(did you mean hidden_size?)``. Line numbers come from a small locator over the TOML text, because
``tomllib`` does not keep positions.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import FieldError, SpecError, did_you_mean

REF_RE = re.compile(r"^([a-z][a-z0-9_-]*):([A-Za-z0-9][A-Za-z0-9._-]*(?:@[A-Za-z0-9._=,+~-]+)?)$")
# ``name@overrides`` names an ephemeral variant made by ``--set`` (see genesis_build/experiments.py);
# it exists only in a store that was given those overrides, never as a file.


@dataclass
class RawSpec:
    """One spec file after ``extends`` is merged, before validation."""

    address: str  # kind:name
    path: Path
    text: str
    data: dict[str, Any]
    chain: list["RawSpec"] = field(default_factory=list)  # self first, then parents


@dataclass
class Spec:
    """A validated spec."""

    address: str
    kind: str
    name: str
    path: Path
    model: Any  # the pydantic instance
    raw: RawSpec

    @property
    def dump(self) -> dict[str, Any]:
        """JSON-compatible values of the validated spec."""
        return self.model.model_dump(mode="json")

    def line_of(self, loc: Iterable[Any]) -> tuple[Path, int]:
        """File and line that defines ``loc`` (first file of the extends chain that has it)."""
        return locate_in_chain(self.raw, tuple(loc))


# --------------------------------------------------------------------------------------------
# Locating keys in TOML text


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r'^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=')


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', key)
    return [a or b or c for a, b, c in parts]


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line where the key path ``loc`` is defined in TOML ``text`` (best effort).

    Integer components index arrays of tables (``[[sources]]``); if the exact key is not found,
    the line of the closest enclosing table or key is returned.
    """
    table: list[Any] = []
    counters: dict[tuple[Any, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched depth, line)
    want = tuple(loc)
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _HEADER_RE.match(line)
        if m and not _KEY_RE.match(line):
            names = _split_dotted(m.group(2))
            if m.group(1) == "[[":
                base = tuple(names)
                counters[base] = counters.get(base, -1) + 1
                table = [*names, counters[base]]
            else:
                table = list(names)
            path = tuple(table)
            depth = _prefix_len(path, want)
            if depth == len(path) and (best is None or depth > best[0]):
                best = (depth, lineno)
            continue
        k = _KEY_RE.match(line)
        if k:
            path = tuple(table) + tuple(_split_dotted(k.group(1)))
            depth = _prefix_len(path, want)
            if depth == len(path) and (best is None or depth > best[0]):
                best = (depth, lineno)
            elif depth > 0 and depth == len(want) and (best is None or depth > best[0]):
                best = (depth, lineno)
    return best[1] if best else None


def _prefix_len(path: tuple[Any, ...], want: tuple[Any, ...]) -> int:
    n = 0
    for a, b in zip(path, want):
        if str(a) != str(b):
            break
        n += 1
    return n


def locate_in_chain(raw: RawSpec, loc: tuple[Any, ...]) -> tuple[Path, int]:
    """The file of the ``extends`` chain that defines ``loc`` most specifically, and its line."""
    best: tuple[int, Path, int] | None = None
    for r in raw.chain or [raw]:
        line = locate(r.text, loc)
        if line is None:
            continue
        depth = _defined_depth(r.data, loc)
        if best is None or depth > best[0]:
            best = (depth, r.path, line)
    if best is None:
        return raw.path, 1
    return best[1], best[2]


def _defined_depth(data: Any, loc: tuple[Any, ...]) -> int:
    n = 0
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            cur = cur[part]
        else:
            break
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# Loading


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge ``over`` onto ``base``: tables merge recursively, everything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class SpecStore:
    """Loads and validates specs of one workspace, memoised by address."""

    def __init__(self, root: Path, kinds: dict[str, Any]) -> None:
        self.root = root
        self.spec_dir = root / "specs"
        self.kinds = kinds
        self._raw: dict[str, RawSpec] = {}
        self._specs: dict[str, Spec] = {}
        self.overrides: Any = None  # an experiments.Overrides when --set/--sweep made variants

    def exists(self, address: str) -> bool:
        """Whether ``kind:name`` is a spec file, or a variant this store's overrides define."""
        if "@" in address:
            return self.overrides is not None and self.overrides.base_of(address) is not None
        return self.path_of(address).is_file()

    def rel(self, path: Path) -> str:
        """Workspace-relative display path."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def path_of(self, address: str) -> Path:
        """``kind:name`` → ``specs/kind/name.toml``."""
        kind, name = self.split(address)
        return self.spec_dir / kind / f"{name}.toml"

    def split(self, address: str, where: str | None = None) -> tuple[str, str]:
        """Validate an address and split it into kind and name."""
        m = REF_RE.match(address) if isinstance(address, str) else None
        prefix = f"{where}: " if where else ""
        if not m:
            raise SpecError(f"{prefix}'{address}' is not a spec reference (expected kind:name)")
        kind = m.group(1)
        if kind not in self.kinds:
            raise SpecError(f"{prefix}unknown spec kind '{kind}'{did_you_mean(kind, self.kinds)}")
        return kind, m.group(2)

    def names(self, kind: str) -> list[str]:
        """Names of the specs of one kind on disk."""
        d = self.spec_dir / kind
        return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []

    def files(self) -> list[Path]:
        """All spec files of the workspace."""
        return sorted(self.spec_dir.glob("*/*.toml")) if self.spec_dir.is_dir() else []

    def raw(self, address: str, _stack: tuple[str, ...] = (), where: str | None = None) -> RawSpec:
        """Read one spec with its ``extends`` chain merged."""
        if address in self._raw:
            return self._raw[address]
        kind, name = self.split(address, where)
        if "@" in name:
            if self.overrides is None or self.overrides.base_of(address) is None:
                prefix = f"{where}: " if where else ""
                raise SpecError(f"{prefix}spec {address} not found (a variant exists only while its --set "
                                f"overrides are given; `--save NAME` writes one as a spec file)")
            raw = self.overrides.variant_raw(self, address)
            self._raw[address] = raw
            return raw
        if address in _stack:
            cycle = " → ".join([*_stack[_stack.index(address):], address])
            raise SpecError(f"{self.rel(self.path_of(_stack[-1]))}:1: extends: cycle {cycle}")
        path = self.path_of(address)
        if not path.is_file():
            hint = did_you_mean(name, self.names(kind))
            prefix = f"{where}: " if where else ""
            raise SpecError(f"{prefix}spec {address} not found ({self.rel(path)} does not exist){hint}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise SpecError(f"{self.rel(path)}:{line}: not valid UTF-8 (byte {e.start})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
            line = m.group(1) if m else "1"
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "syntax error"
            raise SpecError(f"{self.rel(path)}:{line}: invalid TOML: {msg}") from None
        for loc, problem in _unrepresentable_numbers(data):
            raise SpecError(f"{self.rel(path)}:{locate(text, loc) or 1}: {dotted(kind, loc)}: {problem}")
        chain: list[RawSpec] = []
        parent_addr = data.pop("extends", None)
        merged = data
        if parent_addr is not None:
            where_ext = f"{self.rel(path)}:{locate(text, ('extends',)) or 1}: extends"
            if not isinstance(parent_addr, str):
                raise SpecError(f"{where_ext}: expected a string like '{kind}:other'")
            pkind, _ = self.split(parent_addr, where_ext)
            if pkind != kind:
                raise SpecError(f"{where_ext}: a {kind} spec can only extend a {kind} spec, not {parent_addr}")
            parent = self.raw(parent_addr, (*_stack, address), where_ext)
            merged = deep_merge(parent.data, data)
            chain = parent.chain or [parent]
        raw = RawSpec(address, path, text, merged)
        raw.chain = [RawSpec(address, path, text, data), *chain]
        self._raw[address] = raw
        return raw

    def get(self, address: str, where: str | None = None, _stack: tuple[str, ...] = ()) -> Spec:
        """Load, validate and check references of one spec (memoised)."""
        if address in self._specs:
            return self._specs[address]
        raw = self.raw(address, where=where)
        kind, name = self.split(address)
        model_cls = self.kinds[kind].model
        from pydantic import ValidationError

        try:
            model = model_cls.model_validate(raw.data)
        except ValidationError as e:
            if self.overrides is not None and "@" in name:
                blame = self.overrides.blame(address, e.errors()[0], model_cls)
                if blame:
                    raise SpecError(blame) from None
            raise SpecError(self._format_validation(raw, kind, model_cls, e)) from None
        spec = Spec(address, kind, name, raw.path, model, raw)
        for loc, bad in malformed_refs(raw.data, self.kinds):
            raise SpecError(self.where(spec, loc) + f": {bad!r} is not a valid reference (expected kind:name, "
                            "a name of letters, digits, '.', '_' or '-')")
        for loc, ref in find_refs(raw.data, self.kinds):
            if ref == address or ref in _stack:
                chain = " → ".join([*_stack, address, ref])
                raise SpecError(self.where(spec, loc) + f": reference cycle {chain}")
            self.get(ref, where=self.where(spec, loc), _stack=(*_stack, address))
        self._specs[address] = spec
        return spec

    def where(self, spec: Spec, loc: Iterable[Any]) -> str:
        """``specs/x/y.toml:LINE: kind.dotted.field`` for error messages."""
        loc = tuple(loc)
        path, line = spec.line_of(loc)
        return f"{self.rel(path)}:{line}: {dotted(spec.kind, loc)}"

    def field_error(self, spec: Spec, err: FieldError) -> SpecError:
        """Turn a stage's FieldError into a located SpecError."""
        loc = tuple(int(p) if p.isdigit() else p for p in err.field.split(".")) if err.field else ()
        if self.overrides is not None and "@" in spec.name:
            blame = self.overrides.blame_field(spec.address, loc, err.message)
            if blame:
                return SpecError(blame)
        return SpecError(f"{self.where(spec, loc)}: {err.message}")

    def _format_validation(self, raw: RawSpec, kind: str, model_cls: type, e: Any) -> str:
        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path, line = locate_in_chain(raw, loc)
        where = f"{self.rel(path)}:{line}: {dotted(kind, loc)}"
        if err["type"] == "extra_forbidden":
            known = _fields_at(model_cls, loc[:-1])
            return f"{where}: unknown field{did_you_mean(loc[-1], known)}"
        if err["type"] == "missing":
            return f"{where}: required field is missing"
        msg = err["msg"]
        if "input" in err and err["type"] not in ("value_error", "assertion_error"):
            shown = repr(err["input"])
            msg += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        msg = msg.removeprefix("Value error, ")
        return f"{where}: {msg}"


def dotted(kind: str, loc: Iterable[Any]) -> str:
    """``("layers",)`` → ``model.layers``; list indices as ``[i]``."""
    out = kind
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _fields_at(model_cls: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc`` for did-you-mean."""
    import typing

    cur = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        cur = model_in(ann, typing)
        if cur is None:
            return []
    names = list(getattr(cur, "model_fields", {}).keys())
    aliases = [f.alias for f in getattr(cur, "model_fields", {}).values() if f.alias]
    return names + aliases


def model_in(ann: Any, typing: Any) -> Any:
    """The pydantic model inside an annotation (``Foo | None``, ``list[Foo]``), if any."""
    if hasattr(ann, "model_fields"):
        return ann
    for arg in typing.get_args(ann):
        found = model_in(arg, typing)
        if found is not None:
            return found
    return None


def find_refs(data: Any, kinds: dict[str, Any], loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """All ``kind:name`` strings (of registered kinds) in a raw spec, with their locations."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += find_refs(v, kinds, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += find_refs(v, kinds, (*loc, i))
    elif isinstance(data, str):
        m = REF_RE.match(data)
        if m and m.group(1) in kinds:
            out.append((loc, data))
    return out


INT64 = (-(2**63), 2**63 - 1)


def _unrepresentable_numbers(data: Any, loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Integers TOML 1.0 says must be rejected (beyond 64 bits; tomllib accepts them) and
    non-finite floats (``inf``/``nan``: no spec field means them, and they pass ``gt=0`` bounds)."""
    import math

    out: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _unrepresentable_numbers(v, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _unrepresentable_numbers(v, (*loc, i))
    elif isinstance(data, bool):
        pass
    elif isinstance(data, int) and not INT64[0] <= data <= INT64[1]:
        out.append((loc, f"integer {str(data)[:24]}{'…' if len(str(data)) > 24 else ''} does not fit in 64 bits"))
    elif isinstance(data, float) and not math.isfinite(data):
        out.append((loc, f"{data} is not allowed (numbers must be finite)"))
    return out


def malformed_refs(data: Any, kinds: dict[str, Any], loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Strings that start like a reference to a registered kind (``model:…``, no spaces) but are not
    a valid one (``tokenizer:../../x``): caught where they are written instead of failing later."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += malformed_refs(v, kinds, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += malformed_refs(v, kinds, (*loc, i))
    elif isinstance(data, str) and ":" in data and not any(c.isspace() for c in data):
        kind = data.split(":", 1)[0]
        if kind in kinds and not REF_RE.match(data):
            out.append((loc, data))
    return out
