"""Extending ``steps`` of a finished run: WSD re-runs only the extra stable steps and the decay,
and lands exactly where a fresh run of the new length does; cosine continues and says what changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import training_testlib as t
from stages.training.schedule import Schedule

pytestmark = pytest.mark.slow


def _session_steps(run_dir: Path) -> list[int]:
    recs = t.metrics(run_dir)
    last = max(r["session"] for r in recs)
    return [r["step"] for r in recs if r.get("kind") == "train" and r["session"] == last]


def test_wsd_extension_reruns_only_the_decay(tmp_path: Path) -> None:
    data = t.make_tokens(tmp_path / "tok")
    run = tmp_path / "run"
    rc, res = t.run(t.make_job(tmp_path, data, run, steps=12, name="short"))
    assert rc == 0 and res["steps_run"] == 12
    old = Schedule("wsd", 12, 2, 0.25, 0.1)
    assert old.decay_start == 9 and (run / "checkpoints" / "step-9" / ".metadata").is_file()

    rc, res = t.run(t.make_job(tmp_path, data, run, steps=16, name="long"))
    assert rc == 0, t.log_text(tmp_path / "long.json")
    assert res["resumed_from"] == 9 and res["resume_exact"] is True
    assert _session_steps(run) == list(range(10, 17))  # 3 more stable steps + the new 4-step decay
    assert res["steps_run"] == 7

    fresh = tmp_path / "fresh"
    rc, _ = t.run(t.make_job(tmp_path, data, fresh, steps=16, name="fresh"))
    assert rc == 0
    a, b = t.read_dcp(t.final_checkpoint(run)), t.read_dcp(t.final_checkpoint(fresh))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    # a finished run asked again for the same length trains nothing
    rc, res = t.run(t.make_job(tmp_path, data, run, steps=16, name="again"))
    assert rc == 0 and res["steps_run"] == 0 and res["resumed_from"] == 16


def test_cosine_extension_warns_what_changes(tmp_path: Path) -> None:
    data = t.make_tokens(tmp_path / "tok")
    run = tmp_path / "run"
    tr = {"schedule": "cosine", "checkpoint_every": 100}
    rc, res = t.run(t.make_job(tmp_path, data, run, steps=8, training=tr, name="short"))
    assert rc == 0 and not res["warnings"]
    rc, res = t.run(t.make_job(tmp_path, data, run, steps=10, training=tr, name="long"))
    assert rc == 0
    assert res["resumed_from"] == 8 and res["steps_run"] == 2 and res["resume_exact"] is False
    assert any("cosine schedule: steps changed 8 → 10" in w and "differs from a fresh 10-step run" in w
               for w in res["warnings"]), res["warnings"]
    assert _session_steps(run) == [9, 10]
