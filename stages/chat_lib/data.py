"""Reading, checking, filtering and mixing conversation sources (the ``chat`` stage's work).

Every decision about a conversation is a function of ``(seed, conversation hash)``, never of its
position, as in the corpus mixture (``stages/data_lib/mixture.py``): dedup keeps the first
occurrence in source order; ``weight`` keeps ``floor(w)`` copies plus one more with probability
``frac(w)``; a conversation goes to validation when its split draw is below ``fraction`` (one copy,
never also in train). Output order is sources in spec order, rows in source order, repeated copies
as later passes; the trainer draws its own seeded permutation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import xxhash

from genesis_build.errors import GenesisError

from .spec import ChatFilters, ChatSource, ChatSpec, source_path

ROLES = ("system", "user", "assistant")
Row = tuple[Any, str]  # (raw messages value, origin "file:line" for error messages)


class InvalidConversation(ValueError):
    """A row that is not a ``messages: [{role, content}]`` conversation (message names the field)."""


def _read_local(src: ChatSource, path: Path) -> Iterator[Row]:
    field = src.messages_field
    if src.type == "jsonl":
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise GenesisError(f"{path}:{i}: invalid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise GenesisError(f"{path}:{i}: expected a JSON object with a {field!r} list")
                yield row.get(field, _Missing(field, list(row))), f"{path}:{i}"
    elif src.type == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise GenesisError(f"{path}: expected a JSON list of objects with a {field!r} list")
        for i, row in enumerate(data):
            yield (row.get(field, _Missing(field, list(row))) if isinstance(row, dict) else row), f"{path}[{i}]"
    elif src.type == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if field not in table.column_names:
            raise GenesisError(f"{path}: no column {field!r} (columns: {', '.join(table.column_names)}); set messages_field")
        for i, value in enumerate(table.column(field).to_pylist()):
            yield value, f"{path} row {i}"
    elif src.type == "disk":
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if src.split not in ds:
                raise GenesisError(f"{path}: no split {src.split!r} (splits: {', '.join(ds)}); set split")
            ds = ds[src.split]
        yield from _dataset_rows(ds, field, str(path))


def _dataset_rows(ds: Any, field: str, where: str) -> Iterator[Row]:
    names = getattr(ds, "column_names", None)
    if names is not None and field not in names:
        raise GenesisError(f"{where}: no column {field!r} (columns: {', '.join(names)}); set messages_field")
    for i, row in enumerate(ds):
        yield row.get(field), f"{where} row {i}"


def _read_hub(src: ChatSource) -> Iterator[Row]:
    import datasets

    where = f"{src.dataset}@{src.revision}"
    try:
        # streaming when only the first rows are wanted: a 1M-row set is not downloaded for 10k of them
        ds = datasets.load_dataset(src.dataset, src.config, split=src.split, revision=src.revision,
                                   streaming=src.max_conversations is not None)
    except Exception as e:  # datasets raises many types; the user needs the id and the reason
        raise GenesisError(f"source {src.name!r}: cannot load {where} split {src.split!r}: {e}") from None
    yield from _dataset_rows(ds, src.messages_field, where)


class _Missing:
    """Marks a row without the messages field (reported with the row's origin)."""

    def __init__(self, field: str, columns: list[str]) -> None:
        self.field, self.columns = field, columns


def read_rows(src: ChatSource, workspace: Path) -> Iterator[Row]:
    """(messages value, origin) of each row of one source, at most ``max_conversations``."""
    it = _read_hub(src) if src.type == "hub" else _read_local(
        src.model_copy(update={"type": "jsonl"}) if src.type == "builtin" else src, source_path(src, workspace))
    for n, row in enumerate(it):
        if src.max_conversations is not None and n >= src.max_conversations:
            return
        yield row


def normalize(value: Any, field: str = "messages") -> list[dict[str, str]]:
    """The canonical conversation (``[{role, content}]``, content stripped) or InvalidConversation
    naming the bad field, e.g. ``messages[2].role: 'bot' is not one of system, user, assistant``."""
    if isinstance(value, _Missing):
        raise InvalidConversation(f"{field}: missing (columns: {', '.join(value.columns)}); set messages_field")
    if not isinstance(value, list) or not value:
        raise InvalidConversation(f"{field}: expected a non-empty list of {{role, content}} turns")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise InvalidConversation(f"{field}[{i}]: expected an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            from genesis_build.errors import did_you_mean

            hint = did_you_mean(str(role), list(ROLES)) if isinstance(role, str) else ""
            raise InvalidConversation(f"{field}[{i}].role: {role!r} is not one of {', '.join(ROLES)}{hint}")
        if role == "system" and i != 0:
            raise InvalidConversation(f"{field}[{i}].role: a system turn may only come first")
        if not isinstance(content, str):
            raise InvalidConversation(f"{field}[{i}].content: expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": content.strip()})
    return out


def keep(msgs: list[dict[str, str]], f: ChatFilters) -> str | None:
    """None when the conversation passes the filters, else the reason it is dropped. Trailing
    non-assistant turns are removed first (they teach nothing: no loss on them)."""
    while msgs and msgs[-1]["role"] != "assistant":
        msgs.pop()
    turns = sum(1 for m in msgs if m["role"] == "assistant")
    if turns == 0 or any(m["role"] == "assistant" and not m["content"] for m in msgs):
        return "no_answer"
    if turns < f.min_turns or (f.max_turns is not None and turns > f.max_turns):
        return "turns"
    if sum(len(m["content"]) for m in msgs) > f.max_chars:
        return "chars"
    return None


def conversation_hash(msgs: list[dict[str, str]]) -> str:
    """xxh3-128 of the canonical JSON: the conversation's identity (dedup, sampling, split)."""
    return xxhash.xxh3_128_hexdigest(json.dumps(msgs, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())


def draw(seed: int, salt: str, h: str) -> float:
    """A uniform [0, 1) draw determined by (seed, salt, conversation hash) only."""
    return xxhash.xxh3_64_intdigest(f"{seed}:{salt}:{h}".encode()) / 2.0**64


def build(spec: ChatSpec, workspace: Path, node: str,
          progress: Callable[..., None] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(train rows, validation rows, stats) of a chat spec."""
    seen: set[str] = set()
    kept: list[tuple[str, str, list[dict[str, str]]]] = []  # (hash, source, messages)
    stats: dict[str, Any] = {"sources": {}}
    for src in spec.sources:
        st = {"read": 0, "kept": 0, "invalid": 0, "duplicate": 0, "no_answer": 0, "turns": 0, "chars": 0}
        for value, origin in read_rows(src, workspace):
            st["read"] += 1
            try:
                msgs = normalize(value, src.messages_field)
            except InvalidConversation as e:
                if src.filters.invalid == "error":
                    raise GenesisError(f"{origin}: {e} (source {src.name!r} of {node}; set filters.invalid = \"drop\" "
                                       "to skip such rows)") from None
                st["invalid"] += 1
                continue
            reason = keep(msgs, src.filters)
            if reason:
                st[reason] += 1
                continue
            h = conversation_hash(msgs)
            if src.filters.dedup and h in seen:
                st["duplicate"] += 1
                continue
            seen.add(h)
            kept.append((h, src.name, msgs))
            st["kept"] += 1
            if progress and st["read"] % 1000 == 0:
                progress(st["read"], None, desc=f"chat {src.name}")
        stats["sources"][src.name] = st
    if not kept:
        raise GenesisError(f"{node}: no conversation is left after the filters (see the sources' filters)")

    v = spec.validation
    draws = [draw(spec.seed, "split", h) for h, _, _ in kept]
    val = {i for i, d in enumerate(draws) if d < v.fraction}
    if len(val) < v.min_conversations:
        val |= set(sorted(range(len(kept)), key=lambda i: draws[i])[: min(v.min_conversations, len(kept) - 1)])
    if v.max_conversations is not None and len(val) > v.max_conversations:
        val = set(sorted(val, key=lambda i: draws[i])[: v.max_conversations])
    weights = {s.name: s.weight for s in spec.sources}
    copies = []
    for i, (h, name, _) in enumerate(kept):
        w = weights[name]
        copies.append(0 if i in val else int(math.floor(w)) + (draw(spec.seed, "sample", h) < w - math.floor(w)))
    train: list[dict[str, Any]] = []
    for rep in range(max(copies, default=0)):  # repeated copies as later passes over the sources
        train += [{"id": h[:16], "source": name, "messages": msgs}
                  for (h, name, msgs), c in zip(kept, copies) if c > rep]
    validation = [{"id": kept[i][0][:16], "source": kept[i][1], "messages": kept[i][2]} for i in sorted(val)]
    if not train:
        raise GenesisError(f"{node}: the train split is empty (weights too small, or validation takes everything)")
    for name in stats["sources"]:
        stats["sources"][name]["train"] = sum(1 for r in train if r["source"] == name)
    stats.update(train=len(train), validation=len(validation), unique=len(kept),
                 assistant_turns=sum(sum(1 for m in r["messages"] if m["role"] == "assistant") for r in train))
    return train, validation, stats
