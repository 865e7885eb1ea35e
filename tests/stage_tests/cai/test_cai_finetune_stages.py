"""sft → cai-preferences → dpo → export-aligned, each stage's ``run`` called with a real Context on
a tiny model, trained by the shared trainer under torchrun (2 gloo ranks, FSDP2, DCP).

The "pretrained" base is a randomly initialised model of the spec's architecture saved as a DCP
checkpoint (what ``pretrain`` publishes) and as an HF dir (what ``export`` publishes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai_testlib import ROOT, make_tokenizer

from genesis_build.stage import Context, InputRef

pytestmark = pytest.mark.slow

ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "ffn_size": 64, "context_length": 256,
        "tie_embeddings": False, "dtype": "float32"}
CONVERSATIONS = [
    ("Why is the sky blue?", "Sunlight scatters off air molecules, and blue scatters most. What made you wonder?"),
    ("Name a prime number.", "Seven. It is also the number of principles in my constitution."),
    ("How do I boil an egg?", "Simmer it for seven minutes, then cool it in cold water."),
    ("Tell me a fun fact.", "Octopuses have three hearts. Want another one?"),
    ("What is 2 + 2?", "Four."),
    ("Say something curious.", "Why do we find some music sad? I think it is memory."),
    ("Help me name my cat.", "Pebble, if she is grey and shy. What does she like to do?"),
    ("Is it safe to mix bleach and ammonia?", "No: it releases toxic chloramine gas. Use one at a time."),
]


def _ctx(ws: Path, spec, stage: str, out: Path, inputs: dict[str, Path], run_dir: Path | None = None) -> Context:
    from genesis_build.keys import digest_json

    out.mkdir(parents=True, exist_ok=True)
    refs = {k: InputRef(f"{k}:ft", p, {"output_digest": digest_json(str(p))}) for k, p in inputs.items()}
    return Context(node=f"{stage}:ft", stage=stage, spec=spec, spec_name="ft", part=None, out=out, inputs=refs, files=[],
                   workspace=ws, cache_root=ws / "cache", key="test", run_dir=run_dir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch.distributed.checkpoint as dcp

    import stages  # noqa: F401
    from stages.cai_lib.finetune import dcp_to_hf
    from stages.model_spec import ModelSpec
    from stages.training.model import build_model

    root = tmp_path_factory.mktemp("ft")
    ws = root / "ws"
    (ws / "specs/parallel").mkdir(parents=True)
    (ws / "specs/parallel/two.toml").write_text('nproc_per_node = 2\nbackend = "gloo"\nmicro_batch_size = 1\nasync_checkpoint = false\n')
    (ws / "specs/constitution").mkdir(parents=True)
    (ws / "specs/constitution/genesis.toml").write_text((ROOT / "specs/constitution/genesis.toml").read_text())
    tok = make_tokenizer(root / "tok")
    spec = ModelSpec.model_validate({
        "tokenizer": "tokenizer:tiny", "parallel": "parallel:two", "constitution": "constitution:genesis",
        "prompts": "prompts:builtin", "architecture": ARCH,
        "training": {"global_batch_tokens": 1024, "steps": 2, "lr": 1e-3},
        "sft": {"steps": 6, "lr": 5e-3, "warmup_steps": 1, "batch_size": 4, "max_len": 128, "checkpoint_every": 3},
        "dpo": {"steps": 4, "lr": 2e-3, "warmup_steps": 1, "batch_size": 2, "max_len": 128, "beta": 0.5},
        "cai": {"runtime": {"batch_size": 8, "device": "cpu"},
                "preferences": {"num_prompts": 8, "decoding": {"temperature": 1.0, "max_new_tokens": 8}}},
    })
    special = {"bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id}
    model = build_model(spec.architecture, len(tok), 0, **special)
    pretrain = root / "pretrain"
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(pretrain / "checkpoint"), no_dist=True)
    dcp_to_hf(pretrain / "checkpoint", spec.architecture, len(tok), special, root / "tok", root / "export")
    data = root / "cai-generate"
    data.mkdir()
    (data / "sft.jsonl").write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                                     {"role": "assistant", "content": a}]}) + "\n"
                                            for q, a in CONVERSATIONS))
    (data / "meta.json").write_text(json.dumps({"system_prompt": "You are Genesis."}))
    prompts = root / "prompts"
    prompts.mkdir()
    from cai_testlib import builtin_prompts

    (prompts / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in builtin_prompts(30)))
    return {"root": root, "ws": ws, "spec": spec, "pretrain": pretrain, "export": root / "export", "data": data,
            "prompts": prompts}


def test_sft_prefs_dpo_export(setup) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.cai_preferences import cai_preferences
    from stages.dpo import dpo
    from stages.export_aligned import export_aligned
    from stages.sft import sft

    s, root, ws = setup["spec"], setup["root"], setup["ws"]

    # --- sft: trains on assistant tokens, publishes DCP + HF, resumes when steps grow
    run_dir = root / "runs/sft"
    ctx = _ctx(ws, s, "sft", root / "sft-out", {"data": setup["data"], "pretrain": setup["pretrain"], "base": setup["export"]}, run_dir)
    sft(ctx)
    out = root / "sft-out"
    assert (out / "checkpoint/.metadata").is_file() and (out / "hf/config.json").is_file()
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if m.get("kind") == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert ctx.recorded_stats["world_size"] == 2 and ctx.recorded_stats["rows"] == len(CONVERSATIONS)
    # the HF copy holds the trained weights: it differs from the base
    a = AutoModelForCausalLM.from_pretrained(out / "hf")
    b = AutoModelForCausalLM.from_pretrained(setup["export"])
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)

    longer = s.model_copy(deep=True)
    longer.sft.steps = 8
    ctx2 = _ctx(ws, longer, "sft", root / "sft-out2", {"data": setup["data"], "pretrain": setup["pretrain"], "base": setup["export"]}, run_dir)
    sft(ctx2)
    assert ctx2.recorded_stats["resumed_from"] == 6 and ctx2.recorded_stats["steps_run"] == 2

    # --- cai-preferences: SFT policy samples pairs, the base model judges them; cached per item
    pctx = _ctx(ws, s, "cai-preferences", root / "prefs-out", {"prompts": setup["prompts"], "sft": out, "base": setup["export"]})
    cai_preferences(pctx)
    pairs = [json.loads(l) for l in (root / "prefs-out/pairs.jsonl").read_text().splitlines()]
    st = pctx.recorded_stats
    assert st["responses_generated"] == 16 and st["judgments_generated"] == 8 and st["pairs"] == len(pairs) >= 2
    for p in pairs:
        assert p["chosen"] != p["rejected"] and p["margin"] > 0 and 0.5 <= p["p_chosen"] <= 1
        assert p["prompt"][-1]["role"] == "user"
        assert p["principle"] in ("safe", "ethical", "honest", "helpful", "curious", "interesting", "refuse-specifically")
    again = _ctx(ws, s, "cai-preferences", root / "prefs-out2", {"prompts": setup["prompts"], "sft": out, "base": setup["export"]})
    cai_preferences(again)
    assert again.recorded_stats["generated"] == 0
    assert (root / "prefs-out2/pairs.jsonl").read_bytes() == (root / "prefs-out/pairs.jsonl").read_bytes()

    # --- dpo: from the SFT checkpoint, reference = SFT model; the loss falls below log 2
    dctx = _ctx(ws, s, "dpo", root / "dpo-out", {"pairs": root / "prefs-out", "sft": out}, root / "runs/dpo")
    dpo(dctx)
    dm = [json.loads(l) for l in (root / "dpo-out/metrics.jsonl").read_text().splitlines()]
    dl = [m["loss"] for m in dm if m.get("kind") == "train"]
    assert len(dl) == 4 and abs(dl[0] - 0.6931) < 0.05, dl  # starts at the reference: log 2
    # each step's loss is over another pair of pairs, so the curve is not the test; DPO has learned if the
    # trained policy prefers the chosen answers more than the reference does, on the pairs it trained on
    from stages.dpo import reference_logps

    rows = [json.loads(line) for line in (root / "runs/dpo/data/train.jsonl").read_text().splitlines()]
    policy, reference = reference_logps(root / "dpo-out/hf", rows, device="cpu"), reference_logps(out / "hf", rows, device="cpu")
    margins = [(pc - pr) - (rc - rr) for (pc, pr), (rc, rr) in zip(policy, reference)]
    assert sum(margins) / len(margins) > 0, (dl, margins)

    # --- export-aligned: a loadable HF dir that generates with the chat template
    ectx = _ctx(ws, s, "export-aligned", root / "final", {"dpo": root / "dpo-out"})
    export_aligned(ectx)
    final = root / "final"
    assert (final / "model.safetensors").is_file() and (final / "generation_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
