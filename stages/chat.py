"""Kind and stage ``chat``: conversations for instruction tuning, ``specs/chat/<name>.toml`` →
``train.jsonl`` + ``validation.jsonl`` (rows ``{"id", "source", "messages": [{role, content}]}``)::

    genesis-build chat:builtin              # the dialogues shipped with genesis-build

Sources are local JSONL / JSON / Parquet files, a ``datasets`` ``save_to_disk`` directory, a hub
dataset pinned by ``revision``, or the built-in set (``stages/chat_lib/builtin_chat.jsonl``, written
for this project). Each row is checked (a bad one is reported as ``file:line: messages[2].role: …``),
filtered by assistant turns and characters, deduplicated, sampled by weight and split into train
and validation by its hash (the spec model and its fields: ``stages/chat_lib/spec.py``). The node is
model-independent: every model instruct-tuned on the same set shares it. ``instruct:<model>``
reads it (``[instruct] data = "chat:<name>"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genesis_build.errors import FieldError
from genesis_build.stage import Context, SpecView, register_kind, stage

from stages.chat_lib.spec import ChatSpec, source_path

register_kind("chat", ChatSpec, default_stage="chat")


def _drop_none(value: Any) -> Any:
    # unset optional fields stay out of the key, so adding one to the model changes no existing key
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _select(dump: dict[str, Any], part: str | None) -> dict[str, Any]:
    """The whole spec minus ``description``, plus the built-in set's content digest when a source
    uses it (it ships with the code, outside any workspace, so it is keyed here, not as a file)."""
    values = _drop_none({k: v for k, v in dump.items() if k != "description"})
    if any(s.get("type") == "builtin" for s in dump.get("sources", [])):
        import xxhash

        from stages.chat_lib.builtin import BUILTIN_FILE

        values["builtin_digest"] = xxhash.xxh3_128_hexdigest(BUILTIN_FILE.read_bytes())
    return values


def _files(view: SpecView, part: str | None) -> list[str]:
    spec: ChatSpec = view.spec
    return [s.path for s in spec.sources if s.type != "hub" and s.type != "builtin" and s.path]


def _check(view: SpecView) -> None:
    """Local paths exist (found at plan time, naming the field)."""
    spec: ChatSpec = view.spec
    for i, src in enumerate(spec.sources):
        p = source_path(src, view.workspace)
        if p is None or src.type == "builtin":
            continue
        if not p.exists():
            raise FieldError(f"sources.{i}.path", f"source {src.name!r}: {src.path} does not exist")
        if src.type == "disk" and not p.is_dir():
            raise FieldError(f"sources.{i}.path", f"source {src.name!r}: {src.path} is not a directory "
                             "(type 'disk' reads a datasets save_to_disk directory)")
        if src.type != "disk" and not p.is_file():
            raise FieldError(f"sources.{i}.path", f"source {src.name!r}: {src.path} is not a file")


def _describe(view: SpecView) -> list[tuple[str, str]]:
    import re

    spec: ChatSpec = view.spec
    mix = ", ".join(f"{s.name} ({s.type}{' ' + s.dataset + '@' + str(s.revision) if s.dataset else ''}) ×{s.weight:g}"
                    for s in spec.sources)
    v = spec.validation
    rows = [("sources", mix), ("validation", f"{v.fraction:.2%} of conversations, at least {v.min_conversations}")]
    # a branch or tag can move: only a commit sha pins what a cached build was made from
    loose = [s.name for s in spec.sources if s.type == "hub" and not re.fullmatch(r"[0-9a-f]{40}", s.revision or "")]
    if loose:
        rows.append(("not pinned", f"{', '.join(loose)}: revision is a branch or tag, not a commit sha"))
    return rows


# heavy: a hub source may download and parse gigabytes; keep that out of the engine process
@stage("chat", version=1, kind="chat", select=_select, files=_files, check=_check, describe=_describe, heavy=True)
def chat(ctx: Context) -> None:
    """Read, check, filter, dedup and mix the conversation sources; split off validation."""
    from stages.cai_lib.io import write_json, write_jsonl
    from stages.chat_lib.data import build

    train, validation, stats = build(ctx.spec, Path(ctx.workspace), ctx.node, ctx.progress)
    write_jsonl(ctx.out / "train.jsonl", train)
    write_jsonl(ctx.out / "validation.jsonl", validation)
    write_json(ctx.out / "stats.json", stats)
    ctx.stats(train=stats["train"], validation=stats["validation"], unique=stats["unique"],
              summary=f"{stats['train']} train / {stats['validation']} validation conversations")
