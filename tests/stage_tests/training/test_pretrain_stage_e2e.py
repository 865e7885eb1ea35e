"""pretrain + export through the real ``genesis-build`` CLI in a temp workspace.

The tokenize input comes from a small plugin that writes synthetic tokens in the agreed format, so
this test depends only on the engine and the training stages: planner rows in ``--dry-run``, the
batch check as a spec error with file:line, a build to an HF export, extending ``steps`` (same run
dir, only the decay re-run), and Ctrl-C → checkpoint → rerun resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import training_testlib as t

pytestmark = pytest.mark.slow
ROOT = t.ROOT
HERE = Path(__file__).resolve().parent

PLUGIN = f'''
"""Synthetic tokenize output for tests (overrides the real tokenizer kind/tokenize stage)."""
from pydantic import BaseModel, ConfigDict
from genesis_build.stage import register_kind, stage


class FakeTokenizer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vocab_size: int = 257


register_kind("tokenizer", FakeTokenizer, default_stage="tokenize")


@stage("tokenize", version=1, kind="tokenizer", fields=("vocab_size",))
def tokenize(ctx):
    """Synthetic tokens."""
    import training_testlib as t
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    v = ctx.spec.vocab_size
    t.make_tokens(ctx.out, vocab=v)
    tok = Tokenizer(models.WordLevel(vocab={{**{{f"w{{i}}": i for i in range(v - 1)}}, "<|eos|>": v - 1}}, unk_token="<|eos|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>").save_pretrained(str(ctx.out / "tokenizer"))
'''

MODEL = t.mini_model("tokenizer:mini", "parallel:cpu-2", """global_batch_tokens = {gbt}
steps = {steps}
lr = 3e-3
warmup_steps = 2
decay_fraction = 0.25
min_lr_ratio = 0.1
eval_every = 4
checkpoint_every = {every}
""")


class WS:
    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("specs/model", "specs/parallel", "specs/tokenizer"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "fake_tokens.py").write_text(PLUGIN)
        (root / "genesis.toml").write_text('[workspace]\ndefault = "model:mini"\nplugins = ["stages", "fake_tokens"]\n')
        (root / "specs/tokenizer/mini.toml").write_text("vocab_size = 257\n")
        (root / "specs/parallel/cpu-2.toml").write_text(
            'nproc_per_node = 2\nbackend = "gloo"\nmicro_batch_size = 2\n[env]\nOMP_NUM_THREADS = "1"\n')
        self.model(steps=12)

    def model(self, steps: int, gbt: int = 256, every: int = 3) -> None:
        (self.root / "specs/model/mini.toml").write_text(MODEL.format(steps=steps, gbt=gbt, every=every))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
        # the plugin imports training_testlib (HERE), which imports tinylm (tests/)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), str(ROOT), str(HERE), str(ROOT / "tests")])
        return env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def manifest(self, target: str) -> dict:
        return json.loads((self.root / "out" / target).resolve().parent.joinpath("manifest.json").read_text())

    def run_dir(self) -> Path:
        runs = [p for p in (self.root / "cache" / "runs").glob("*") if (p / "job.json").is_file()]
        assert len(runs) == 1, runs
        return runs[0]


def test_pretrain_and_export_through_the_cli(tmp_path: Path) -> None:
    ws = WS(tmp_path / "ws")

    r = ws.cli("--dry-run", "export:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "pretrain:mini" in r.stdout and "tokens/step" in r.stdout and "micro 2 × accum 2 × world 2 × context 32" in r.stdout

    ws.model(steps=12, gbt=32 * 6)
    r = ws.cli("--dry-run", "export:mini")
    assert r.returncode == 2
    assert "mini.toml:" in r.stderr and "global_batch_tokens" in r.stderr and "128 or 256" in r.stderr, r.stderr

    ws.model(steps=12)
    r = ws.cli("export:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    hf = ws.root / "out" / "export:mini"
    assert (hf / "model.safetensors").is_file() and (hf / "tokenizer.json").is_file()
    pre_key = ws.manifest("export:mini")["inputs"]["pretrain"]["key"]
    pdir = next((ws.root / "cache" / "objects").glob(f"*/{pre_key}"))
    pre = json.loads((pdir / "manifest.json").read_text())
    assert pre["stats"]["steps_run"] == 12 and pre["stats"]["final_val_loss"] < 5.5 and pre["trajectory"]
    for name in ("checkpoint/.metadata", "metrics.jsonl", "train_state.json", "config.json"):
        assert (pdir / "data" / name).exists(), name
    # run metadata (TensorBoard events, timings) stays in the run dir, out of the output digest
    assert not (pdir / "data" / "tb").exists() and (ws.run_dir() / "tb").is_dir()
    curves = [json.loads(line) for line in (pdir / "data" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curves if r["kind"] == "train"] == list(range(1, 13))
    assert not any("time" in r or "tokens_per_s" in r or "session" in r for r in curves)

    # --force is a fresh run: step 0, a new trajectory in the same run dir; same bytes → export stays cached
    export_key = ws.manifest("export:mini")["key"]
    r = ws.cli("--dry-run", "--force", "pretrain:mini", "export:mini")
    assert r.returncode == 0 and "fresh run from step 0" in r.stdout, r.stderr + r.stdout
    r = ws.cli("--force", "pretrain:mini", "export:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "fresh run from step 0" in r.stdout and "dependents stay cached" in r.stdout, r.stdout
    forced = json.loads((pdir / "manifest.json").read_text())
    assert forced["created"] > pre["created"]
    assert forced["stats"]["resumed_from"] is None and forced["stats"]["steps_run"] == 12
    assert forced["output_digest"] == pre["output_digest"]
    assert ws.manifest("export:mini")["key"] == export_key
    assert "· export:mini cached" in r.stdout, r.stdout

    # a longer run: same run dir, continues from the decay-start checkpoint
    ws.model(steps=16)
    r = ws.cli("pretrain:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    m = ws.manifest("pretrain:mini")
    assert m["trajectory"] == pre["trajectory"]
    assert m["stats"]["resumed_from"] == 9 and m["stats"]["steps_run"] == 7

    # Ctrl-C: the stage forwards SIGTERM, ranks checkpoint, the build fails; a rerun resumes there
    ws.model(steps=40, every=100)
    p = subprocess.Popen([sys.executable, "-m", "genesis_build.cli", "pretrain:mini"], cwd=ws.root, env=ws.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    run_dir = ws.run_dir()
    while time.time() < deadline:
        if any(r.get("kind") == "train" and r.get("session", 0) >= 3 and r["step"] >= 33 for r in t.metrics(run_dir)):
            break
        assert p.poll() is None, p.communicate()
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=180)
    assert p.returncode != 0
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "stopped", (res, err)
    stopped = res["step"]
    assert (run_dir / "checkpoints" / f"step-{stopped}" / ".metadata").is_file()
    r = ws.cli("pretrain:mini")
    assert r.returncode == 0, r.stderr + r.stdout
    m = ws.manifest("pretrain:mini")
    assert m["stats"]["resumed_from"] == stopped and m["stats"]["steps_run"] == 40 - stopped
    shutil.rmtree(ws.root / "cache", ignore_errors=True)
