"""Stage ``corpus-source:<name>/<source>``: one node per source of a ``corpus`` spec (the kind and the
mixture stage are in ``stages/corpus.py``, whose docstring describes both).

Reads the source's documents, cleans, filters and drops exact duplicates; its key holds only that
source's entry and the content of its files, so editing one source reruns only that node.
"""

from __future__ import annotations

from typing import Any

from genesis_build.stage import Context, SpecView, stage

from stages.corpus import check_corpus


def _source_parts(view: SpecView) -> list[str]:
    return [s.name for s in view.spec.sources]


def _source_select(dump: dict[str, Any], part: str | None) -> dict[str, Any]:
    # Only this source's entry, minus `weight` (a mixture setting): other sources' edits and
    # weight changes leave this node cached. Unset optional fields (None) are left out, so adding
    # a new optional field to the model does not change existing keys.
    for s in dump["sources"]:
        if s["name"] == part:
            return {f"sources.{part}": {k: v for k, v in s.items() if k != "weight" and v is not None}}
    return {}


def _source_files(view: SpecView, part: str | None) -> list[str]:
    return view.spec.source(part).patterns() if part else []


# resumable: finished shards are kept in the run dir. Its identity leaves out the file digests
# ("@files"): each shard is identified by its own files (path, size, mtime), so after fixing one bad
# file the rerun keeps every other file's shards.
@stage("corpus-source", version=1, kind="corpus", parts=_source_parts, select=_source_select,
       files=_source_files, check=check_corpus, heavy=True, resumable=True, trajectory_exclude=("@files",))
def corpus_source(ctx: Context) -> None:
    """Read, clean, filter and dedup one corpus source (sharded over worker processes, resumable)."""
    from stages.data_lib.ingest import build_source
    from stages.data_lib.shards import ShardStore, resolve_workers

    src = ctx.spec.source(ctx.part)
    index = next(i for i, s in enumerate(ctx.spec.sources) if s.name == ctx.part)
    assert ctx.run_dir is not None  # resumable: the engine always gives one
    store = ShardStore(ctx.run_dir / "shards")
    store.sweep_temps()  # half-written shards of a killed run: the engine's run-dir lock says none is still writing
    if ctx.options.get("fresh_run"):  # --force: read everything again
        store.clear()
    run: dict = {}
    stats = build_source(src, index, ctx.files, ctx.workspace, ctx.out, ctx.node, ctx.progress, run_dir=ctx.run_dir,
                         workers=resolve_workers(ctx.spec.workers), shard_mb=ctx.spec.shard_mb, log=ctx.log, run_info=run)
    ctx.stats(**stats, run=run)
