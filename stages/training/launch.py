"""Start a training job: torchrun as a subprocess, in place inside a rank, or as a SLURM job.

The stage process stays alive while torchrun runs: it relays rank 0's progress lines to
``ctx.progress`` and turns SIGTERM/SIGINT into one SIGTERM for torchrun, which forwards it to the
ranks; they checkpoint and exit. torchrun runs in its own session so a process-group kill reaches it
only through us (a second signal during its shutdown would make it SIGKILL the ranks mid-save), and
it gets SIGTERM if we die (``PR_SET_PDEATHSIG``).

Multi-node torchrun (``nnodes = N > 1``, ``rdzv_endpoint = "node0:29500"`` in the parallel spec)
---------------------------------------------------------------------------------------------
Only node 0 runs the build; the other nodes lend their ranks to its training job::

    node 0:        genesis-build pretrain:1b
    node 1 … N-1:  python -m stages.training.launch node0:29500     # before or after node 0

Node 0's stage writes ``job.json`` into the run directory, starts a TCP store at ``rdzv_endpoint``
(in the stage process, alive as long as the build) holding that file's path, and starts torchrun
with ``--nnodes N --rdzv-backend c10d --rdzv-endpoint <rdzv_endpoint> --rdzv-id genesis-<trajectory
key>``. The command on each other node connects to the same store (waiting up to 30 minutes for
node 0 to come up), reads the job path and starts the same torchrun on the same ``job.json``; the
rendezvous id is derived from the job's run directory name — the trajectory key — so every node
agrees without being told. All torchrun agents are clients of the stage's store (``is_host=0``);
the c10d rendezvous assigns the global ranks once all N nodes joined (``join_timeout`` 30 min), so
node numbers need not be given. Each rank reads its slice of every global batch by global rank, so
the result equals a single-node run with the same world size.

Why not ``genesis-build`` on every node: the engine holds the node's per-key lock and the run
directory's lock for the whole build, so a second ``genesis-build pretrain:1b`` on a shared cache
would wait for node 0 — which waits for it at the rendezvous — and on separate caches two builders
would publish competing objects. So node 0 alone locks, resumes and publishes; the other nodes run
no engine and touch nothing in the cache except what their ranks read (the tokens) and write (their
checkpoint shards, into the run directory). The cache must therefore be on a filesystem every node
mounts at the same path: DCP writes each rank's shards next to rank 0's ``.metadata``.
``genesis-build`` with ``GENESIS_NODE_RANK`` ≠ 0 refuses and prints the command above. A SIGTERM
or Ctrl-C on node 0 reaches every rank through the stop flag the ranks agree on after each step,
so all nodes checkpoint and exit together; rerunning node 0 (and the join command) resumes.

``launcher = "slurm"``: see ``stages.training.slurm`` (one ``sbatch --wait`` job, one torchrun
agent per node, rendezvous on the job's first node).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from .process import SHUTDOWN_TIMEOUT_S, set_pdeathsig, stages_root, supervise

NODE_RANK_ENV = "GENESIS_NODE_RANK"  # ≠ 0: this machine is not node 0 and must not run the build
JOIN_TIMEOUT_S = 1800  # how long the nodes of a multi-node job wait for each other (store and rendezvous)
JOB_KEY = "genesis/job"  # the key under which node 0's store holds the job file's path


def inside_rank() -> bool:
    """True when this process already is one rank of a distributed job (torchrun or srun)."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env and "MASTER_ADDR" in env):
        return True
    return int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env


def node_rank_from_env() -> int:
    """``GENESIS_NODE_RANK`` (default 0), validated."""
    raw = os.environ.get(NODE_RANK_ENV, "0").strip() or "0"
    if not raw.isdigit():
        from genesis_build.errors import GenesisError

        raise GenesisError(f"{NODE_RANK_ENV}={raw!r}: must be a node number 0, 1, …")
    return int(raw)


def rdzv_id(job_path: Path) -> str:
    """The c10d rendezvous id of a job: from the name of the directory holding ``job.json``.

    For pretraining that directory is ``<cache>/runs/<trajectory key>``, so every node that reads
    the same ``job.json`` derives the same id, and two different runs never share one.
    """
    name = "".join(c for c in Path(job_path).resolve().parent.name if c.isalnum() or c in "-_")
    return f"genesis-{name[:32] or 'job'}"


