"""The SFT loss mask covers exactly the assistant tokens (text + end-of-turn marker), checked by
hand on a two-turn conversation, and the SFT batch shifts labels the way the trainer expects."""

from __future__ import annotations

from pathlib import Path

MSGS = [
    {"role": "system", "content": "Be nice."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello friend"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you"},
]


def _pieces(tok, ids, mask):
    return [(tok.decode([t]), m) for t, m in zip(ids, mask)]


def test_mask_is_exactly_the_assistant_turns(tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    from stages.cai_lib.sft_data import IGNORE, encode_chat

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    enc = encode_chat(tok, MSGS, 512)
    pieces = _pieces(tok, enc["input_ids"], enc["loss_mask"])
    trained = "".join(p for p, m in pieces if m)
    untrained = "".join(p for p, m in pieces if not m)
    # by hand: the template renders <|bos|><|system|>Be nice.<|end|><|user|>Hi there<|end|><|assistant|>Hello friend<|end|>...
    assert trained == "Hello friend<|end|>See you<|end|>"
    assert untrained == "<|bos|><|system|>Be nice.<|end|><|user|>Hi there<|end|><|assistant|><|user|>Bye<|end|><|assistant|>"
    # the generation prompt <|assistant|> itself is not trained on; the end marker is (so the model learns to stop)
    first = next(i for i, (p, m) in enumerate(pieces) if m)
    assert pieces[first - 1] == ("<|assistant|>", 0)
    assert enc["labels"] == [t if m else IGNORE for t, m in zip(enc["input_ids"], enc["loss_mask"])]

    last_only = encode_chat(tok, MSGS, 512, last_only=True)
    assert "".join(p for p, m in _pieces(tok, last_only["input_ids"], last_only["loss_mask"]) if m) == "See you<|end|>"

    # truncation keeps the prefix; a conversation whose assistant text is cut off entirely is dropped
    n_prefix = enc["loss_mask"].index(1)
    assert encode_chat(tok, MSGS, n_prefix) is None
    short = encode_chat(tok, MSGS, n_prefix + 2)
    assert sum(short["loss_mask"]) == 2


def test_sft_batch_shifts_labels_for_the_trainer_loss(tiny_lm: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.cai_lib.sft_data import encode_chat, pad_batch, sft_loss
    from stages.cai_lib.train_tasks import SftTask
    from stages.training.tasks import causal_lm_loss

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    rows = [encode_chat(tok, MSGS, 512), encode_chat(tok, MSGS[:3], 512)]
    task = SftTask.__new__(SftTask)  # collate needs only the pad id
    task.pad_id = tok.pad_token_id
    batch = task.collate(rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        loss_sum, n = causal_lm_loss(model, batch)
        ref = sft_loss(model(input_ids=pad_batch(rows, tok.pad_token_id)["input_ids"]).logits,
                       pad_batch(rows, tok.pad_token_id)["labels"])
    assert int(n) == sum(sum(r["loss_mask"]) for r in rows)
    assert torch.allclose(loss_sum / n, ref, atol=1e-5)
