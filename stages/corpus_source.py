"""Stage ``corpus-source:<name>/<source>``: one node per source of a ``corpus`` spec (the kind and the
mixture stage are in ``stages/corpus.py``, whose docstring describes both).

Reads the source's documents, cleans, filters and drops exact duplicates; its key holds only that
source's entry and the content of its files, so editing one source reruns only that node. A hub
source's key also holds the commit its ``revision`` points at (the ``pin`` hook, resolved once per
command by ``stages/data_lib/hub.py``), and the run reads exactly that commit.
"""

from __future__ import annotations

from typing import Any

from genesis_build.errors import Unresolved
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


def _hub_info(view: SpecView, part: str | None) -> "Any":
    from stages.data_lib import hub

    if part is None or not hub.is_hub_id(view.spec.source(part), view.workspace):
        return None
    # all of the corpus's hub sources at once (one round trip for 12), memoised per process
    return hub.resolve(view.spec.sources, view.workspace).get(part)


def _source_pin(view: SpecView, part: str | None) -> dict[str, Any]:
    """The commit a hub source's ``revision`` points at (key material), or Unresolved: offline with a
    branch name, a missing dataset or revision, a gated dataset this machine cannot read. The build
    runs this for every source before any runs (the preflight), a --dry-run marks the node."""
    info = _hub_info(view, part)
    if info is None:
        return {}
    if info.problem and (info.fatal or info.sha is None):
        if info.fatal:
            raise Unresolved(f"source {part!r}: {info.problem}")
        raise Unresolved(f"source {part!r}: revision {info.revision!r} of {info.dataset} cannot be pinned to a commit "
                         f"({info.problem}); pin it in specs/{view.kind}/{view.name}.toml: revision = \"<sha>\" "
                         f"(an online `genesis-build --dry-run {view.kind}:{view.name}` shows the sha)")
    return {"hub_sha": info.sha}


def _source_describe(view: SpecView, part: str | None) -> list[tuple[str, str]]:
    """Planner rows: the pinned commit, documents / bytes / tokens, measured MB/s and ETA."""
    from stages.data_lib.plan import estimate, pin_row, size_rows

    if part is None:
        return []
    src = view.spec.source(part)
    info = _hub_info(view, part)
    rows = [r for r in [pin_row(src, info)] if r]
    est = estimate(view, src, info)
    return rows + size_rows(est, src) + (_slurm_rows(view, part, est) if view.spec.launcher == "slurm" else [])


def _slurm_rows(view: SpecView, part: str, est: "Any") -> list[tuple[str, str]]:
    """The array launch line and script; the shard count from the last build, else from file sizes."""
    import math

    from stages.data_lib.plan import last_build
    from stages.data_lib.slurm_array import describe_rows

    node = f"corpus-source:{view.name}/{part}"
    shards = (((last_build(view, node) or {}).get("stats") or {}).get("run") or {}).get("shards")
    known = "at the last build"
    if not shards and est.bytes and view.spec.source(part).type in ("text", "jsonl", "parquet"):
        shards, known = max(1, math.ceil(est.bytes / (view.spec.shard_mb * (1 << 20)))), "(≈ from file sizes)"
    return describe_rows(view.spec, node, shards, known)


# resumable: finished shards are kept in the run dir. Its identity leaves out the file digests
# ("@files"): each shard is identified by its own files (path, size, mtime), so after fixing one bad
# file the rerun keeps every other file's shards.
@stage("corpus-source", version=1, kind="corpus", parts=_source_parts, select=_source_select,
       files=_source_files, check=check_corpus, describe=_source_describe, pin=_source_pin, heavy=True,
       resumable=True, trajectory_exclude=("@files",))
def corpus_source(ctx: Context) -> None:
    """Read, clean, filter and dedup one corpus source (sharded over worker processes, resumable)."""
    from stages.data_lib.ingest import build_source
    from stages.data_lib.shards import resolve_workers

    src = ctx.spec.source(ctx.part)
    if ctx.external.get("hub_sha"):  # read the commit the key holds, not wherever the branch is now
        src = src.model_copy(update={"revision": ctx.external["hub_sha"]})
    index = next(i for i, s in enumerate(ctx.spec.sources) if s.name == ctx.part)
    assert ctx.run_dir is not None  # resumable: the engine always gives one
    run: dict = {}
    if ctx.spec.launcher == "slurm":  # the shard work as a SLURM job array, the merge as a second job
        from stages.data_lib.slurm_array import build_source_on_slurm

        stats = build_source_on_slurm(src, index, ctx.files, ctx.workspace, ctx.out, ctx.node, ctx.progress,
                                      run_dir=ctx.run_dir, opts=ctx.spec.slurm, fresh=bool(ctx.options.get("fresh_run")),
                                      shard_mb=ctx.spec.shard_mb, log=ctx.log, run_info=run)
    else:
        stats = build_source(src, index, ctx.files, ctx.workspace, ctx.out, ctx.node, ctx.progress, run_dir=ctx.run_dir,
                             fresh=bool(ctx.options.get("fresh_run")), workers=resolve_workers(ctx.spec.workers, ctx.options.get("workers")),
                             shard_mb=ctx.spec.shard_mb, log=ctx.log, run_info=run)
    # the run (shards, workers, MB/s: the planner's speed row) and the pinned commit: manifest only
    ctx.stats(**stats, run=run, **({"hub_sha": ctx.external["hub_sha"]} if ctx.external.get("hub_sha") else {}))