def torchrun_command(job_path: Path, parallel: Any, python: str = sys.executable,
                     module: str = "stages.training.train") -> list[str]:
    """The torchrun command line for a parallel spec (the same on every node of a multi-node job)."""
    cmd = [python, "-m", "torch.distributed.run", f"--nproc-per-node={parallel.nproc_per_node}",
           f"--nnodes={parallel.nnodes}", "--max-restarts=0", f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",
           "--monitor-interval=0.2"]
    if parallel.nnodes == 1:
        cmd.append("--standalone")
    else:
        if not parallel.rdzv_endpoint:
            raise ValueError("multi-node torchrun needs rdzv_endpoint in the parallel spec")
        # the store at rdzv_endpoint is hosted by node 0's launcher (host_job_store), not by an agent;
        # c10d ignores --node-rank: global ranks are assigned at the rendezvous
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={parallel.rdzv_endpoint}", f"--rdzv-id={rdzv_id(job_path)}",
                f"--rdzv-conf=is_host=0,join_timeout={JOIN_TIMEOUT_S}"]
    return cmd + ["-m", module, str(job_path)]


def join_command(endpoint: str) -> str:
    """What the other nodes of a multi-node torchrun job run."""
    return f"python -m stages.training.launch {endpoint}"


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def host_job_store(parallel: Any, job_path: Path) -> Any:
    """Node 0: a TCP store at ``rdzv_endpoint`` holding ``job_path`` (the c10d rendezvous uses it too).

    Keep the returned object alive while the job runs; the store closes with it.
    """
    import datetime

    from torch.distributed import TCPStore

    from genesis_build.errors import GenesisError

    host, port = _split_endpoint(parallel.rdzv_endpoint)
    try:
        store = TCPStore(host, port, is_master=True, multi_tenant=False, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S))
    except (RuntimeError, ValueError, OSError) as e:
        raise GenesisError(f"cannot serve the rendezvous at rdzv_endpoint {parallel.rdzv_endpoint} on this machine "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): it must be this node's address "
                           f"and a free port") from e
    store.set(JOB_KEY, str(Path(job_path).resolve()))
    return store


def fetch_job(endpoint: str, wait_s: float = JOIN_TIMEOUT_S) -> Path:
    """Nodes 1 … N-1: the job path node 0's store holds (waits for node 0 up to ``wait_s``)."""
    import datetime

    from torch.distributed import TCPStore

    host, port = _split_endpoint(endpoint)
    store = TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=wait_s))
    store.wait([JOB_KEY])
    return Path(store.get(JOB_KEY).decode())


