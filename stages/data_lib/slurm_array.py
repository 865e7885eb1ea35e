"""``launcher = "slurm"`` for a corpus source: its shards run as a SLURM job array, the merge as a
second 1-node job; the build (on the login node) plans, submits, waits and publishes.

1. The build plans the shards exactly as a local build (:func:`~stages.data_lib.ingest.plan_source`)
   and writes ``<run dir>/slurm/job.json``.
2. ``sbatch --wait --array=0-<N-1> array.sh``: task ``i`` runs ``srun python -m
   stages.data_lib.shard_job run job.json`` and reads the shards ``i`` mod ``N`` that have no marker
   in the shard store (``<run dir>/shards``, on the shared cache) yet.
3. ``sbatch --wait merge.sh`` (one node): ``shard_job merge`` merges every shard into
   ``<run dir>/slurm/merged/``; the build moves ``docs.arrow`` and ``stats.json`` into the output,
   so the output digest equals a local build's.

A bad input fails the array; the build raises the first error by shard order (one line naming the
file and line) and keeps every finished shard, so the rerun after the fix runs only the unfinished
ones. Ctrl-C / SIGTERM of the build is ``scancel --signal=TERM`` of the running job (the shared loop
of ``stages.training.slurm``). The cache, the venv and this repository must be visible at the same
paths on the compute nodes, as for pretraining. Nothing here imports pyarrow at module level, so
``--dry-run`` rows stay light.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from genesis_build.errors import GenesisError

from stages.training.slurm import RUN_DIR_PLACEHOLDER, sbatch_header, script_prelude, srun_prefix, submit_and_wait

SLURM_DIR = "slurm"  # in the node's run dir: job.json, the scripts, job outputs, errors/, tasks/, merged/
MODULE = "stages.data_lib.shard_job"


def job_name(node: str) -> str:
    """``genesis-data-<corpus>-<source>`` (sbatch-safe characters)."""
    return "genesis-data-" + re.sub(r"[^A-Za-z0-9._-]", "-", node.split(":", 1)[-1])[:40]


def array_script(job_path: str, opts: Any, *, name: str, python: str = sys.executable,
                 pythonpath: str | None = None) -> str:
    """The script every task of the array runs (``--array`` is on the sbatch command line)."""
    lines = sbatch_header(name, opts, ["--nodes=1", "--ntasks=1"],
                          "Written by genesis-build and submitted with `sbatch --wait --array=0-<N-1>`: task i reads\n"
                          "the shards i mod N of one corpus source; the build then submits merge.sh.")
    lines += script_prelude(pythonpath)
    lines += [f"{srun_prefix(opts)} {shlex.quote(python)} -m {MODULE} run {shlex.quote(job_path)}", ""]
    return "\n".join(lines)


def merge_script(job_path: str, opts: Any, *, name: str, python: str = sys.executable,
                 pythonpath: str | None = None) -> str:
    """The 1-node job that merges the finished shards into ``merged/``."""
    lines = sbatch_header(f"{name}-merge", opts, ["--nodes=1", "--ntasks=1"],
                          "Written by genesis-build and submitted with `sbatch --wait` after the shard array:\n"
                          "merges every shard in source order; the build publishes the result.")
    lines += script_prelude(pythonpath)
    lines += [f"{srun_prefix(opts)} {shlex.quote(python)} -m {MODULE} merge {shlex.quote(job_path)}", ""]
    return "\n".join(lines)


def describe_rows(spec: Any, node: str, shards: int | None, shards_known: str) -> list[tuple[str, str]]:
    """``--dry-run`` rows: the array launch line (tasks, shards per task if known) and the scripts."""
    opts = spec.slurm
    n = opts.array_tasks
    per = (f"; {shards} shards {shards_known} → ≤{math.ceil(shards / n)} per task" if shards else
           "; shards per task known once planned")
    job = f"{RUN_DIR_PLACEHOLDER}/{SLURM_DIR}/job.json"
    return [("launch", f"sbatch --wait --array=0-{n - 1} {RUN_DIR_PLACEHOLDER}/{SLURM_DIR}/array.sh "
                       f"({n} task(s) × {opts.workers()} worker(s); task i reads shards i mod {n}{per}), "
                       f"then sbatch --wait merge.sh (1 node: the merge); the build waits, then publishes"),
            ("sbatch script", "\n" + array_script(job, opts, name=job_name(node)).rstrip("\n"))]


def build_source_on_slurm(src: Any, index: int, files: list[Path], workspace: Path, out: Path, node: str,
                          progress: Callable[..., None], *, run_dir: Path, opts: Any, fresh: bool = False,
                          shard_mb: float, log: Callable[[str], None],
                          run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Like :func:`~stages.data_lib.ingest.build_source`, with the shard work and the merge run as
    SLURM jobs (see the module docstring); returns the statistics, writes the same output bytes."""
    import time

    from .ingest import DOCS_FILE, open_store, plan_source, run_summary
    from .shard_job import ERRORS_DIR, MERGE_ERROR, MERGED_DIR, shard_to_json
    from stages.training.slurm import refuse_if_queued

    t0 = time.time()
    plan = plan_source(src, index, files, workspace, node, shard_mb)
    slurm_dir = (run_dir / SLURM_DIR).resolve()
    slurm_dir.mkdir(parents=True, exist_ok=True)
    refuse_if_queued(slurm_dir)  # before the store is swept or emptied: a job of a dead build may still write
    store = open_store(run_dir / "shards", fresh)
    todo = [s for s in plan.shards if store.get(s.ident) is None]
    tasks = max(1, min(opts.array_tasks, len(plan.shards)))
    workers = opts.workers()
    for stale in (slurm_dir / ERRORS_DIR, slurm_dir / MERGED_DIR):
        shutil.rmtree(stale, ignore_errors=True)
    (slurm_dir / MERGE_ERROR).unlink(missing_ok=True)
    job_path = slurm_dir / "job.json"
    job = {"node": node, "where": plan.where, "source": src.model_dump(mode="json"), "index": index,
           "workspace": str(workspace), "files": [str(f) for f in plan.files], "store": str(store.root.resolve()),
           "array_tasks": tasks, "workers_per_task": workers, "shards": [shard_to_json(s) for s in plan.shards]}
    job_path.write_text(json.dumps(job, indent=1) + "\n")
    name = job_name(node)
    log(f"{src.name}: {len(plan.shards)} shards, {len(plan.shards) - len(todo)} finished earlier, {len(todo)} to run "
        f"on SLURM: {tasks} array task(s) × {workers} worker(s); job file {job_path}")
    jobs: list[str] = []
    if todo:
        done = _watch_markers(store, plan, progress)
        try:
            sub = submit_and_wait(array_script(str(job_path), opts, name=name), slurm_dir, script_name="array.sh",
                                  sbatch_args=[f"--array=0-{tasks - 1}"], output="slurm-%A_%a.out", log=log,
                                  instead='launcher = "local"')
        finally:
            done.set()
        jobs += [sub.job_id] if sub.job_id else []
        _raise_if_failed(sub, plan, store, slurm_dir / ERRORS_DIR, "shard array", node)
    else:
        log(f"{src.name}: every shard finished earlier: no array job")
    sub = submit_and_wait(merge_script(str(job_path), opts, name=name), slurm_dir, script_name="merge.sh",
                          output="slurm-%j.out", log=log, instead='launcher = "local"')
    jobs += [sub.job_id] if sub.job_id else []
    if (slurm_dir / MERGE_ERROR).is_file() and not sub.stopped:
        from .ingest import SourceError

        raise SourceError((slurm_dir / MERGE_ERROR).read_text().strip())
    _raise_if_failed(sub, plan, None, None, "merge job", node)
    merged = slurm_dir / MERGED_DIR
    for name_ in (DOCS_FILE, "stats.json"):
        shutil.move(str(merged / name_), str(out / name_))
    stats = json.loads((out / "stats.json").read_text())
    merge_info = json.loads((merged / "run.json").read_text())
    read = stats["documents_read"]
    progress(read, read, desc=f"{src.name}: done", kept=stats["documents"])
    if run_info is not None:  # the manifest only, like a local build's
        run_info.update(run_summary(plan, len(todo), tasks * workers, time.time() - t0, merge_info["merge_seconds"]),
                        launcher="slurm", array_tasks=tasks, workers_per_task=workers, slurm_jobs=jobs,
                        merge_host=merge_info.get("host"))
    return stats


