"""Chat data → token ids with a loss mask on assistant tokens only (SFT), and DPO pair batches.

The mask is found in character space: for every assistant turn the chat template is rendered up
to the generation prompt and up to the end of that turn; the characters between the two are the
assistant's (its text and the template's end-of-turn marker, so the model learns to stop). The
full conversation is tokenized once with offsets, and a token is trained on when its characters
lie inside an assistant span. This works with any prefix-stable template and never splits the
BPE differently from how the model sees the full text.
"""

from __future__ import annotations

from typing import Any

from genesis_build.errors import GenesisError

IGNORE = -100


def _render(tok: Any, messages: list[dict[str, str]], gen_prompt: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)


def assistant_spans(tok: Any, messages: list[dict[str, str]], last_only: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """(full text, [(start, end) character spans of assistant turns])."""
    if not tok.chat_template:
        raise GenesisError("the tokenizer has no chat_template; SFT/DPO need one (tokenizer_config.json)")
    full = _render(tok, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or (last_only and i != len(messages) - 1):
            continue
        before = _render(tok, messages[:i], True)
        upto = _render(tok, messages[: i + 1], False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise GenesisError("the chat template is not prefix-stable (rendering a conversation's first turns is not a "
                               "prefix of rendering all of it); cannot locate assistant tokens")
        spans.append((len(before), len(upto)))
    return full, spans


def encode_chat(tok: Any, messages: list[dict[str, str]], max_len: int, last_only: bool = False) -> dict[str, list[int]] | None:
    """``{"input_ids", "labels", "loss_mask"}`` for one conversation (labels are IGNORE outside
    assistant tokens), truncated to ``max_len``; None when no assistant token survives."""
    text, spans = assistant_spans(tok, messages, last_only)
    bos = tok.bos_token
    enc = tok(text, add_special_tokens=not (bos and text.startswith(bos)), return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][:max_len], enc["offset_mapping"][:max_len]
    mask = [int(any(s <= a and b <= e and b > a for s, e in spans)) for a, b in offsets]
    if not any(mask):
        return None
    return {"input_ids": ids, "labels": [t if m else IGNORE for t, m in zip(ids, mask)], "loss_mask": mask}


def encode_pair(tok: Any, prompt: list[dict[str, str]], chosen: str, rejected: str, max_len: int) -> dict[str, Any] | None:
    """Chosen and rejected conversations with completion masks on the final assistant turn."""
    a = encode_chat(tok, prompt + [{"role": "assistant", "content": chosen}], max_len, last_only=True)
    b = encode_chat(tok, prompt + [{"role": "assistant", "content": rejected}], max_len, last_only=True)
    if a is None or b is None:
        return None
    return {"chosen": a, "rejected": b}


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad encoded rows into tensors: input_ids, attention_mask, labels, loss_mask."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    out = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
        "labels": torch.full((len(rows), width), IGNORE, dtype=torch.long),
        "loss_mask": torch.zeros((len(rows), width), dtype=torch.long),
    }
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        out["attention_mask"][i, :n] = 1
        out["labels"][i, :n] = torch.tensor(r["labels"])
        out["loss_mask"][i, :n] = torch.tensor(r["loss_mask"])
    return out


def pair_batch(pairs: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """``[chosen; rejected]`` stacked on the batch dim, with ``completion_mask`` (the layout of
    ``dpo_loss.concatenated_logps`` and of TRL)."""
    b = pad_batch([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], pad_id)
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "completion_mask": b["loss_mask"]}


def sft_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token cross-entropy over assistant tokens (labels IGNORE elsewhere)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
