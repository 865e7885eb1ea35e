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

The parts every genesis-build SLURM job shares (the ``#SBATCH`` header, the environment lines,
``sbatch --wait``, the job-id file, the refusal while an earlier job still runs, and the
submit / supervise / ``scancel`` loop: :func:`sbatch_header`, :func:`script_prelude`,
:func:`submit_and_wait`) are used by the corpus shard array too (``stages.data_lib.slurm_array``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

RUN_DIR_PLACEHOLDER = "<cache>/runs/<trajectory key>"
JOB_ID_FILE = "slurm_job_id"  # in the run dir: the last job submitted for it


def gpus_per_node(parallel: Any) -> int:
    """GPUs the job asks for on each node: ``[slurm] gpus_per_node`` or ``nproc_per_node``."""
    g = parallel.slurm.gpus_per_node
    return parallel.nproc_per_node if g is None else g


def sbatch_header(job_name: str, opts: Any, resources: list[str], comment: str,
                  more: list[str] | None = None) -> list[str]:
    """``#!/bin/bash``, a comment and the ``#SBATCH`` lines: the job name, ``resources`` (e.g.
    ``--nodes=2``), then ``opts``' (a :class:`~stages.parallel_spec.SbatchOptions`) cpus per task,
    partition, account and time, ``more`` and ``opts.extra`` last."""
    lines = ["#!/bin/bash", *(f"# {c}" if c else "#" for c in comment.splitlines()),
             f"#SBATCH --job-name={job_name}"]
    lines += [f"#SBATCH {r}" for r in resources]
    if opts.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_task}")
    for opt in ("partition", "account", "time"):
        if getattr(opts, opt):
            lines.append(f"#SBATCH --{opt}={getattr(opts, opt)}")
    lines += [f"#SBATCH {m}" for m in more or []]
    lines += [f"#SBATCH {opt}" for opt in opts.extra]
    return lines


def script_prelude(pythonpath: str | None = None, env: dict[str, str] | None = None) -> list[str]:
    """The script's first commands: strict bash, ``stages`` importable, unbuffered output, ``env``."""
    from .process import stages_root

    root = pythonpath or str(stages_root())
    lines = ["", "set -euo pipefail",
             f"export PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}",
             "export PYTHONUNBUFFERED=1"]
    return lines + [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]


def srun_prefix(opts: Any) -> str:
    """``srun --kill-on-bad-exit=1 [--cpus-per-task=N]``: srun does not inherit sbatch's
    ``--cpus-per-task`` (SLURM ≥ 22.05), so it is asked again."""
    cpus = f" --cpus-per-task={opts.cpus_per_task}" if opts.cpus_per_task else ""
    return f"srun --kill-on-bad-exit=1{cpus}"


def sbatch_script(job_path: str, parallel: Any, *, job_name: str, python: str = sys.executable,
                  pythonpath: str | None = None, module: str = "stages.training.train") -> str:
    """The batch script for ``job_path`` (a path, or a placeholder for ``--dry-run``)."""
    from .process import SHUTDOWN_TIMEOUT_S

    sl = parallel.slurm
    q = shlex.quote
    resources = [f"--nodes={parallel.nnodes}", "--ntasks-per-node=1"]
    if gpus_per_node(parallel):
        resources.append(f"--gpus-per-node={gpus_per_node(parallel)}")
    # with a time limit: SIGTERM to the job steps before it, so the ranks checkpoint and exit
    more = [f"--signal=TERM@{sl.stop_before_timeout_s}"] if sl.time else []
    lines = sbatch_header(job_name, sl, resources,
                          "Written by genesis-build and submitted with `sbatch --wait`; the build publishes\n"
                          "the result when the job ends. One task per node: a torchrun agent for its ranks.", more)
    lines += script_prelude(pythonpath, parallel.env)
    lines += ['hosts=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))',
              'head=${hosts[0]}  # the c10d rendezvous runs on the first node',
              f"{srun_prefix(sl)} {q(python)} -m torch.distributed.run \\",
              f'    --nnodes "$SLURM_NNODES" --nproc-per-node {parallel.nproc_per_node} \\',
              f'    --rdzv-backend c10d --rdzv-endpoint "$head:{sl.rdzv_port}" --rdzv-id "$SLURM_JOB_ID" \\',
              f"    --max-restarts 0 --shutdown-timeout {SHUTDOWN_TIMEOUT_S} --monitor-interval 0.2 \\",
              f"    -m {module} {q(job_path)}", ""]
    return "\n".join(lines)


