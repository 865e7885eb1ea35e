"""``launcher = "slurm"``: the training job as one ``sbatch --wait`` job (no torch imported here).

The stage writes ``<run dir>/sbatch.sh`` and submits it with ``sbatch --wait``, so the build blocks
until the job ends and then publishes exactly like the torchrun path (it reads ``result.json`` from
the run directory). The job has ``nnodes`` nodes with one task each; every task is one torchrun
agent that starts ``nproc_per_node`` ranks, and the agents meet at a c10d rendezvous on the job's
first node (``scontrol show hostnames``), with the SLURM job id as the rendezvous id::

    srun python -m torch.distributed.run --nnodes $SLURM_NNODES --nproc-per-node 8 \\
         --rdzv-backend c10d --rdzv-endpoint $head:29500 --rdzv-id $SLURM_JOB_ID … \\
         -m stages.training.train <run dir>/job.json

Run ``genesis-build`` where ``sbatch`` works (a login node); the cache, the venv and this repository
must be visible at the same paths on the compute nodes (ranks write checkpoint shards into the run
directory). Ctrl-C / SIGTERM of the build becomes ``scancel --signal=TERM <job>`` (sent to the job
steps, not the batch shell): torchrun forwards it, the ranks checkpoint and exit, ``sbatch --wait``
returns and the build fails with "stopped … rerun to continue". With ``[slurm] time`` set, SLURM
sends the same SIGTERM ``stop_before_timeout_s`` before the time limit. The job id is kept in
``<run dir>/slurm_job_id``; if a build died without ``sbatch --wait`` returning, the next build
refuses to submit while ``squeue`` still lists that job (two jobs must not share a run directory).
``genesis-build --dry-run pretrain:<model>`` shows the script.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

RUN_DIR_PLACEHOLDER = "<cache>/runs/<trajectory key>"
JOB_ID_FILE = "slurm_job_id"  # in the run dir: the last job submitted for it


def gpus_per_node(parallel: Any) -> int:
    """GPUs the job asks for on each node: ``[slurm] gpus_per_node`` or ``nproc_per_node``."""
    g = parallel.slurm.gpus_per_node
    return parallel.nproc_per_node if g is None else g


def sbatch_script(job_path: str, parallel: Any, *, job_name: str, python: str = sys.executable,
                  pythonpath: str | None = None, module: str = "stages.training.train") -> str:
    """The batch script for ``job_path`` (a path, or a placeholder for ``--dry-run``)."""
    from .process import SHUTDOWN_TIMEOUT_S, stages_root

    sl = parallel.slurm
    q = shlex.quote
    lines = ["#!/bin/bash",
             "# Written by genesis-build and submitted with `sbatch --wait`; the build publishes",
             "# the result when the job ends. One task per node: a torchrun agent for its ranks.",
             f"#SBATCH --job-name={job_name}",
             f"#SBATCH --nodes={parallel.nnodes}",
             "#SBATCH --ntasks-per-node=1"]
    if gpus_per_node(parallel):
        lines.append(f"#SBATCH --gpus-per-node={gpus_per_node(parallel)}")
    if sl.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={sl.cpus_per_task}")
    for opt in ("partition", "account", "time"):
        if getattr(sl, opt):
            lines.append(f"#SBATCH --{opt}={getattr(sl, opt)}")
    if sl.time:  # SIGTERM to the job steps before the limit: the ranks checkpoint and exit
        lines.append(f"#SBATCH --signal=TERM@{sl.stop_before_timeout_s}")
    lines += [f"#SBATCH {opt}" for opt in sl.extra]
    root = pythonpath or str(stages_root())
    cpus = f" --cpus-per-task={sl.cpus_per_task}" if sl.cpus_per_task else ""
    lines += ["", "set -euo pipefail",
              f"export PYTHONPATH={q(root)}${{PYTHONPATH:+:$PYTHONPATH}}",
              "export PYTHONUNBUFFERED=1"]
    lines += [f"export {k}={q(v)}" for k, v in parallel.env.items()]
    lines += ['hosts=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))',
              'head=${hosts[0]}  # the c10d rendezvous runs on the first node',
              # srun does not inherit sbatch's --cpus-per-task (SLURM ≥ 22.05): ask again
              f"srun --kill-on-bad-exit=1{cpus} {q(python)} -m torch.distributed.run \\",
              f'    --nnodes "$SLURM_NNODES" --nproc-per-node {parallel.nproc_per_node} \\',
              f'    --rdzv-backend c10d --rdzv-endpoint "$head:{sl.rdzv_port}" --rdzv-id "$SLURM_JOB_ID" \\',
              f"    --max-restarts 0 --shutdown-timeout {SHUTDOWN_TIMEOUT_S} --monitor-interval 0.2 \\",
              f"    -m {module} {q(job_path)}", ""]
    return "\n".join(lines)


def sbatch_command(script: Path, run_dir: Path) -> list[str]:
    """``sbatch --wait``: blocks until the job ends and exits with its exit code."""
    return ["sbatch", "--wait", "--parsable", f"--output={run_dir / 'slurm-%j.out'}", str(script)]


def describe_rows(parallel: Any, job_name: str) -> list[tuple[str, str]]:
    """``--dry-run`` rows: the submit command and the script (the run dir is known only at run time)."""
    job = f"{RUN_DIR_PLACEHOLDER}/job.json"
    return [("launch", f"sbatch --wait {RUN_DIR_PLACEHOLDER}/sbatch.sh ({parallel.nnodes} node(s) × "
                       f"{parallel.nproc_per_node} rank(s); the build waits for the job, then publishes)"),
            ("sbatch script", "\n" + sbatch_script(job, parallel, job_name=job_name).rstrip("\n"))]


def job_name_for(job_path: Path) -> str:
    """The default job name: ``genesis-<run dir name>``."""
    return f"genesis-{Path(job_path).resolve().parent.name[:16]}"


def _still_queued(run_dir: Path) -> tuple[str, str] | None:
    """(job id, state) when the job last submitted for ``run_dir`` is still pending or running.

    A build that died without ``sbatch --wait`` returning (kill -9, a lost login session) leaves its
    job running; a rerun must not start a second one on the same run directory.
    """
    f = run_dir / JOB_ID_FILE
    if not f.is_file():
        return None
    job = f.read_text().strip()
    try:
        r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = r.stdout.strip().splitlines()[0].strip() if r.returncode == 0 and r.stdout.strip() else ""
    return (job, state.lower()) if state else None


def refuse_if_queued(run_dir: Path) -> None:
    """A GenesisError when the job last submitted for ``run_dir`` is still pending or running: two jobs
    must not train into one run directory (nor may a ``--force`` rebuild empty it under a running job)."""
    from genesis_build.errors import GenesisError

    previous = _still_queued(run_dir)
    if previous:
        raise GenesisError(f"SLURM job {previous[0]} of an earlier build of this run is still {previous[1]} (squeue); "
                           f"two jobs must not train into {run_dir}: wait for it to end or `scancel {previous[0]}`, "
                           f"then rerun")


def run_sbatch(job_path: Path, parallel: Any, progress_file: Path | None = None,
               on_progress: Callable[[dict[str, Any]], None] | None = None,
               module: str = "stages.training.train", log: Callable[[str], None] | None = None,
               job_name: str | None = None) -> int:
    """Write ``sbatch.sh`` next to ``job_path``, submit it with ``sbatch --wait``; returns the job's exit code."""
    from genesis_build.errors import GenesisError

    from .process import set_pdeathsig, supervise

    say = log or (lambda m: print(m, flush=True))
    job_path = Path(job_path).resolve()
    run_dir = job_path.parent
    script = run_dir / "sbatch.sh"
    script.write_text(sbatch_script(str(job_path), parallel, job_name=job_name or job_name_for(job_path),
                                    module=module))
    script.chmod(0o755)
    if shutil.which("sbatch") is None:
        raise GenesisError(f"launcher = \"slurm\" but `sbatch` is not on PATH: run genesis-build on a SLURM login node "
                           f"(the job script is {script}), or use launcher = \"torchrun\"")
    refuse_if_queued(run_dir)
    cmd = sbatch_command(script, run_dir)
    say(f"submitting {script}: {' '.join(shlex.quote(c) for c in cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=set_pdeathsig, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    job_id: list[str] = []

    def read_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not job_id and line.split(";")[0].strip().isdigit():  # --parsable: "<id>[;cluster]"
                job_id.append(line.split(";")[0].strip())
                (run_dir / JOB_ID_FILE).write_text(job_id[0] + "\n")
                say(f"SLURM job {job_id[0]} submitted; output: {run_dir / f'slurm-{job_id[0]}.out'}")
                if on_progress is not None:
                    on_progress({"done": 0, "total": None, "desc": f"SLURM job {job_id[0]} (queued or running)"})
                continue
            say(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()

    def stop() -> None:
        if job_id:  # the job steps (torchrun agents) get SIGTERM; the ranks checkpoint and exit
            try:
                subprocess.run(["scancel", "--signal=TERM", job_id[0]], check=False)
            except OSError as e:
                say(f"could not scancel job {job_id[0]}: {e}")
        else:
            proc.terminate()

    rc = supervise(proc, stop, progress_file, on_progress)
    reader.join(timeout=5)
    out = run_dir / f"slurm-{job_id[0]}.out" if job_id else None
    if rc != 0 and out is not None and out.is_file():
        say(f"--- tail of {out}")
        say(out.read_text(errors="replace")[-8000:])
    return rc
