"""Which model plays each CAI role: with ``[instruct]`` every role defaults to the instruct model,
roles can be set one by one, and each role's identity is in the per-sample keys — so changing only
the judge re-judges the pairs without sampling a response again, and a separate critic keeps the
one-principle-edit property."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instruct_testlib import context
from tinylm import ROOT

BASE = {"tokenizer": "tokenizer:tiny", "parallel": "parallel:cpu-2", "constitution": "constitution:genesis",
        "prompts": "prompts:builtin",
        "architecture": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "ffn_size": 64, "context_length": 256},
        "training": {"global_batch_tokens": 1024, "steps": 2, "lr": 1e-3}}


def _spec(**sections):
    from stages.model_spec import ModelSpec

    return ModelSpec.model_validate({**BASE, **sections})


def test_self_means_instruct_when_the_spec_has_it() -> None:
    from genesis_build.stage import SpecView
    from stages.cai_generate import _inputs as gen_inputs
    from stages.cai_preferences import _inputs as pref_inputs
    from stages.eval import _eval_parts
    from stages.sft import _inputs as sft_inputs

    plain = SpecView.of(_spec(evals="evals:tiny"), "model:m", ROOT)
    tuned = SpecView.of(_spec(evals="evals:tiny", instruct={"data": "chat:builtin", "steps": 4, "warmup_steps": 1}),
                        "model:m", ROOT)
    assert gen_inputs(plain, None) == {"prompts": "prompts:builtin", "base": "export:m"}
    assert gen_inputs(tuned, None) == {"prompts": "prompts:builtin", "instruct": "export-instruct:m"}
    assert pref_inputs(plain, None) == {"prompts": "prompts:builtin", "sft": "sft:m", "base": "export:m"}
    assert pref_inputs(tuned, None) == {"prompts": "prompts:builtin", "sft": "sft:m", "instruct": "export-instruct:m"}
    # SFT starts from the instruct checkpoint; without [instruct] its inputs (and key) are as before
    assert sft_inputs(plain, None) == {"data": "cai-generate:m", "pretrain": "pretrain:m", "base": "export:m"}
    assert sft_inputs(tuned, None) == {"data": "cai-generate:m", "instruct": "instruct:m", "base": "export:m"}
    assert _eval_parts(plain) == ["base", "aligned"] and _eval_parts(tuned) == ["base", "instruct", "aligned"]

    # roles one by one: the base model judges, a local dir critiques
    mixed = SpecView.of(_spec(instruct={"data": "chat:builtin", "steps": 4, "warmup_steps": 1},
                              cai={"critic": "base", "preferences": {"feedback": "base", "policy": "instruct"}}),
                        "model:m", ROOT)
    assert gen_inputs(mixed, None) == {"prompts": "prompts:builtin", "instruct": "export-instruct:m", "base": "export:m"}
    assert pref_inputs(mixed, None) == {"prompts": "prompts:builtin", "instruct": "export-instruct:m", "base": "export:m"}


def test_critic_identity_is_in_the_sample_key_and_one_principle_edit_still_touches_only_its_samples() -> None:
    import tomllib

    from stages.cai_lib import critique
    from stages.cai_lib.constitution import ConstitutionSpec
    from stages.cai_lib.sections import CaiSection

    constitution = ConstitutionSpec.model_validate(tomllib.loads((ROOT / "specs/constitution/genesis.toml").read_text()))
    prompts = [{"id": f"p{i}", "prompt": f"question {i}", "category": None} for i in range(70)]
    cai = CaiSection(num_prompts=70)
    gen, judge_a, judge_b = {"type": "hf", "digest": "g"}, {"type": "hf", "digest": "a"}, {"type": "hf", "digest": "b"}
    plain = critique.plan(prompts, constitution, cai, gen)
    assert [j.key for j in critique.plan(prompts, constitution, cai, gen, None)] == [j.key for j in plain]
    with_a = critique.plan(prompts, constitution, cai, gen, judge_a)
    with_b = critique.plan(prompts, constitution, cai, gen, judge_b)
    assert not {j.key for j in with_a} & {j.key for j in plain}  # another critic: other samples
    assert not {j.key for j in with_a} & {j.key for j in with_b}

    edited = constitution.model_copy(deep=True)
    edited.principles["curious"].text = "Be curious. Ask exactly one good follow-up question."
    after = critique.plan(prompts, edited, cai, gen, judge_a)
    changed = {j.key for j in after} - {j.key for j in with_a}
    curious = sum(j.principle_id == "curious" for j in after)
    assert 0 < curious < 70 and len(changed) == curious


@pytest.fixture()
def prefs_setup(tmp_path: Path, tiny_lm: Path, other_lm: Path):
    ws = tmp_path / "ws"
    (ws / "specs/constitution").mkdir(parents=True)
    (ws / "specs/constitution/genesis.toml").write_text((ROOT / "specs/constitution/genesis.toml").read_text())
    (ws / "specs/parallel").mkdir(parents=True)
    (ws / "specs/parallel/cpu-2.toml").write_text((ROOT / "specs/parallel/cpu-2.toml").read_text())
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "hf").symlink_to(tiny_lm)  # the sft stage's output keeps its HF copy in hf/
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    rows = [json.loads(l) for l in (ROOT / "stages/cai_lib/builtin_prompts.jsonl").read_text().splitlines()][:6]
    (prompts / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": r["prompt"], "category": None}) + "\n"
                                                   for i, r in enumerate(rows)))
    return {"ws": ws, "sft": sft, "prompts": prompts, "instruct": other_lm, "base": tiny_lm, "root": tmp_path}


def test_changing_only_the_feedback_model_rejudges_without_resampling(prefs_setup) -> None:
    from stages.cai_preferences import cai_preferences

    s = prefs_setup

    def run(feedback: str, out: str) -> dict:
        spec = _spec(instruct={"data": "chat:builtin", "steps": 4, "warmup_steps": 1},
                     cai={"runtime": {"batch_size": 12, "device": "cpu"},
                          "preferences": {"feedback": feedback, "num_prompts": 6,
                                          "decoding": {"temperature": 1.0, "max_new_tokens": 6}}})
        inputs = {"prompts": s["prompts"], "sft": s["sft"], "instruct": s["instruct"], "base": s["base"]}
        ctx = context(s["ws"], spec, "cai-preferences", s["root"] / out, inputs)
        cai_preferences(ctx)
        meta = json.loads((s["root"] / out / "meta.json").read_text())
        return {**ctx.recorded_stats, "meta": meta}

    first = run("self", "p1")  # self → the instruct model judges
    assert first["meta"]["roles"] == {"policy": "sft", "feedback": "instruct"}
    assert first["responses_generated"] == 12 and first["judgments_generated"] == 6
    judged_by_base = run("base", "p2")
    assert judged_by_base["meta"]["roles"]["feedback"] == "base"
    assert judged_by_base["responses_generated"] == 0 and judged_by_base["judgments_generated"] == 6
    assert judged_by_base["meta"]["feedback"] != first["meta"]["feedback"]
    again = run("instruct", "p3")  # back to the instruct judge: everything cached
    assert again["generated"] == 0
    assert (s["root"] / "p3/pairs.jsonl").read_bytes() == (s["root"] / "p1/pairs.jsonl").read_bytes()


def test_separate_critic_writes_critiques_and_revisions(prefs_setup) -> None:
    """cai-generate with the instruct model answering and the base model critiquing/revising: the
    critic is recorded in each sample, and dropping the critic (the generator critiques itself)
    generates every sample again — its identity is part of the key."""
    from stages.cai_generate import cai_generate

    s = prefs_setup

    def run(critic: str | None, out: str) -> dict:
        spec = _spec(instruct={"data": "chat:builtin", "steps": 4, "warmup_steps": 1},
                     cai={"critic": critic, "num_prompts": 6, "decoding": {"max_new_tokens": 4},
                          "runtime": {"batch_size": 6, "device": "cpu"}})
        inputs = {"prompts": s["prompts"], "instruct": s["instruct"], **({"base": s["base"]} if critic else {})}
        ctx = context(s["ws"], spec, "cai-generate", s["root"] / out, inputs)
        cai_generate(ctx)
        meta = json.loads((s["root"] / out / "meta.json").read_text())
        samples = [json.loads(l) for l in (s["root"] / out / "samples.jsonl").read_text().splitlines()]
        return {**ctx.recorded_stats, "meta": meta, "samples": samples}

    split = run("base", "g1")
    assert split["meta"]["roles"] == {"generator": "instruct", "critic": "base"}
    assert split["generated"] == split["total"] == 6
    assert all(x["critic"] == split["meta"]["critic"] != x["generator"] for x in split["samples"])
    assert run("base", "g2")["generated"] == 0
    alone = run(None, "g3")
    assert alone["meta"]["roles"] == {"generator": "instruct", "critic": "instruct"} and alone["generated"] == 6
    assert all("critic" not in x for x in alone["samples"])
