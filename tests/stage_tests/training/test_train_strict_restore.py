"""Restores are strict: a damaged checkpoint fails with a message naming what is missing, unless
the user explicitly resets the optimizer (which is then recorded)."""

from __future__ import annotations

import pickle
import shutil
import signal
from pathlib import Path

import pytest

import training_testlib as t

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A 2-rank run stopped by SIGTERM mid-way: (tokens dir, run dir, checkpoint step)."""
    tmp = tmp_path_factory.mktemp("strict")
    data = t.make_tokens(tmp / "tok")
    job = t.make_job(tmp, data, tmp / "run", steps=12, training={"checkpoint_every": 100})
    proc = t.start(job)
    t.wait_for_step(tmp / "run", 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    res = t.result(job)
    assert res["status"] == "stopped"
    return data, tmp / "run", res["step"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("log-*.txt", "result.json"))
    return dst


def test_missing_shard_file_fails_naming_it(tmp_path: Path, stopped_run) -> None:
    data, run, step = stopped_run
    run_dir = _copy(run, tmp_path / "run")
    (run_dir / "checkpoints" / f"step-{step}" / "__1_0.distcp").unlink()
    rc, res = t.run(t.make_job(tmp_path, data, run_dir, steps=12))
    assert rc != 0
    assert res["status"] == "error"
    assert "__1_0.distcp is missing" in res["message"] and f"step-{step}" in res["message"]


def _drop_optimizer_keys(ckpt: Path) -> int:
    meta_path = ckpt / ".metadata"
    with open(meta_path, "rb") as f:
        meta = pickle.load(f)
    dropped = [k for k in meta.state_dict_metadata if k.startswith("optimizer.state.")]
    for k in dropped:
        del meta.state_dict_metadata[k]
    meta.storage_data = {i: v for i, v in meta.storage_data.items() if i.fqn not in dropped}
    with open(meta_path, "wb") as f:
        pickle.dump(meta, f)
    return len(dropped)


def test_missing_optimizer_state_fails_then_reset_optimizer_resumes(tmp_path: Path, stopped_run) -> None:
    data, run, step = stopped_run
    run_dir = _copy(run, tmp_path / "run")
    n = _drop_optimizer_keys(run_dir / "checkpoints" / f"step-{step}")
    assert n > 0
    rc, res = t.run(t.make_job(tmp_path, data, run_dir, steps=12))
    assert rc != 0 and res["status"] == "error"
    msg = res["message"]
    assert f"{n} optimizer keys missing" in msg and "exp_avg" in msg and "--reset-optimizer" in msg, msg
    # no silent fallback happened: nothing was trained
    assert not any(r.get("kind") == "train" and r["step"] > step for r in t.metrics(run_dir))

    rc, res = t.run(t.make_job(tmp_path, data, run_dir, steps=12, reset_optimizer=True, name="reset"))
    assert rc == 0, t.log_text(tmp_path / "reset.json")
    assert res["reset_optimizer"] is True and res["resumed_from"] == step and res["steps_run"] == 12 - step
    start = [r for r in t.metrics(run_dir) if r.get("event") == "start"][-1]
    assert start["reset_optimizer"] is True
