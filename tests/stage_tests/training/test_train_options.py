"""Execution options change how a step is computed, not what it computes: activation checkpointing,
no reshard after forward, more accumulation micro-steps, synchronous saves, and bf16 compute all
track the plain fp32 run (the parallel spec is not part of the key, so this must hold)."""

from __future__ import annotations

from pathlib import Path

import pytest

import training_testlib as t

pytestmark = pytest.mark.slow


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in t.metrics(run_dir) if r.get("kind") == "train"]


def test_execution_options_track_the_reference(tmp_path: Path) -> None:
    data = t.make_tokens(tmp_path / "tok")
    ref = t.make_job(tmp_path, data, tmp_path / "ref", steps=6, name="ref")
    alt = t.make_job(tmp_path, data, tmp_path / "alt", steps=6, name="alt",
                     parallel={"activation_checkpointing": True, "reshard_after_forward": False,
                               "micro_batch_size": 1, "async_checkpoint": False})
    bf16 = t.make_job(tmp_path, data, tmp_path / "bf16", steps=6, name="bf16", arch={"dtype": "bfloat16"})
    for job in (ref, alt, bf16):
        rc, res = t.run(job)
        assert rc == 0, t.log_text(job)
        assert res["initial_val_loss"] > res["final_val_loss"]
    a, b, c = _losses(tmp_path / "ref"), _losses(tmp_path / "alt"), _losses(tmp_path / "bf16")
    assert len(a) == len(b) == len(c) == 6
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
    assert max(abs(x - y) for x, y in zip(a, c)) < 5e-2, (a, c)
    assert a != c  # bf16 compute really happened
