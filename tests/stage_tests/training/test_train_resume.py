"""Crash and stop resilience of the trainer (2 CPU ranks, gloo, real torchrun + FSDP2 + DCP).

A run killed with SIGKILL at a random step, or stopped with SIGTERM, and then rerun must end with
model *and* optimizer state bitwise equal to an uninterrupted run.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
import torch

import training_testlib as t

pytestmark = pytest.mark.slow
STEPS = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return t.make_tokens(tmp_path_factory.mktemp("tokens") / "tok")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, torch.Tensor]:
    """Final state of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("ref")
    job = t.make_job(tmp, data, tmp / "run", steps=STEPS)
    rc, res = t.run(job)
    assert rc == 0, t.log_text(job)
    assert res["status"] == "finished" and res["steps_run"] == STEPS and res["resumed_from"] is None
    return t.read_dcp(t.final_checkpoint(tmp / "run"))


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    assert any(k.startswith("optimizer.state.") and k.endswith("exp_avg_sq") for k in a)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_sigkill_at_random_step_then_resume_is_bitwise_exact(tmp_path: Path, data: Path, reference) -> None:
    seed = random.randrange(1 << 30)
    # after the first checkpoint (every 3 steps): a kill before it would rightly restart from step 0
    kill_at = random.Random(seed).randint(4, STEPS - 2)
    job = t.make_job(tmp_path, data, tmp_path / "run", steps=STEPS)
    proc = t.start(job)
    t.wait_for_step(tmp_path / "run", kill_at, proc)
    t.wait_for_checkpoint(tmp_path / "run", proc)  # the async save of step 3 may still be in flight
    t.kill_tree(proc, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    rc, res = t.run(job)
    assert rc == 0, f"(seed {seed}) {t.log_text(job)}"
    assert res["status"] == "finished" and res["step"] == STEPS
    assert res["resumed_from"] is not None and res["steps_run"] == STEPS - res["resumed_from"], res
    assert_same_state(reference, t.read_dcp(t.final_checkpoint(tmp_path / "run")))
    # the metrics describe one trajectory: every step exactly once
    steps = [r["step"] for r in t.metrics(tmp_path / "run") if r.get("kind") == "train"]
    assert steps == list(range(1, STEPS + 1))


def test_sigterm_checkpoints_exits_nonzero_and_resumes_exactly(tmp_path: Path, data: Path, reference) -> None:
    run_dir = tmp_path / "run"
    job = t.make_job(tmp_path, data, run_dir, steps=STEPS, training={"checkpoint_every": 100})
    proc = t.start(job)
    t.wait_for_step(run_dir, 4, proc)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which forwards it to the ranks
    rc = proc.wait(timeout=120)
    assert rc != 0
    res = t.result(job)
    assert res["status"] == "stopped" and res["signal"] == signal.SIGTERM, res
    stopped_at = res["step"]
    assert 4 <= stopped_at < STEPS
    # the checkpoint was written at the step where training stopped (not a periodic one)
    assert t.final_checkpoint(run_dir).name == f"step-{stopped_at}"
    rc, res = t.run(job)
    assert rc == 0, t.log_text(job)
    assert res["resumed_from"] == stopped_at and res["steps_run"] == STEPS - stopped_at
    assert_same_state(reference, t.read_dcp(t.final_checkpoint(run_dir)))


def test_resume_twice(tmp_path: Path, data: Path, reference) -> None:
    run_dir = tmp_path / "run"
    job = t.make_job(tmp_path, data, run_dir, steps=STEPS, training={"checkpoint_every": 2})
    for kill_at in (3, 7):
        proc = t.start(job)
        t.wait_for_step(run_dir, kill_at, proc)
        t.kill_tree(proc, signal.SIGKILL)
        proc.wait(timeout=60)
    rc, res = t.run(job)
    assert rc == 0, t.log_text(job)
    assert res["resumed_from"] is not None and res["resumed_from"] >= 6
    assert_same_state(reference, t.read_dcp(t.final_checkpoint(run_dir)))
    starts = [r for r in t.metrics(run_dir) if r.get("event") == "start"]
    assert [r["session"] for r in starts] == [1, 2, 3]