def _raise_if_failed(sub: Any, plan: Any, store: Any, errors: Path | None, what: str, node: str) -> None:
    """One line for a failed job: the first bad input by shard order, or stopped, or the exit code."""
    if sub.stopped:
        raise GenesisError(f"{node}: stopped: SLURM {what} {sub.job_id or ''} cancelled (scancel); finished shards "
                           f"are kept, rerun to continue")
    if errors is not None:
        for s in plan.shards:  # the first by shard order, as a local build reports it
            f = errors / f"{s.ident}.error"
            if f.is_file():
                from .ingest import SourceError

                raise SourceError(f.read_text().strip())
    if sub.rc != 0:
        raise GenesisError(f"{node}: SLURM {what} {sub.job_id or ''} failed with exit code {sub.rc} (its output is "
                           f"in this node's log and {errors.parent if errors else 'the run dir'}/slurm-*.out); "
                           f"finished shards are kept, rerun to continue")
    if store is not None:
        missing = [s.index for s in plan.shards if store.get(s.ident) is None]
        if missing:
            raise GenesisError(f"{node}: SLURM {what} {sub.job_id or ''} ended but {len(missing)} shard(s) are not "
                               f"finished (first: {missing[0]}); is the cache on a file system the compute nodes share?")


def _watch_markers(store: Any, plan: Any, progress: Callable[..., None]) -> threading.Event:
    """Report finished shards (their markers appear in the shared store) while the array runs."""
    stop = threading.Event()
    pending = {s.ident: s for s in plan.shards if store.get(s.ident) is None}
    total_bytes = sum(s.nbytes for s in plan.shards) or None
    done_bytes = (total_bytes or 0) - sum(s.nbytes for s in pending.values())

    def poll() -> None:
        nonlocal done_bytes
        while not stop.wait(1.0):
            for ident in [i for i in pending if store.get(i) is not None]:
                done_bytes += pending.pop(ident).nbytes
            finished = len(plan.shards) - len(pending)
            progress(done_bytes if total_bytes else finished, total_bytes or len(plan.shards),
                     desc=f"{plan.src.name}: SLURM array", shards=f"{finished}/{len(plan.shards)}")

    threading.Thread(target=poll, daemon=True).start()
    return stop
