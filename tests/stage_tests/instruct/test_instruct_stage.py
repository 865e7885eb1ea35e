"""``instruct`` → ``export-instruct`` on a tiny model with a local chat set: real training by the
shared trainer under torchrun (2 gloo ranks, FSDP2, DCP), the validation loss before and after,
exact resume when ``steps`` grows, and an HF dir that ``AutoModelForCausalLM`` loads and generates
with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instruct_testlib import DIALOGUES, context, write_jsonl
from tinylm import make_tokenizer

pytestmark = pytest.mark.slow

ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "ffn_size": 64, "context_length": 256,
        "tie_embeddings": False, "dtype": "float32"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch.distributed.checkpoint as dcp

    import stages  # noqa: F401
    from stages.cai_lib.finetune import dcp_to_hf
    from stages.chat_lib.data import build
    from stages.chat_lib.spec import ChatSpec
    from stages.model_spec import ModelSpec
    from stages.training.model import build_model

    root = tmp_path_factory.mktemp("instruct")
    ws = root / "ws"
    (ws / "specs/parallel").mkdir(parents=True)
    (ws / "specs/parallel/two.toml").write_text('nproc_per_node = 2\nbackend = "gloo"\nmicro_batch_size = 1\nasync_checkpoint = false\n')
    tok = make_tokenizer(root / "tok")
    spec = ModelSpec.model_validate({
        "tokenizer": "tokenizer:tiny", "parallel": "parallel:two", "architecture": ARCH,
        "training": {"global_batch_tokens": 1024, "steps": 2, "lr": 1e-3},
        "instruct": {"data": "chat:local", "steps": 6, "lr": 5e-3, "warmup_steps": 1, "batch_size": 4, "max_len": 128,
                     "checkpoint_every": 3, "system_prompt": "You are Genesis."},
    })
    special = {"bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id}
    model = build_model(spec.architecture, len(tok), 0, **special)
    pretrain = root / "pretrain"
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(pretrain / "checkpoint"), no_dist=True)
    dcp_to_hf(pretrain / "checkpoint", spec.architecture, len(tok), special, root / "tok", root / "export")
    # the chat node's output, made by the chat stage's own code from a local JSONL file
    chat_spec = ChatSpec.model_validate({"sources": [{"name": "local", "type": "jsonl", "path": "chat.jsonl"}],
                                         "validation": {"fraction": 0.0, "min_conversations": 2}})
    write_jsonl(ws / "chat.jsonl", DIALOGUES)
    train, val, _ = build(chat_spec, ws, "chat:local")
    chat = root / "chat"
    write_jsonl(chat / "train.jsonl", [r["messages"] for r in train])
    write_jsonl(chat / "validation.jsonl", [r["messages"] for r in val])
    return {"root": root, "ws": ws, "spec": spec, "pretrain": pretrain, "export": root / "export", "chat": chat,
            "n_train": len(train), "n_val": len(val)}


def test_instruct_trains_resumes_and_exports(setup) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.export_instruct import export_instruct
    from stages.instruct import instruct

    s, root, ws = setup["spec"], setup["root"], setup["ws"]
    inputs = {"pretrain": setup["pretrain"], "base": setup["export"], "chat": setup["chat"]}
    run_dir = root / "runs/instruct"
    ctx = context(ws, s, "instruct", root / "out", inputs, run_dir)
    instruct(ctx)
    out = root / "out"
    assert (out / "checkpoint/.metadata").is_file() and (out / "hf/config.json").is_file()
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if m.get("kind") == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    st = ctx.recorded_stats
    assert st["world_size"] == 2 and st["rows"] == setup["n_train"] and st["validation_rows"] == setup["n_val"] == 2
    # the held-out conversations: evaluated at step 0 and at the end, and the loss fell
    assert st["final_val_loss"] < st["initial_val_loss"], st
    data_stats = json.loads((out / "data_stats.json").read_text())
    assert data_stats["dropped"] == {"too_long": 0, "no_assistant_token": 0}
    # the HF copy holds the trained weights
    a = AutoModelForCausalLM.from_pretrained(out / "hf")
    b = AutoModelForCausalLM.from_pretrained(setup["export"])
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)

    # a longer run continues from the last checkpoint of the same trajectory
    longer = s.model_copy(deep=True)
    longer.instruct.steps = 8
    ctx2 = context(ws, longer, "instruct", root / "out2", inputs, run_dir)
    instruct(ctx2)
    assert ctx2.recorded_stats["resumed_from"] == 6 and ctx2.recorded_stats["steps_run"] == 2

    # export-instruct: a release-style HF dir that generates with the chat template
    ectx = context(ws, s, "export-instruct", root / "final", {"instruct": out})
    export_instruct(ectx)
    final = root / "final"
    assert (final / "model.safetensors").is_file() and (final / "generation_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
