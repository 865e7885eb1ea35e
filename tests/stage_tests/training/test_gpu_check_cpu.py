"""``benchmarks/gpu_check.py --cpu``: the GPU check's smoke mode runs in CI, so the script cannot rot.

Tiny shapes on 2 gloo ranks: throughput rows, kill + resume with bitwise-equal final weights, SFT and
DPO steps with the reference log-probabilities computed before the launch, export → transformers →
one TruthfulQA batch. The table must report every part and pass.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import training_testlib as t

pytestmark = pytest.mark.slow


def test_gpu_check_smoke_mode_passes_every_part(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(PYTHONPATH=str(t.ROOT), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(t.ROOT / "benchmarks/gpu_check.py"), "--cpu"], cwd=t.ROOT, env=env,
                       capture_output=True, text=True, timeout=1500)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr[-3000:]
    assert "all checks passed" in out
    for part in ("(a) throughput", "(b) kill + resume", "(c) SFT + DPO", "(d) export + TruthfulQA"):
        assert part in out, out
    assert "bitwise equal to the uninterrupted run" in out and "resumed from step" in out
    assert "DPO steps" in out and "SFT steps" in out and "MC1 " in out
    assert "FAIL" not in out
    assert not list(tmp_path.glob("gpu-check-*"))  # the scratch dir is gone
