"""What runs on the compute nodes of a corpus source built with ``launcher = "slurm"`` (torch-free).

    python -m stages.data_lib.shard_job run <run dir>/slurm/job.json     # one task of the job array
    python -m stages.data_lib.shard_job merge <run dir>/slurm/job.json   # the 1-node merge job

``job.json`` is written by the build (``stages.data_lib.slurm_array``): the source, its shards
(pieces, id, index) exactly as the build planned them, the workspace, the shard store and how many
array tasks and workers per task there are.

``run``: task ``i`` (``SLURM_ARRAY_TASK_ID``) takes the shards whose index is ``i`` mod the task
count, skips those whose marker is already in the shard store (finished by an earlier job), and reads
the rest with :func:`~stages.data_lib.ingest.run_shard` on a local process pool. A bad input (a
non-UTF-8 line, bad JSON …) is written as one line to ``errors/<shard id>.error`` and the task goes on
with its other shards (every finished shard is work a rerun keeps), then exits 1. What the task did
is in ``tasks/<i>.json`` (shards it owns, ran, skipped, failed).

``merge``: every shard must be finished; the shards are merged in source order into ``merged/``
(``docs.arrow``, ``stats.json``, ``run.json``) with the same code as a local build, so the bytes are
the same. A source-level error (no documents left after filters) goes to ``merge.error``.

SIGTERM (``scancel --signal=TERM`` when the build is stopped) ends a task at once: no new shard
starts, running workers die with it, their half-written files are swept by the next build.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from .ingest import SourceError, SourcePlan, merge_source, run_shards_forked
from .shards import Piece, Shard, ShardStore

ERRORS_DIR = "errors"  # <slurm dir>/errors/<shard id>.error: one line, the SourceError of that shard
TASKS_DIR = "tasks"  # <slurm dir>/tasks/<i>.json: what array task i did
MERGED_DIR = "merged"  # <slurm dir>/merged/: docs.arrow + stats.json + run.json, moved into the output
MERGE_ERROR = "merge.error"


def shard_to_json(s: Shard) -> dict[str, Any]:
    """A shard as job.json holds it."""
    return {"index": s.index, "ident": s.ident, "nbytes": s.nbytes,
            "pieces": [{"file": p.file, "start": p.start, "stop": p.stop, "nbytes": p.nbytes} for p in s.pieces]}


def shard_from_json(d: dict[str, Any]) -> Shard:
    """The inverse of :func:`shard_to_json`."""
    return Shard(int(d["index"]), tuple(Piece(**p) for p in d["pieces"]), str(d["ident"]), int(d["nbytes"]))


def load_job(job_path: Path) -> tuple[dict[str, Any], SourcePlan]:
    """job.json and the source plan it holds."""
    from stages.corpus import Source

    job = json.loads(Path(job_path).read_text())
    plan = SourcePlan(Source.model_validate(job["source"]), job["where"], [Path(f) for f in job["files"]],
                      [shard_from_json(s) for s in job["shards"]])
    return job, plan


def task_shards(shards: list[Shard], task: int, count: int) -> list[Shard]:
    """The shards array task ``task`` of ``count`` owns: index ≡ task (mod count)."""
    return [s for s in shards if s.index % count == task]


def _stop_on_sigterm() -> None:
    # scancel --signal=TERM: leave at once (KeyboardInterrupt unwinds through the pool's cleanup)
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_task(job_path: Path, task: int) -> int:
    """Array task ``task``: read its unfinished shards; 0 if all finished, 1 if one had bad input."""
    job, plan = load_job(job_path)
    count = int(job["array_tasks"])
    slurm_dir = Path(job_path).parent
    store = ShardStore(Path(job["store"]))
    errors = slurm_dir / ERRORS_DIR
    errors.mkdir(exist_ok=True)
    mine = task_shards(plan.shards, task, count)
    todo = [s for s in mine if store.get(s.ident) is None]
    for s in todo:  # an error of an earlier run of this shard is stale now
        (errors / f"{s.ident}.error").unlink(missing_ok=True)
    host = socket.gethostname()
    print(f"task {task} of {count} on {host}: shards {[s.index for s in mine]}, {len(mine) - len(todo)} finished "
          f"earlier, {len(todo)} to run on {min(int(job['workers_per_task']), max(1, len(todo)))} worker(s)", flush=True)
    ran: list[int] = []
    failed: list[int] = []
    _stop_on_sigterm()
    t0 = time.time()
    # stopped (SIGTERM): do not wait for running shards (their workers die with this process)
    runs = run_shards_forked(plan.src, todo, Path(job["workspace"]), plan.where, store.root, int(job["workers_per_task"]),
                             wait_on_stop=False)
    with closing(runs):
        for s, rec in runs:
            if "error" in rec:
                failed.append(s.index)
                _write_line(errors / f"{s.ident}.error", rec["error"])
                print(f"shard {s.index}: {rec['error']}", flush=True)
                continue
            ran.append(s.index)
            print(f"shard {s.index + 1}/{len(plan.shards)} done ({rec['read']} read, {rec['kept']} kept)", flush=True)
    record = {"task": task, "of": count, "host": host, "shards": [s.index for s in mine], "ran": sorted(ran),
              "skipped": [s.index for s in mine if s not in todo], "failed": sorted(failed),
              "seconds": round(time.time() - t0, 3)}
    (slurm_dir / TASKS_DIR).mkdir(exist_ok=True)
    _write_line(slurm_dir / TASKS_DIR / f"{task}.json", json.dumps(record, sort_keys=True))
    return 1 if failed else 0


def run_merge(job_path: Path) -> int:
    """The merge job: every shard finished → ``merged/``; 0 on success."""
    import shutil

    job, plan = load_job(job_path)
    slurm_dir = Path(job_path).parent
    store = ShardStore(Path(job["store"]))
    records = [store.get(s.ident) for s in plan.shards]
    missing = [s.index for s, r in zip(plan.shards, records) if r is None]
    if missing:
        print(f"merge: {len(missing)} shard(s) not finished: {missing[:20]}", flush=True)
        return 1
    merged = slurm_dir / MERGED_DIR
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir()
    t0 = time.time()
    try:
        stats, merge_secs = merge_source(plan, store, records, merged)  # type: ignore[arg-type]
    except SourceError as e:
        _write_line(slurm_dir / MERGE_ERROR, str(e))
        print(f"merge: {e}", flush=True)
        return 1
    info = {"merge_seconds": round(merge_secs, 3), "seconds": round(time.time() - t0, 3),
            "host": socket.gethostname()}
    _write_line(merged / "run.json", json.dumps(info, sort_keys=True))
    print(f"merged {len(plan.shards)} shards on {info['host']}: {stats['documents']} documents kept", flush=True)
    return 0


def _write_line(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text.rstrip("\n") + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``run <job.json>`` (task id from ``SLURM_ARRAY_TASK_ID``) or ``merge <job.json>``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("run", "merge"):
        print("usage: python -m stages.data_lib.shard_job run|merge <job.json>", file=sys.stderr)
        return 2
    if args[0] == "merge":
        return run_merge(Path(args[1]))
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is None or not task.isdigit():
        print("shard_job run: SLURM_ARRAY_TASK_ID is not set (run it as a task of the job array)", file=sys.stderr)
        return 2
    try:
        return run_task(Path(args[1]), int(task))
    except KeyboardInterrupt:
        print("stopped (SIGTERM): finished shards are kept", flush=True)
        sys.stderr.flush()
        # at once: a normal exit would join the pool's running workers (they die with us: PDEATHSIG)
        os._exit(143)


if __name__ == "__main__":
    sys.exit(main())