def sbatch_command(script: Path, run_dir: Path, args: list[str] | None = None, output: str = "slurm-%j.out") -> list[str]:
    """``sbatch --wait``: blocks until the job ends and exits with its exit code (for a job array:
    until every task ended, with the highest exit code). ``args``: more sbatch options (``--array=…``)."""
    return ["sbatch", "--wait", "--parsable", *(args or []), f"--output={run_dir / output}", str(script)]


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
                           f"two jobs must not work in {run_dir}: wait for it to end or `scancel {previous[0]}`, "
                           f"then rerun")


def run_sbatch(job_path: Path, parallel: Any, progress_file: Path | None = None,
               on_progress: Callable[[dict[str, Any]], None] | None = None,
               module: str = "stages.training.train", log: Callable[[str], None] | None = None,
               job_name: str | None = None) -> int:
    """Write ``sbatch.sh`` next to ``job_path``, submit it with ``sbatch --wait``; returns the job's exit code."""
    job_path = Path(job_path).resolve()
    text = sbatch_script(str(job_path), parallel, job_name=job_name or job_name_for(job_path), module=module)
    return submit_and_wait(text, job_path.parent, progress_file=progress_file, on_progress=on_progress, log=log,
                           instead='launcher = "torchrun"').rc


@dataclass
class Submitted:
    """What :func:`submit_and_wait` saw: the exit code, the job id (None if sbatch printed none) and
    whether a SIGTERM/SIGINT of the build was forwarded as ``scancel``."""

    rc: int
    job_id: str | None
    stopped: bool


def submit_and_wait(script_text: str, run_dir: Path, *, script_name: str = "sbatch.sh",
                    sbatch_args: list[str] | None = None, output: str = "slurm-%j.out",
                    progress_file: Path | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None,
                    log: Callable[[str], None] | None = None, instead: str = 'launcher = "torchrun"') -> Submitted:
    """Write ``script_text`` to ``run_dir/script_name`` and submit it with ``sbatch --wait``.

    The job id goes to ``run_dir/slurm_job_id``; submitting is refused while the job last submitted
    for ``run_dir`` is still queued. The first SIGTERM/SIGINT of the build becomes ``scancel
    --signal=TERM <job>`` (every task of an array); on failure the tail of the job's output files is
    logged. ``output`` is sbatch's ``--output`` pattern inside ``run_dir`` (``%j`` job id; ``%A``
    / ``%a`` array job id / task). ``instead`` names the non-SLURM launcher in the missing-sbatch error.
    """
    from genesis_build.errors import GenesisError

    from .process import set_pdeathsig, supervise

    say = log or (lambda m: print(m, flush=True))
    run_dir = Path(run_dir).resolve()
    script = run_dir / script_name
    script.write_text(script_text)
    script.chmod(0o755)
    if shutil.which("sbatch") is None:
        raise GenesisError(f"launcher = \"slurm\" but `sbatch` is not on PATH: run genesis-build on a SLURM login node "
                           f"(the job script is {script}), or use {instead}")
    refuse_if_queued(run_dir)
    cmd = sbatch_command(script, run_dir, sbatch_args, output)
    say(f"submitting {script}: {' '.join(shlex.quote(c) for c in cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=set_pdeathsig, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    job_id: list[str] = []
    stopped: list[bool] = []

    def outputs() -> list[Path]:
        if not job_id:
            return []
        pattern = output.replace("%A", job_id[0]).replace("%j", job_id[0]).replace("%a", "*")
        return sorted(run_dir.glob(pattern))

    def read_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not job_id and line.split(";")[0].strip().isdigit():  # --parsable: "<id>[;cluster]"
                job_id.append(line.split(";")[0].strip())
                (run_dir / JOB_ID_FILE).write_text(job_id[0] + "\n")
                shown = output.replace("%A", job_id[0]).replace("%j", job_id[0])
                say(f"SLURM job {job_id[0]} submitted; output: {run_dir / shown}")
                if on_progress is not None:
                    on_progress({"done": 0, "total": None, "desc": f"SLURM job {job_id[0]} (queued or running)"})
                continue
            say(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()

    def stop() -> None:
        stopped.append(True)
        if job_id:  # the job steps (torchrun agents, shard tasks) get SIGTERM and exit on their own
            try:
                subprocess.run(["scancel", "--signal=TERM", job_id[0]], check=False)
            except OSError as e:
                say(f"could not scancel job {job_id[0]}: {e}")
        else:
            proc.terminate()

    rc = supervise(proc, stop, progress_file, on_progress)
    reader.join(timeout=5)
    if rc != 0:
        files = outputs()
        for out in files[:8]:  # an array has one file per task: the first few are enough to see why
            say(f"--- tail of {out}")
            say(out.read_text(errors="replace")[-(8000 if len(files) == 1 else 2000):])
    return Submitted(rc, job_id[0] if job_id else None, bool(stopped))
