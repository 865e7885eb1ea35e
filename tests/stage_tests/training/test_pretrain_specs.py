"""Model/parallel spec validation, the batch check hook, the planner, schedules and the resume
monitor: pure Python, fast."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from pydantic import ValidationError

from genesis_build.errors import FieldError
from stages.model_spec import ModelSpec
from stages.parallel_spec import ParallelSpec
from stages.pretrain import KEY_FIELDS, check_batch
from stages.training.metrics import ResumeMonitor
from stages.training.planner import param_counts, plan
from stages.training.schedule import Schedule, choose_resume
from tinylm import ROOT



def _spec(name: str) -> ModelSpec:
    return ModelSpec.model_validate(tomllib.loads((ROOT / "specs" / "model" / f"{name}.toml").read_text()))


def _par(name: str) -> ParallelSpec:
    return ParallelSpec.model_validate(tomllib.loads((ROOT / "specs" / "parallel" / f"{name}.toml").read_text()))


def _with(base: ModelSpec, **sections: dict) -> dict:
    d = base.model_dump(mode="json")
    for sec, vals in sections.items():
        d[sec] = {**d[sec], **vals} if isinstance(d.get(sec), dict) else vals
    return d


def test_shipped_specs_validate_and_1b_has_the_issue_shape() -> None:
    b = _spec("1b")
    a = b.architecture
    assert (a.hidden_size, a.num_layers, a.num_heads, a.num_kv_heads, a.ffn_size, a.context_length) == (1536, 32, 12, 6, 4736, 2048)
    assert a.rope_theta == 500000 and a.dtype == "bfloat16" and b.training.global_batch_tokens == 524288
    assert b.training.lr == 1e-4 and b.training.betas == (0.9, 0.95) and b.training.weight_decay == 0.1
    assert b.tokenizer == "tokenizer:genesis-49k" and b.parallel == "parallel:2x4090"
    assert 0.95e9 < param_counts(a, 49152)["total"] < 1.1e9
    check_batch(b, _par("2x4090"))
    check_batch(_spec("tiny"), _par("cpu-2"))
    assert _par("2x4090").env["NCCL_P2P_DISABLE"] == "1"


@pytest.mark.parametrize("section,change,needle", [
    ("architecture", {"num_heads": 5}, "must divide hidden_size"),
    ("architecture", {"num_kv_heads": 4}, "must divide num_heads"),
    ("architecture", {"hidden_sise": 4}, "hidden_sise"),
    ("training", {"tokens": 1000}, "exactly one of training.steps or training.tokens"),
    ("training", {"betas": [0.9, 1.5]}, "betas"),
    ("training", {"schedule": "linear"}, "schedule"),
])
def test_invalid_model_specs_are_rejected(section: str, change: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        ModelSpec.model_validate(_with(_spec("tiny"), **{section: change}))


def test_bad_references_are_rejected() -> None:
    with pytest.raises(ValidationError, match="tokenizer:<name>"):
        ModelSpec.model_validate({**_spec("tiny").model_dump(mode="json"), "tokenizer": "tiny"})
    with pytest.raises(ValidationError, match="constitution"):
        ModelSpec.model_validate({**_spec("tiny").model_dump(mode="json"), "constitution": "prompts:x"})
    with pytest.raises(ValidationError):
        ParallelSpec.model_validate({"nproc_per_node": 2, "backend": "mpi"})


def test_batch_check_names_the_field_and_suggests_values() -> None:
    spec = ModelSpec.model_validate(_with(_spec("tiny"), training={"global_batch_tokens": 128 * 12}))
    two_ranks = ParallelSpec(nproc_per_node=2, micro_batch_size=4, backend="gloo")  # cpu-2 is layout = "auto"
    with pytest.raises(FieldError) as e:
        check_batch(spec, two_ranks, "cpu-2")
    assert e.value.field == "training.global_batch_tokens"
    assert "micro 4 × accum × world 2 × context 128" in e.value.message and "1024 or 2048" in e.value.message
    spec = ModelSpec.model_validate(_with(_spec("tiny"), training={"global_batch_tokens": 2000}))
    with pytest.raises(FieldError, match="not a multiple of architecture.context_length 128"):
        check_batch(spec, two_ranks)


def test_key_fields_exclude_execution_details() -> None:
    assert "architecture" in KEY_FIELDS and "training.lr" in KEY_FIELDS and "training.steps" in KEY_FIELDS
    assert "training.checkpoint_every" not in KEY_FIELDS and "training.keep_last" not in KEY_FIELDS


def test_planner_rows_and_no_torch_import() -> None:
    rows = dict(plan(_spec("1b"), _par("2x4090"), 49152))
    assert rows["params"].startswith("1.00B")
    assert "micro 4 × accum 32 × world 2 × context 2048" in rows["tokens/step"]
    assert "38,147" in rows["steps"] and "fits" in rows["memory/rank: peak"]
    assert "days" in rows["ETA"]
    # without checkpointing the 1b does not fit a 24 GiB card at micro-batch 4
    no_ckpt = _par("2x4090").model_copy(update={"activation_checkpointing": False})
    assert "does NOT fit" in dict(plan(_spec("1b"), no_ckpt, 49152))["memory/rank: peak"]
    code = "import sys, stages.training.planner; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_wsd_schedule_and_resume_choice() -> None:
    s12, s16 = Schedule("wsd", 12, 2, 0.25, 0.1), Schedule("wsd", 16, 2, 0.25, 0.1)
    assert [round(s12.factor(t), 4) for t in range(12)] == [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 0.7, 0.4, 0.1]
    assert s16.factor(8) == s12.factor(8) and s16.factor(9) != s12.factor(9)
    ck = {3: s12.as_dict(), 9: s12.as_dict(), 12: s12.as_dict()}
    assert choose_resume(ck, s12).step == 12
    c = choose_resume(ck, s16)
    assert c.step == 9 and c.exact
    assert choose_resume({12: s12.as_dict()}, s16).step is None  # the decay-start checkpoint was lost
    cos8, cos10 = Schedule("cosine", 8, 2), Schedule("cosine", 10, 2)
    c = choose_resume({8: cos8.as_dict()}, cos10)
    assert c.step == 8 and not c.exact and "differs from a fresh 10-step run" in c.warning


def test_resume_monitor_flags_silent_reset_only() -> None:
    before = [{"kind": "train", "step": s, "loss": 2.0, "grad_norm": 1.0} for s in range(1, 6)]
    m = ResumeMonitor(before)
    assert [m.observe(6 + i, 5.5, 0.2) for i in range(3)][-1] is not None
    m = ResumeMonitor(before)
    assert all(m.observe(6 + i, 1.98, 0.95) is None for i in range(3))
