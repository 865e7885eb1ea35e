"""The model card from eval results (no pipeline): every number goes into model-index unchanged and
parses back with ``huggingface_hub.ModelCard``; a missing suite or a null value is "not evaluated",
never a number; the smoke notice leads; checksums verify with ``sha256sum -c``; the split_digits
check names the tokenizer spec's file, line and field before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm import ROOT


def _results(variant: str, mc1: float, with_harm: bool, source_kind: str = "builtin") -> dict:
    suites = {"truthfulqa": {"config": {"limit": None}, "source": {"kind": source_kind, "file": "truthfulqa_mc.jsonl",
                                                                  "path": "data/tq.json", "sha256": "ab" * 32,
                                                                  "rows": 24, "items": 24}}}
    results = {"truthfulqa_mc1": {"alias": "truthfulqa_mc1", "acc": mc1, "acc_stderr": 0.01},
               "truthfulqa_mc2": {"alias": "truthfulqa_mc2", "acc": 1 / 3, "acc_stderr": None}}
    if with_harm:
        suites["harmbench"] = {"config": {"judge": "openai:http://127.0.0.1:9/v1", "judge_model": "cls"},
                               "source": {"kind": "builtin", "file": "hb.jsonl", "rows": 26, "items": 8}}
        results["harmbench"] = {"alias": "harmbench", "asr": 0.125, "asr_stderr": 0.1, "refusal_rate": None,
                                "judge_unparsed": 0}
        results["harmbench/illegal"] = {"alias": "harmbench/illegal", "asr": 1e-05}
    return {"results": results, "config": {"suites": suites, "variant": variant}}


@pytest.fixture
def evals() -> dict:
    return {"base": _results("base", 0.2916666666666667, True), "aligned": _results("aligned", 0.30000000000000004, False)}


def test_model_index_roundtrips_every_number_exactly(evals: dict, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from stages.model_spec import ReleaseSection
    from stages.release_lib import card

    data = card.front_matter(ReleaseSection(tags=["x"]), "genesis-t", evals, True, None)
    text = card.render(card.TEMPLATE.read_text().split("## Files")[0], data,
                       {"name": "genesis-t", "notice": "**Smoke.** smoke sets here.", "params_human": "1K", "model": "t",
                        "aligned": True, "sets_summary": "the built-in smoke sets"})
    (tmp_path / "README.md").write_text(text)
    loaded = ModelCard.load(tmp_path / "README.md")
    got = sorted((e.metric_config, e.dataset_config, e.metric_type, e.metric_value) for e in loaded.data.eval_results)
    want = sorted([("base", "truthfulqa_mc1", "acc", 0.2916666666666667), ("base", "truthfulqa_mc2", "acc", 1 / 3),
                   ("base", "harmbench", "asr", 0.125), ("base", "harmbench", "judge_unparsed", 0),
                   ("base", "harmbench/illegal", "asr", 1e-05),
                   ("aligned", "truthfulqa_mc1", "acc", 0.30000000000000004), ("aligned", "truthfulqa_mc2", "acc", 1 / 3)])
    assert got == want  # exact floats; the null refusal_rate is not invented
    stderr = {(e.metric_config, e.dataset_config): e.metric_args.get("stderr") for e in loaded.data.eval_results
              if e.metric_type in ("acc", "asr")}
    assert stderr[("base", "truthfulqa_mc1")] == 0.01 and stderr[("base", "truthfulqa_mc2")] is None
    judge = {e.dataset_config: e.metric_args["judge"] for e in loaded.data.eval_results}
    assert judge["harmbench"] == "openai:http://127.0.0.1:9/v1 (cls)" and judge["truthfulqa_mc1"].startswith("log-likelihood")
    assert all(e.dataset_type.startswith("genesis-build/builtin-") for e in loaded.data.eval_results)
    assert loaded.data.license == "apache-2.0" and "x" in loaded.data.tags
    paragraphs = loaded.text.strip().split("\n\n")
    assert paragraphs[0] == "# genesis-t" and paragraphs[1] == "**Smoke.** smoke sets here."


def test_table_says_not_evaluated_for_missing_suites_and_values(evals: dict) -> None:
    from stages.release_lib import card

    table = card.eval_table(evals, ["base", "aligned"])
    assert "| harmbench | harmbench | asr | 0.125 ± 0.1 | not evaluated | smoke |" in table
    assert "| xstest | — | — | not evaluated | not evaluated | — |" in table
    assert "| engagement | — | — | not evaluated | not evaluated | — |" in table
    assert "refusal_rate" not in table  # a null value is no row, not a zero
    sets = card.suite_sets(evals)
    assert sets["truthfulqa"]["smoke"] and sets["truthfulqa"]["subset"] == "24 items"
    assert sets["harmbench"]["subset"] == "8 of 26 items"


def test_benchmark_file_is_not_called_smoke() -> None:
    from stages.release_lib import card

    ev = {"base": _results("base", 0.25, False, source_kind="path")}
    sets = card.suite_sets(ev)
    assert sets["truthfulqa"]["set"] == "benchmark" and "tq.json" in sets["truthfulqa"]["source"]
    [r, *_] = card.model_index("m", ev)
    assert r.dataset_type == "truthfulqa/truthful_qa" and r.metric_args["set"] == "benchmark"


def test_sha256sums_verify_with_coreutils(tmp_path: Path) -> None:
    from stages.release import write_sha256sums

    (tmp_path / "a.bin").write_bytes(os.urandom(3000))
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "base.json").write_text("{}")
    assert write_sha256sums(tmp_path) == 2
    r = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "evals/base.json: OK" in r.stdout
    (tmp_path / "a.bin").write_bytes(b"tampered")
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True).returncode != 0


def test_split_digits_tokenizer_fails_release_before_anything_runs(tmp_path: Path) -> None:
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "specs", ws / "specs")
    (ws / "genesis.toml").write_text('[workspace]\ndefault = "release:sd"\nplugins = ["stages"]\n')
    (ws / "specs/tokenizer/digits.toml").write_text('extends = "tokenizer:tiny"\n\nsplit_digits = true\n')
    (ws / "specs/model/sd.toml").write_text('extends = "model:tiny"\ntokenizer = "tokenizer:digits"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "--dry-run", "release:sd"], cwd=ws, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "specs/tokenizer/digits.toml:3" in err and "split_digits" in err and "GGUF" in err, err
    assert not (ws / "cache" / "objects").exists() or not any((ws / "cache" / "objects").iterdir())
    # without GGUF files the same tokenizer releases fine (the check is only for what GGUF cannot hold)
    (ws / "specs/model/sd.toml").write_text('extends = "model:tiny"\ntokenizer = "tokenizer:digits"\n\n[release]\ngguf = []\n')
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "--dry-run", "release:sd"], cwd=ws, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.dumps("release:sd")[1:-1] in r.stdout
