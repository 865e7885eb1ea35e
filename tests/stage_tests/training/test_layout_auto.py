"""``layout = "auto"``: the candidates, the default, the probe's record, and probe → dry-run through the CLI."""

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
from stages.model_spec import ModelSpec
from stages.parallel_spec import ParallelSpec
from stages.training import layout as lay

ROOT = t.ROOT

MODEL = t.mini_model("tokenizer:tiny", "parallel:auto-cpu", """global_batch_tokens = 256
steps = 100
lr = 3e-3
warmup_steps = 10
""")


def _spec(**arch: int) -> ModelSpec:
    import tomllib

    data = tomllib.loads(MODEL)
    data["architecture"].update(arch)
    return ModelSpec.model_validate(data)


def test_candidates_cover_ranks_dividing_the_cores_and_the_largest_micro_batches() -> None:
    spec = _spec()  # 8 sequences per step
    got = lay.candidates(spec, n_cpus=2)
    assert got == [lay.Layout(1, 2, 8), lay.Layout(1, 2, 4), lay.Layout(2, 1, 4), lay.Layout(2, 1, 2)]
    assert lay.candidates(spec, n_cpus=3) == [lay.Layout(1, 3, 8), lay.Layout(1, 3, 4)]  # 3 ranks cannot split 8
    assert lay.default_layout(spec, n_cpus=2) == lay.Layout(1, 2, 8)


def test_the_recorded_fastest_layout_is_used_and_keyed_by_workload(tmp_path: Path) -> None:
    spec = _spec()
    par = ParallelSpec(layout="auto", backend="gloo")
    chosen, source = lay.resolve_layout(spec, par, 4096, tmp_path)
    assert chosen == lay.default_layout(spec) and "not measured" in source
    lay.record(spec, 4096, tmp_path, [(lay.Layout(1, 2, 8), 900.0), (lay.Layout(2, 1, 4), 1200.0)])
    chosen, source = lay.resolve_layout(spec, par, 4096, tmp_path)
    assert chosen == lay.Layout(2, 1, 4) and "fastest measured by probe, 1,200 tokens/s" in source and "900" in source
    # another architecture is another workload: its layout was never measured
    assert "not measured" in lay.resolve_layout(_spec(hidden_size=128), par, 4096, tmp_path)[1]
    # a given layout is never replaced
    given = ParallelSpec(nproc_per_node=2, micro_batch_size=2, backend="gloo")
    assert lay.resolve_layout(spec, given, 4096, tmp_path)[0] == lay.Layout(2, max(1, lay.cpus() // 2), 2)
    applied = lay.apply(par, lay.Layout(2, 1, 4))
    assert (applied.nproc_per_node, applied.micro_batch_size, applied.env["OMP_NUM_THREADS"]) == (2, 4, "1")
    assert applied.layout == "given"


@pytest.mark.slow
def test_probe_measures_every_candidate_and_the_planner_uses_the_fastest(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(ROOT / "specs", root / "specs")
    (root / "genesis.toml").write_text('[workspace]\ndefault = "model:auto-mini"\nplugins = ["stages"]\n')
    (root / "specs/parallel/auto-cpu.toml").write_text('layout = "auto"\nbackend = "gloo"\n')
    (root / "specs/model/auto-mini.toml").write_text(MODEL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="300")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)

    r = cli("--dry-run", "pretrain:auto-mini")
    assert r.returncode == 0 and "not measured" in r.stdout, r.stderr + r.stdout
    r = cli("probe", "pretrain:auto-mini", "--steps", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    n = len(lay.candidates(_spec()))
    rates = re.findall(r"^\s+(\d+ ranks? × \d+ threads?, micro \d+ × accum \d+)\s+([\d,]+) tokens/s$", r.stdout, re.M)
    assert len(rates) == n, r.stdout
    best = max(rates, key=lambda x: int(x[1].replace(",", "")))
    assert f"→ fastest: {best[0]}" in r.stdout
    rec = json.loads((root / ".genesis" / "layouts.json").read_text())
    (entry,) = rec.values()
    assert len(entry["measured"]) == n
    r = cli("--dry-run", "pretrain:auto-mini")
    assert r.returncode == 0 and f"layout: {best[0]} (auto: fastest measured by probe" in r.stdout, r.stdout
