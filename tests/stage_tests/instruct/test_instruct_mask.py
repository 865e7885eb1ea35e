"""The instruct stage's tokenized labels: the loss covers the assistant turns only (their text and
end-of-turn marker), with an optional system prompt that is never trained on; conversations over
``max_len`` are dropped or cut as ``too_long`` says; the trainer's batch shifts the labels."""

from __future__ import annotations

from pathlib import Path

CONV = [{"role": "user", "content": "Is 7 odd?"}, {"role": "assistant", "content": "Yes, 7 is odd."},
        {"role": "user", "content": "And 8?"}, {"role": "assistant", "content": "8 is even."}]


def _trained(tok, row) -> tuple[str, str]:
    ids, labels = row["input_ids"], row["labels"]
    on = "".join(tok.decode([t]) for t, l in zip(ids, labels) if l != -100)
    off = "".join(tok.decode([t]) for t, l in zip(ids, labels) if l == -100)
    return on, off


def test_labels_are_the_assistant_tokens_only(tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    from stages.instruct import encode_rows

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    rows, dropped = encode_rows(tok, [{"messages": CONV}], 512, "drop", system_prompt="You are Genesis.")
    assert dropped == {"too_long": 0, "no_assistant_token": 0} and len(rows) == 1
    on, off = _trained(tok, rows[0])
    assert on == "Yes, 7 is odd.<|end|>8 is even.<|end|>"
    assert off == "<|bos|><|system|>You are Genesis.<|end|><|user|>Is 7 odd?<|end|><|assistant|><|user|>And 8?<|end|><|assistant|>"
    # labels equal the ids where trained (the trainer shifts them, see below)
    assert all(l in (-100, t) for t, l in zip(rows[0]["input_ids"], rows[0]["labels"]))

    # a conversation that has its own system turn keeps it; the spec's system prompt is not added twice
    own = [{"role": "system", "content": "Be brief."}] + CONV
    rows2, _ = encode_rows(tok, [{"messages": own}], 512, "drop", system_prompt="You are Genesis.")
    assert "You are Genesis." not in tok.decode(rows2[0]["input_ids"])


def test_too_long_is_dropped_or_cut(tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    from stages.instruct import encode_rows

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    full, _ = encode_rows(tok, [{"messages": CONV}], 512, "drop")
    n = len(full[0]["input_ids"])
    rows, dropped = encode_rows(tok, [{"messages": CONV}], n - 3, "drop")
    assert rows == [] and dropped["too_long"] == 1
    cut, dropped = encode_rows(tok, [{"messages": CONV}], n - 3, "truncate")
    assert dropped["too_long"] == 0 and cut[0]["input_ids"] == full[0]["input_ids"][: n - 3]
    assert _trained(tok, cut[0])[0].startswith("Yes, 7 is odd.<|end|>")
    # cut before the first answer: nothing left to learn from, so it is dropped
    first = next(i for i, l in enumerate(full[0]["labels"]) if l != -100)
    none, dropped = encode_rows(tok, [{"messages": CONV}], first, "truncate")
    assert none == [] and dropped["no_assistant_token"] == 1


def test_instruct_task_batches_shift_labels_and_pad_validation(tiny_lm: Path, tmp_path: Path) -> None:
    import json

    import torch
    from transformers import AutoTokenizer

    from stages.cai_lib.train_tasks import InstructTask
    from stages.instruct import encode_rows
    from stages.model_spec import Architecture, Training
    from stages.parallel_spec import ParallelSpec
    from stages.training.config import TrainJob

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    rows, _ = encode_rows(tok, [{"messages": CONV}] * 4, 512, "drop")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    job = TrainJob(architecture=Architecture(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, context_length=256),
                   training=Training(global_batch_tokens=1024, steps=2, lr=1e-3), parallel=ParallelSpec(micro_batch_size=2),
                   data_dir=str(tmp_path), run_dir=str(tmp_path / "run"), vocab_size=len(tok),
                   special_ids={"pad_id": tok.pad_token_id}, task="stages.cai_lib.train_tasks:InstructTask",
                   task_options={"batch_size": 4})

    class D:  # rank 1 of 2
        rank, world = 1, 2

    task = InstructTask(job, D())
    b = task.train_micro_batches(0)[0]
    ids, labels = b["input_ids"][0], b["labels"][0]
    assert torch.equal(labels[:-1][labels[:-1] != -100], ids[1:][labels[:-1] != -100])  # labels[t] = ids[t+1]
    # 3 validation rows over 2 ranks × micro 2: rank 1 gets row 2 and one all-ignored pad row
    ev = task.eval_micro_batches()
    assert len(ev) == 1 and ev[0]["input_ids"].shape[0] == 2
    assert (ev[0]["labels"][1] == -100).all() and (ev[0]["labels"][0] != -100).any()
