"""Spec kind and stage ``prompts``: materialise a prompt set (``specs/prompts/<name>.toml``) as ``prompts.jsonl``.

Rows are ``{"id", "prompt", "category"}``; ``id`` is the digest of the prompt text, so the
downstream per-sample cache follows prompts, not file positions. Duplicates and empty prompts are
dropped. Build it alone with ``genesis-build prompts:builtin``.
"""

from __future__ import annotations

from typing import Any

from genesis_build.errors import GenesisError
from genesis_build.stage import Context, SpecView, register_kind, stage

from stages.cai_lib.prompts import PromptsSpec, prompt_text

register_kind("prompts", PromptsSpec, default_stage="prompts")

FIELDS = ("builtin", "path", "dataset", "split", "revision", "column", "category_column", "categories", "limit")


def _files(view: SpecView, part: str | None) -> list[str]:
    spec: PromptsSpec = view.spec
    return [spec.path] if spec.path else []


def _select(spec: dict[str, Any], part: str | None) -> dict[str, Any]:
    """The declared fields, plus the content digest of the built-in set when it is used: it ships
    with the code (outside any workspace), so it is keyed here rather than as a file input."""
    values = {f: spec.get(f) for f in FIELDS}
    if spec.get("builtin"):
        import xxhash

        from stages.cai_lib.prompts import BUILTIN_FILE

        values["builtin_digest"] = xxhash.xxh3_128_hexdigest(BUILTIN_FILE.read_bytes())
    return values


def _load_rows(ctx: Context, spec: PromptsSpec) -> list[dict[str, Any]]:
    if spec.builtin and (spec.dataset or spec.path):
        # the built-ins first, in the other source's column layout, so one loop filters both
        from stages.cai_lib.io import read_jsonl
        from stages.cai_lib.prompts import BUILTIN_FILE

        own = [{spec.column: r["prompt"], **({spec.category_column: r.get("category")} if spec.category_column else {})}
               for r in read_jsonl(BUILTIN_FILE)]
        return own + _load_rows(ctx, spec.model_copy(update={"builtin": False}))
    if spec.dataset:
        import datasets

        try:
            ds = datasets.load_dataset(spec.dataset, split=spec.split, revision=spec.revision)
        except Exception as e:  # datasets raises many types; the user needs the id and the reason
            raise GenesisError(f"prompts:{ctx.spec_name}: cannot load dataset {spec.dataset!r} split {spec.split!r}: {e}") from None
        return [dict(r) for r in ds]
    from stages.cai_lib.prompts import BUILTIN_FILE

    path = BUILTIN_FILE if spec.builtin else ctx.files[0]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".json":
        import json

        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise GenesisError(f"{path}: expected a JSON list of objects")
        return data
    from stages.cai_lib.io import read_jsonl

    return read_jsonl(path)


@stage("prompts", version=1, kind="prompts", fields=FIELDS, select=_select, files=_files)
def prompts(ctx: Context) -> None:
    """Materialise a prompt set as prompts.jsonl."""
    import xxhash

    from stages.cai_lib.io import write_json, write_jsonl

    spec: PromptsSpec = ctx.spec
    rows = _load_rows(ctx, spec)
    if rows and spec.column not in rows[0]:
        raise GenesisError(f"prompts:{ctx.spec_name}: no column {spec.column!r} (columns: {', '.join(map(str, rows[0]))}); set column = ...")
    out, seen, dropped = [], set(), 0
    for row in rows:
        text = prompt_text(row, spec.column)
        category = row.get(spec.category_column) if spec.category_column else None
        if text is None or not text.strip() or text.strip() in seen:
            dropped += 1
            continue
        if spec.categories is not None and category not in spec.categories:
            continue
        text = text.strip()
        seen.add(text)
        out.append({"id": xxhash.xxh3_64_hexdigest(text.encode()), "prompt": text, "category": category})
        if spec.limit and len(out) >= spec.limit:
            break
    if not out:
        raise GenesisError(f"prompts:{ctx.spec_name}: the prompt set is empty after filtering")
    write_jsonl(ctx.out / "prompts.jsonl", out)
    cats: dict[str, int] = {}
    for r in out:
        cats[str(r["category"])] = cats.get(str(r["category"]), 0) + 1
    write_json(ctx.out / "stats.json", {"prompts": len(out), "dropped": dropped, "categories": cats})
    ctx.stats(prompts=len(out), dropped=dropped)
