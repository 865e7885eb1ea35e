"""``genesis-build probe pretrain:<model>`` through the real CLI: a few real training steps on the
model's parallel layout (2 gloo ranks here), random tokens, tokens/s for the planner.

The workspace is a copy of the repository's specs plus a tiny model on ``tokenizer:tiny``; the
tokenizer is not built, so the vocabulary comes from the tokenizer spec. A second check builds a
(synthetic) tokenize output and sees the probe take the vocabulary from its ``meta.json``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import training_testlib as t
from test_pretrain_stage_e2e import WS

pytestmark = pytest.mark.slow
ROOT = t.ROOT

PARALLEL = """nproc_per_node = 2
backend = "gloo"
micro_batch_size = 2
[env]
OMP_NUM_THREADS = "1"
"""

MODEL = t.mini_model("tokenizer:tiny", "parallel:probe-cpu", """global_batch_tokens = 256
steps = 100
lr = 3e-3
warmup_steps = 10
""")


def cli(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_probe_measures_tokens_per_second(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(ROOT / "specs", root / "specs")
    (root / "genesis.toml").write_text('[workspace]\ndefault = "model:probe-mini"\nplugins = ["stages"]\n')
    (root / "specs/parallel/probe-cpu.toml").write_text(PARALLEL)
    (root / "specs/model/probe-mini.toml").write_text(MODEL)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(scratch), COLUMNS="300")

    r = cli(root, "probe", "pretrain:probe-mini", "--steps", "3", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    m = re.search(r"throughput\s+([\d,]+) tokens/s \(([\d.]+) s/step, mean of steps 2–4", out)
    assert m, out
    tok_s = int(m.group(1).replace(",", ""))
    assert tok_s > 0 and float(m.group(2)) > 0
    assert abs(256 / float(m.group(2)) - tok_s) <= 0.01 * tok_s + 1  # tokens/s and s/step agree
    assert "2 ranks: 1 node × 2, torchrun, backend gloo" in out and "256 tokens/step" in out
    assert "vocab 4096 (tokenizer:tiny vocab_size; tokenize:tiny not built yet)" in out
    assert re.search(r"MFU\s+[\d.]+ %", out), out
    assert f"put `tokens_per_second = {tok_s}` in specs/parallel/probe-cpu.toml" in out
    # nothing entered the cache, the scratch dir is gone
    assert not (root / "cache" / "objects").exists() or not any((root / "cache" / "objects").iterdir())
    assert not list(scratch.glob("probe-*"))  # (torch leaves its own torchelastic_*, torchinductor_* there)

    # the planner's ETA takes the number the probe suggests
    (root / "specs/parallel/probe-cpu.toml").write_text(PARALLEL.replace("[env]", f"tokens_per_second = {tok_s}\n[env]"))
    r = cli(root, "--dry-run", "pretrain:probe-mini", env=env)
    assert r.returncode == 0 and "measured (parallel spec)" in r.stdout, r.stderr + r.stdout

    r = cli(root, "probe", "export:probe-mini", env=env)
    assert r.returncode == 2 and "has no probe" in r.stderr


def test_probe_takes_the_vocab_from_the_built_tokenize_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENESIS_CACHE", raising=False)
    ws = WS(tmp_path / "ws")
    r = ws.cli("tokenize:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    from genesis_build.stage import lookup_object
    from genesis_build.workspace import load
    from stages.training.probe import probe_vocab

    def resolve(address: str) -> object:
        raise AssertionError("the spec must not be needed when meta.json is there")

    w = load(ws.root)

    def lookup(node: str):  # what the probe command's session.lookup does
        return lookup_object(w.root, w.cache_dir, node)

    assert probe_vocab("tokenizer:mini", resolve, lookup) == (257, "tokenize:mini meta.json")
    assert lookup("tokenize:never-built") is None
