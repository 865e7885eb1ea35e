"""``launcher = "slurm"``: the sbatch script, ``--dry-run`` showing it, the missing-``sbatch`` error,
and a real run of the generated script.

There is no SLURM here, so ``test_sbatch_runs_the_generated_script`` puts stand-ins for SLURM's own
commands first on PATH: ``sbatch`` runs the given script through bash as a 1-node job (``--wait``
semantics: it returns when the script ends, with its exit code), ``srun`` runs its command once as
task 0, and ``scontrol show hostnames`` prints 127.0.0.1. Everything of ours is real: the stage
writes the script, submits it, the script's torchrun (2 ranks, c10d on the first "node") trains,
and the build publishes; the weights equal a plain torchrun run of the same job bitwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import training_testlib as t
from stages.parallel_spec import ParallelSpec
from stages.training.slurm import sbatch_command, sbatch_script
from test_pretrain_stage_e2e import WS
from genesis_testlib import free_port
from test_train_multinode import assert_same_weights, single_node_reference

ROOT = t.ROOT

SLURM_SPEC = """launcher = "slurm"
nproc_per_node = {nproc}
nnodes = {nnodes}
backend = "gloo"
micro_batch_size = {micro}
[slurm]
{slurm}
[env]
OMP_NUM_THREADS = "1"
"""

FAKE_SBATCH = r"""#!/bin/bash
# stand-in for SLURM's sbatch --wait: run the batch script here as job 4242 on one node
printf '%s\n' "$@" > "$FAKE_SLURM_DIR/sbatch.args"
out=""; script=""; wait=0
for a in "$@"; do
  case "$a" in
    --wait) wait=1 ;;
    --output=*) out="${a#--output=}" ;;
    -*) ;;
    *) script="$a" ;;
  esac
