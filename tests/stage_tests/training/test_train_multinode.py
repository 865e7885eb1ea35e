"""Multi-node torchrun for real: two torchrun agents as two "nodes" (nnodes = 2, one rank each) meet
at a c10d rendezvous on 127.0.0.1 and train one job over gloo, sharing one run dir.

The result is compared with the single-node 2-process run of the same job. It is bitwise equal, not
merely close: both runs have world size 2, rank r reads slice r of every global batch wherever it
runs, every reduction is over the same two addends (a + b is commutative in floating point), and
every rank uses one thread (``OMP_NUM_THREADS=1``).

``test_pretrain_on_two_nodes_through_the_cli`` runs the documented procedure: node 1 runs
``python -m stages.training.launch 127.0.0.1:<port>`` first (it waits for node 0), node 0 is
``genesis-build pretrain:mini``, which serves the job's path at the rendezvous endpoint; only node 0
publishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genesis_testlib import free_port
import training_testlib as t
from stages.parallel_spec import ParallelSpec
from stages.training.launch import join_command, rdzv_id, torchrun_command
from test_pretrain_stage_e2e import WS

pytestmark = pytest.mark.slow
ROOT = t.ROOT



def rank_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def join(target: str | Path, log: Path) -> subprocess.Popen:
    """``python -m stages.training.launch TARGET``: one node's torchrun agent (a job.json: also host the store)."""
    return subprocess.Popen([sys.executable, "-m", "stages.training.launch", str(target)], cwd=str(ROOT), env=rank_env(),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def assert_same_weights(a_ckpt: Path, b_ckpt: Path) -> None:
    """Model and optimizer tensors bitwise equal."""
    a, b = t.read_dcp(a_ckpt), t.read_dcp(b_ckpt)
    keys = [k for k in a if k.startswith(("model.", "optimizer."))]
    assert keys and sorted(keys) == sorted(k for k in b if k.startswith(("model.", "optimizer.")))
    for k in keys:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {(a[k].double() - b[k].double()).abs().max()}"


def pretrain_objects(ws: WS) -> list[Path]:
    """Published pretrain objects in the workspace's cache."""
    return [p for p in (ws.root / "cache" / "objects").glob("*/*/manifest.json")
            if json.loads(p.read_text())["stage"] == "pretrain"]


def single_node_reference(tmp: Path, job: Path) -> Path:
    """Run ``job`` as one node with 2 ranks in its own run dir; returns the final checkpoint."""
    spec = json.loads(job.read_text())
    spec["parallel"].update(nnodes=1, nproc_per_node=2, rdzv_endpoint=None)
    spec["run_dir"] = str(tmp / "ref-run")
    spec["progress_file"] = str(tmp / "ref-run" / "progress.jsonl")
    (tmp / "ref-run").mkdir()
    ref = tmp / "ref.json"
    ref.write_text(json.dumps(spec))
    rc, res = t.run(ref)
    assert rc == 0 and res["status"] == "finished" and res["world_size"] == 2, t.log_text(ref)
    return t.final_checkpoint(tmp / "ref-run")


def test_torchrun_flags_are_the_same_on_every_node(tmp_path: Path) -> None:
    par = ParallelSpec(nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29500")
    job = tmp_path / "runs" / "0123456789abcdef0123456789abcdef" / "job.json"
    job.parent.mkdir(parents=True)
    cmd = torchrun_command(job, par)
    assert "--nnodes=2" in cmd and "--nproc-per-node=8" in cmd and "--rdzv-backend=c10d" in cmd
    assert "--rdzv-endpoint=node0:29500" in cmd and "--standalone" not in cmd
    assert "--rdzv-id=genesis-0123456789abcdef0123456789abcdef" in cmd  # the trajectory key: all nodes agree
    assert "--rdzv-conf=is_host=0,join_timeout=1800" in cmd  # node 0's launcher hosts the store, not an agent
    assert rdzv_id(job) == "genesis-0123456789abcdef0123456789abcdef"
    assert join_command("node0:29500") == "python -m stages.training.launch node0:29500"
    with pytest.raises(ValueError, match="needs rdzv_endpoint"):
        ParallelSpec(nproc_per_node=8, nnodes=2)
    with pytest.raises(ValueError, match="host:port"):
        ParallelSpec(nproc_per_node=8, nnodes=2, rdzv_endpoint="node0")


def test_two_nodes_train_bitwise_like_one_node_with_two_ranks(tmp_path: Path) -> None:
    data = t.make_tokens(tmp_path / "tok")
    run = tmp_path / "runs" / "trajectory"
    job = t.make_job(tmp_path, data, run, steps=6, nproc=1, name="two-nodes",
                     parallel={"nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{free_port()}", "env": {"OMP_NUM_THREADS": "1"}})
    endpoint = json.loads(job.read_text())["parallel"]["rdzv_endpoint"]
    nodes = [join(job, tmp_path / "node0.log"), join(endpoint, tmp_path / "node1.log")]
    try:
        rcs = [p.wait(timeout=240) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    logs = "\n".join((tmp_path / f"node{i}.log").read_text()[-3000:] for i in (0, 1))
    assert rcs == [0, 0], logs
    res = t.result(job)
    assert res["status"] == "finished" and res["world_size"] == 2 and res["steps_run"] == 6, res

    ref = single_node_reference(tmp_path, job)
    assert_same_weights(ref, t.final_checkpoint(run))
    got = [r["loss"] for r in t.metrics(run) if r.get("kind") == "train"]
    want = [r["loss"] for r in t.metrics(tmp_path / "ref-run") if r.get("kind") == "train"]
    assert got == want and len(got) == 6


def test_pretrain_on_two_nodes_through_the_cli(tmp_path: Path) -> None:
    ws = WS(tmp_path / "ws")
    port = free_port()
    (ws.root / "specs/parallel/cpu-2.toml").write_text(
        f'nproc_per_node = 1\nnnodes = 2\nrdzv_endpoint = "127.0.0.1:{port}"\nbackend = "gloo"\n'
        f'micro_batch_size = 2\n[env]\nOMP_NUM_THREADS = "1"\n')
    ws.model(steps=8, gbt=256, every=3)

    r = ws.cli("--dry-run", "pretrain:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    text = " ".join(r.stdout.replace("│", " ").split())  # the tree wraps long rows
    assert (f"node 0 runs this build and publishes; on node 1 run `python -m stages.training.launch 127.0.0.1:{port}` "
            "(before or after node 0)") in text
    assert "micro 2 × accum 2 × world 2 × context 32" in r.stdout

    # a second node must not run the build: the stage refuses with the join command
    env = ws.env()
    env["GENESIS_NODE_RANK"] = "1"
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "pretrain:mini"], cwd=ws.root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr + r.stdout
    assert "only node 0 runs the build" in r.stderr, r.stderr
    assert f"on this node run instead: python -m stages.training.launch 127.0.0.1:{port}" in r.stderr
    assert not pretrain_objects(ws)

    # node 1 first: it waits for node 0's store, then fetches the job path from it
    node1_log = tmp_path / "node1.log"
    node1 = subprocess.Popen(join_command(f"127.0.0.1:{port}").replace("python", sys.executable, 1), shell=True,
                             cwd=str(ROOT), env=rank_env(), stdout=open(node1_log, "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    node0 = subprocess.Popen([sys.executable, "-m", "genesis_build.cli", "pretrain:mini"], cwd=ws.root, env=ws.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = node0.communicate(timeout=300)
        assert node1.wait(timeout=60) == 0, node1_log.read_text()[-3000:]
    finally:
        for p in (node0, node1):
            if p.poll() is None:
                os.killpg(p.pid, 9)
    assert node0.returncode == 0, out + err
    m = ws.manifest("pretrain:mini")
    assert m["stats"]["world_size"] == 2 and m["stats"]["steps_run"] == 8, m["stats"]
    assert len(pretrain_objects(ws)) == 1  # node 1 published nothing

    job = ws.run_dir() / "job.json"
    assert f"for {job}" in node1_log.read_text()
    log = (ws.root / "cache" / "logs" / f"{m['key']}.log").read_text()
    assert f"node 0 of 2: waiting at 127.0.0.1:{port} for node(s) 1; start each with: " in log
    ref = single_node_reference(tmp_path, job)
    assert_same_weights(ref, ws.root / "out" / "pretrain:mini" / "checkpoint")