def rank_env(parallel: Any) -> dict[str, str]:
    """Environment for the ranks: ours + the parallel spec's ``env`` + an importable ``stages``."""
    env = dict(os.environ)
    env.update(parallel.env)
    root = str(stages_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if parallel.nproc_per_node > 1 and "OMP_NUM_THREADS" not in parallel.env:
        # share the cores instead of oversubscribing them (torchrun's default is 1 thread per rank)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel.nproc_per_node)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_fresh(run_dir: Path, parallel: Any) -> None:
    """``--force`` on a resumable node (``ctx.options["fresh_run"]``): empty ``run_dir`` so training starts
    a new trajectory at step 0 instead of resuming the finished one. Refused while a SLURM job of an
    earlier build still trains there."""
    import shutil

    if parallel.launcher == "slurm":
        from .slurm import JOB_ID_FILE, refuse_if_queued

        for marker in sorted(Path(run_dir).rglob(JOB_ID_FILE)):
            refuse_if_queued(marker.parent)
    for p in list(Path(run_dir).iterdir()):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def run_torchrun(job_path: Path, parallel: Any, progress_file: Path | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 module: str = "stages.training.train", stdout: Any = None,
                 log: Callable[[str], None] | None = None, job_name: str | None = None) -> int:
    """Run the job on ``parallel``'s ranks (or in place, or as a SLURM job); returns the exit code.

    The caller is the build, i.e. node 0 of a multi-node job (see the module docstring).
    """
    if inside_rank():
        import importlib

        return int(importlib.import_module(module).main([str(job_path)]))
    say = log or (lambda m: print(m, flush=True))
    if parallel.launcher == "slurm":
        from .slurm import run_sbatch

        return run_sbatch(job_path, parallel, progress_file=progress_file, on_progress=on_progress, module=module,
                          log=say, job_name=job_name)
    rank = node_rank_from_env()
    if rank != 0 and parallel.nnodes > 1:
        from genesis_build.errors import GenesisError

        raise GenesisError(f"{NODE_RANK_ENV}={rank}: only node 0 runs the build (it alone locks, resumes and publishes); "
                           f"on this node run instead: {join_command(parallel.rdzv_endpoint)}")
    cmd = torchrun_command(job_path, parallel, module=module)
    if parallel.nnodes == 1:
        return _run(cmd, rank_env(parallel), progress_file, on_progress, stdout)
    store = host_job_store(parallel, job_path)
    others = "1" if parallel.nnodes == 2 else f"1 … {parallel.nnodes - 1}"
    msg = (f"node 0 of {parallel.nnodes}: waiting at {parallel.rdzv_endpoint} for node(s) {others}; start each with: "
           f"{join_command(parallel.rdzv_endpoint)}")
    say(msg)
    if on_progress is not None:
        on_progress({"done": 0, "total": None, "desc": msg})
    try:
        return _run(cmd, rank_env(parallel), progress_file, on_progress, stdout)
    finally:
        del store


def _run(cmd: list[str], env: dict[str, str], progress_file: Path | None,
         on_progress: Callable[[dict[str, Any]], None] | None, stdout: Any = None) -> int:
    """Run ``cmd`` (torchrun) in its own session, forwarding one SIGTERM to it, tailing progress."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=set_pdeathsig,
                            stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None)
    return supervise(proc, lambda: proc.send_signal(signal.SIGTERM), progress_file, on_progress)


def join(target: str, wait_s: float = JOIN_TIMEOUT_S, module: str = "stages.training.train") -> int:
    """Start this node's torchrun agent for a multi-node job; returns its exit code.

    ``target`` is node 0's ``rdzv_endpoint`` (``host:port``: the usual case, nodes 1 … N-1), or a
    ``job.json`` path: then this process hosts the store, as node 0 without a build (tests, manual
    runs; nothing is published). Rank logs go to stdout.
    """
    from .config import TrainJob

    store = None
    if Path(target).is_file():
        job_path = Path(target).resolve()
        parallel = TrainJob.read(job_path).parallel
        if parallel.nnodes < 2 or parallel.launcher != "torchrun":
            raise ValueError(f"{job_path}: not a multi-node torchrun job (nnodes = {parallel.nnodes}, launcher = "
                             f"{parallel.launcher}); nothing to join")
        store = host_job_store(parallel, job_path)
        role = "hosting"
    else:
        if target.endswith(".json"):
            raise FileNotFoundError(f"{target}: no such job file")
        _split_endpoint(target)
        print(f"waiting for node 0 at {target} (up to {wait_s / 60:.0f} min)", flush=True)
        job_path = fetch_job(target, wait_s)
        parallel = TrainJob.read(job_path).parallel
        role = "joining"
    print(f"{role} {parallel.rdzv_endpoint} ({rdzv_id(job_path)}, {parallel.nnodes} nodes): {parallel.nproc_per_node} "
          f"rank(s) here for {job_path}", flush=True)
    try:
        return _run(torchrun_command(job_path, parallel, module=module), rank_env(parallel), None, None)
    finally:
        del store


def main(argv: list[str] | None = None) -> int:
    """``python -m stages.training.launch HOST:PORT``: lend this node's ranks to node 0's job (see above)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m stages.training.launch",
                                description="Join a multi-node torchrun training job whose node 0 runs genesis-build.")
    p.add_argument("target", help="node 0's rdzv_endpoint host:port (or a job.json to host the job without a build)")
    p.add_argument("--wait", type=float, default=JOIN_TIMEOUT_S, metavar="S", help="how long to wait for node 0")
    p.add_argument("--module", default="stages.training.train", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from genesis_build.errors import GenesisError

    try:
        return join(args.target, args.wait, module=args.module)
    except (GenesisError, ValueError, OSError, RuntimeError) as e:  # RuntimeError: torch's store/network errors
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