done
[ "$wait" = 1 ] || { echo "this stand-in only knows sbatch --wait" >&2; exit 1; }
export SLURM_JOB_ID=4242 SLURM_NNODES=1 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=fakenode SLURM_NTASKS_PER_NODE=1
echo "$SLURM_JOB_ID"
bash "$script" > "${out//%j/$SLURM_JOB_ID}" 2>&1
"""

FAKE_SRUN = r"""#!/bin/bash
# stand-in for srun with one task on one node
printf '%s\n' "$@" > "$FAKE_SLURM_DIR/srun.args"
while [[ "$1" == -* ]]; do shift; done
export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_NTASKS=1 SLURM_STEP_ID=0
exec "$@"
"""

FAKE_SCONTROL = r"""#!/bin/bash
[ "$1 $2" = "show hostnames" ] && { echo 127.0.0.1; exit 0; }
echo "stand-in scontrol: only 'show hostnames'" >&2; exit 1
"""


def slurm_ws(root: Path, *, nproc: int = 2, nnodes: int = 1, micro: int = 2, slurm: str = "") -> WS:
    ws = WS(root)
    (ws.root / "specs/parallel/cpu-2.toml").write_text(SLURM_SPEC.format(nproc=nproc, nnodes=nnodes, micro=micro,
                                                                        slurm=slurm))
    return ws


def test_sbatch_script_lines() -> None:
    par = ParallelSpec.model_validate({
        "launcher": "slurm", "nnodes": 2, "nproc_per_node": 8, "backend": "nccl", "env": {"NCCL_IB_DISABLE": "1"},
        "slurm": {"partition": "gpu", "account": "lab", "time": "2-00:00:00", "cpus_per_task": 64,
                  "rdzv_port": 29511, "extra": ["--qos=high", "--exclusive"]}})
    script = sbatch_script("/shared/cache/runs/abc/job.json", par, job_name="genesis-pretrain-1b",
                           python="/venv/bin/python", pythonpath="/repo")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for want in ("#SBATCH --job-name=genesis-pretrain-1b", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=64", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --time=2-00:00:00", "#SBATCH --signal=TERM@300",
                 "#SBATCH --qos=high", "#SBATCH --exclusive", "set -euo pipefail",
                 "export PYTHONPATH=/repo${PYTHONPATH:+:$PYTHONPATH}", "export NCCL_IB_DISABLE=1",
                 'hosts=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))'):
        assert want in lines, (want, script)
    # every #SBATCH line comes before the first command (sbatch stops reading options there)
    first_cmd = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert all(i < first_cmd for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))
    srun = " ".join(ln.rstrip("\\").strip() for ln in lines[lines.index(next(ln for ln in lines if ln.startswith("srun"))):])
    assert srun.startswith("srun --kill-on-bad-exit=1 --cpus-per-task=64 /venv/bin/python -m torch.distributed.run")
    for want in ('--nnodes "$SLURM_NNODES"', "--nproc-per-node 8", "--rdzv-backend c10d",
                 '--rdzv-endpoint "$head:29511"', '--rdzv-id "$SLURM_JOB_ID"', "--max-restarts 0",
                 "-m stages.training.train /shared/cache/runs/abc/job.json"):
        assert want in srun, (want, srun)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash

    # no GPUs asked for when gpus_per_node = 0 (CPU partitions); no --signal without a time limit
    cpu = ParallelSpec.model_validate({"launcher": "slurm", "nproc_per_node": 2, "slurm": {"gpus_per_node": 0}})
    text = sbatch_script("/r/job.json", cpu, job_name="j")
    assert "--gpus-per-node" not in text and "--signal" not in text and "#SBATCH --nodes=1" in text
    assert sbatch_command(Path("/r/sbatch.sh"), Path("/r"))[:3] == ["sbatch", "--wait", "--parsable"]
    with pytest.raises(ValueError, match="extra"):
        ParallelSpec.model_validate({"launcher": "slurm", "slurm": {"extra": ["qos=high"]}})
    with pytest.raises(ValueError, match="slurm.nodes"):
        ParallelSpec.model_validate({"launcher": "slurm", "slurm": {"nodes": 2}})


def test_dry_run_prints_the_script(tmp_path: Path) -> None:
    ws = slurm_ws(tmp_path / "ws", nproc=8, nnodes=2, micro=1, slurm='partition = "gpu"\ntime = "12:00:00"')
    ws.model(steps=12, gbt=32 * 16)
    env = ws.env()
    env["COLUMNS"] = "300"  # rich wraps long lines at the terminal width
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "--dry-run", "pretrain:mini"], cwd=ws.root, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    assert "launch: sbatch --wait <cache>/runs/<trajectory key>/sbatch.sh (2 node(s) × 8 rank(s)" in out
    assert "sbatch script:" in out
    for want in ("#SBATCH --job-name=genesis-pretrain-mini", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=12:00:00", f"srun --kill-on-bad-exit=1 {sys.executable} -m "
                 "torch.distributed.run", '--rdzv-backend c10d --rdzv-endpoint "$head:29500" --rdzv-id "$SLURM_JOB_ID"',
                 "-m stages.training.train '<cache>/runs/<trajectory key>/job.json'"):
        assert want in out, (want, out)
    assert "micro 1 × accum 1 × world 16 × context 32" in out
    # --dry-run never imports torch, also not for the launch rows
    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "genesis_build.cli", "--dry-run", "pretrain:mini"],
                           cwd=ws.root, env=env, capture_output=True, text=True, timeout=120)
    assert timed.returncode == 0
    assert not re.search(r"\|\s*torch(\.|$)", timed.stderr, re.M)
    assert re.search(r"\|\s*stages\.training\.slurm$", timed.stderr, re.M)  # (the check above can see imports)


@pytest.mark.slow
def test_no_sbatch_is_a_clear_error(tmp_path: Path) -> None:
    ws = slurm_ws(tmp_path / "ws", slurm="gpus_per_node = 0")
    env = ws.env()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    if shutil.which("sbatch", path=env["PATH"]):
        pytest.skip("this machine has a real sbatch")
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "pretrain:mini"], cwd=ws.root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr + r.stdout
    assert 'launcher = "slurm" but `sbatch` is not on PATH' in r.stderr and "sbatch.sh" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert list((ws.root / "cache" / "runs").glob("*/sbatch.sh"))  # the script is there to inspect


@pytest.mark.slow
def test_sbatch_runs_the_generated_script(tmp_path: Path) -> None:
    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    ws = slurm_ws(tmp_path / "ws", slurm=f"gpus_per_node = 0\nrdzv_port = {free_port()}")
    ws.model(steps=8)
    env = ws.env()
    env["PATH"] = os.pathsep.join([str(fake), env.get("PATH", "")])
    env["FAKE_SLURM_DIR"] = str(fake)
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "pretrain:mini"], cwd=ws.root, env=env,
                       capture_output=True, text=True, timeout=300)
    run_dir = ws.run_dir()
    assert r.returncode == 0, r.stderr + r.stdout + "\n".join(p.read_text()[-3000:] for p in run_dir.glob("slurm-*.out"))

    args = (fake / "sbatch.args").read_text().splitlines()
    assert args[:2] == ["--wait", "--parsable"] and args[-1] == str(run_dir / "sbatch.sh")
    assert (fake / "srun.args").read_text().splitlines()[:2] == ["--kill-on-bad-exit=1", sys.executable]
    assert (run_dir / "slurm-4242.out").is_file()
    m = ws.manifest("pretrain:mini")
    assert m["stats"]["world_size"] == 2 and m["stats"]["steps_run"] == 8, m["stats"]
    log = (ws.root / "cache" / "logs" / f"{m['key']}.log").read_text()
    assert "SLURM job 4242 submitted" in log

    # the same job through plain torchrun gives the same weights
    job = json.loads((run_dir / "job.json").read_text())
    job["parallel"]["launcher"] = "torchrun"
    (tmp_path / "job.json").write_text(json.dumps(job))
    ref = single_node_reference(tmp_path, tmp_path / "job.json")
    assert_same_weights(ref, ws.root / "out" / "pretrain:mini" / "checkpoint")

    # a job of an earlier build still in the queue (its build died): no second job on the same run dir
    (fake / "squeue").write_text('#!/bin/bash\n[ "$*" = "-h -j 4242 -o %T" ] && echo RUNNING\n')
    (fake / "squeue").chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "--force", "pretrain:mini", "pretrain:mini"],
                       cwd=ws.root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr + r.stdout
    assert "SLURM job 4242 of an earlier build of this run is still running (squeue)" in r.stderr, r.stderr
