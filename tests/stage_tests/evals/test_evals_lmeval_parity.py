"""Our TruthfulQA MC1/MC2 equal lm-evaluation-harness's on the same tiny model and questions.

lm-eval (test-only dependency, ``lm-eval[hf]==0.4.13``) runs offline on the shared
``mc_task.json``: the first N questions are converted to JSONL rows in the HF ``truthful_qa``
layout (dict order kept), and copies of lm-eval's own ``truthfulqa_mc1.yaml`` /
``truthfulqa_mc2.yaml`` / ``utils.py`` — taken from the installed package at test time, renamed
and pointed at the JSONL via ``dataset_path: json`` — are passed with ``--include_path``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evals_testlib import SHARED_EVALS, make_eval_lm

N_QUESTIONS = 40
MC_TASK = SHARED_EVALS / "truthfulqa" / "mc_task.json"


def lm_eval_task_dir() -> Path:
    """lm-eval's own TruthfulQA task folder (lm-eval is a test dependency: missing is a failure)."""
    import lm_eval

    d = Path(lm_eval.__file__).parent / "tasks" / "truthfulqa"
    assert (d / "truthfulqa_mc1.yaml").is_file(), f"lm-eval {lm_eval.__version__} has no {d}/truthfulqa_mc1.yaml"
    return d


def write_tasks(tmp: Path, n: int) -> Path:
    """JSONL data + renamed copies of lm-eval's task yamls pointing at it."""
    src = lm_eval_task_dir()
    rows = json.loads(MC_TASK.read_text())[:n]
    data = tmp / "truthfulqa_mc.jsonl"
    with open(data, "w") as f:
        for r in rows:
            f.write(json.dumps({"question": r["question"],
                                "mc1_targets": {"choices": list(r["mc1_targets"]), "labels": list(r["mc1_targets"].values())},
                                "mc2_targets": {"choices": list(r["mc2_targets"]), "labels": list(r["mc2_targets"].values())}}) + "\n")
    tasks = tmp / "tasks"
    tasks.mkdir()
    local = f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    validation: {data}\n"
    mc1 = (src / "truthfulqa_mc1.yaml").read_text()
    mc1 = re.sub(r"^dataset_path:.*\n", local, mc1, flags=re.M)
    mc1 = re.sub(r"^dataset_name:.*\n", "", mc1, flags=re.M)
    mc1 = re.sub(r"^task: truthfulqa_mc1$", "task: gb_truthfulqa_mc1", mc1, flags=re.M)
    mc1 = re.sub(r"^tag:\n  - truthfulqa\n", "", mc1, flags=re.M)
    assert "gb_truthfulqa_mc1" in mc1 and "dataset_path: json" in mc1
    (tasks / "gb_truthfulqa_mc1.yaml").write_text(mc1)
    mc2 = (src / "truthfulqa_mc2.yaml").read_text()
    mc2 = mc2.replace("include: truthfulqa_mc1.yaml", "include: gb_truthfulqa_mc1.yaml")
    mc2 = re.sub(r"^task: truthfulqa_mc2$", "task: gb_truthfulqa_mc2", mc2, flags=re.M)
    assert "gb_truthfulqa_mc2" in mc2 and "gb_truthfulqa_mc1.yaml" in mc2
    (tasks / "gb_truthfulqa_mc2.yaml").write_text(mc2)
    (tasks / "utils.py").write_text((src / "utils.py").read_text())
    return tasks


def run_lm_eval(model_dir: Path, tasks: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf",
                        "--model_args", f"pretrained={model_dir},dtype=float32", "--tasks", "gb_truthfulqa_mc1,gb_truthfulqa_mc2",
                        "--include_path", str(tasks), "--device", "cpu", "--batch_size", "8", "--output_path", str(out)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    files = sorted(out.rglob("results_*.json"))
    assert files, p.stdout[-2000:]
    res = json.loads(files[-1].read_text())["results"]
    return {t: res[f"gb_truthfulqa_{t}"]["acc,none"] for t in ("mc1", "mc2")}


def ours(model_dir: Path) -> dict[str, float]:
    from stages.evals_lib import truthfulqa
    from stages.evals_lib.data import load_suite
    from stages.evals_lib.lm import LocalLM
    from stages.evals_lib.spec import TruthfulQASuite

    items, _ = load_suite("truthfulqa", TruthfulQASuite(path=str(MC_TASK), limit=N_QUESTIONS), MC_TASK)
    res, _ = truthfulqa.evaluate(LocalLM(model_dir, device="cpu", dtype="float32", batch_size=8), items, ["mc1", "mc2"])
    return {t: res["results"][f"truthfulqa_{t}"]["acc"] for t in ("mc1", "mc2")}


@pytest.mark.slow
@pytest.mark.parametrize("context", [1024, 256], ids=["fits", "left-truncated"])
def test_truthfulqa_mc1_mc2_equal_lm_eval(tmp_path: Path, context: int, eval_lm: Path) -> None:
    # the shared data sits beside the repository (../shared), in CI too: missing is a failure, not a skip
    assert MC_TASK.is_file(), f"shared TruthfulQA file missing: {MC_TASK}"
    # 256 positions: every TruthfulQA prompt is longer, so both sides left-truncate the context
    model = eval_lm if context == 1024 else make_eval_lm(tmp_path / "short-ctx", context=context)
    theirs = run_lm_eval(model, write_tasks(tmp_path, N_QUESTIONS), tmp_path / "lm-eval-out")
    mine = ours(model)
    print(f"context {context}: lm-eval {theirs}  ours {mine}")
    for t in ("mc1", "mc2"):
        assert abs(mine[t] - theirs[t]) * 100 < 0.5, (t, mine, theirs)
