"""A local transformers model for evaluation: log-likelihoods exactly as lm-evaluation-harness's
``hf`` model computes them, and batched chat generation.

Log-likelihood of ``continuation`` given ``context`` (lm-eval 0.4 ``HFLM``):

1. trailing whitespace of the context moves to the front of the continuation;
2. ``whole = encode(context + continuation)``, ``ctx = encode(context)``,
   ``cont = whole[len(ctx):]`` (so the split follows the tokenizer's merges of the joined text);
   ``encode`` uses the tokenizer's default special tokens unless ``add_bos`` is set, and adds none
   when the text already starts with the BOS string;
3. the model reads ``(ctx + cont)[-(max_length + 1):][:-1]`` (left-truncated), right-padded within
   a batch, with no attention mask (causal: padding only follows the real tokens);
4. ``log_softmax`` over the full vocabulary in the logits' dtype; the sum over the continuation
   tokens is the log-likelihood, ``is_greedy`` says whether every continuation token was the argmax.

``max_length`` is the config's ``n_positions`` / ``max_position_embeddings`` / ``n_ctx``, else the
tokenizer's ``model_max_length``, else 2048 — lm-eval's ``resolve_max_length``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from stages.serving.model import load, stop_token_ids

DEFAULT_MAX_LENGTH = 2048
TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length


class LocalLM:
    """A model directory loaded for scoring and generation."""

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto", batch_size: int = 8) -> None:
        self.model_dir = Path(model_dir)
        self.model, self.tok, self.device = load(model_dir, device, dtype)
        self.batch_size = batch_size
        self.stop_ids = stop_token_ids(self.tok, self.model)
        self.truncated_prompts = 0  # set by generate_chat

    # ---- lm-eval's tokenisation
    @property
    def max_length(self) -> int:
        """The model's context length as lm-eval resolves it."""
        cfg = getattr(self.model.config, "text_config", None) or self.model.config
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            v = getattr(cfg, attr, None)
            if v is not None:
                return int(v)
        mml = getattr(self.tok, "model_max_length", None)
        if mml is not None and mml != TOKENIZER_INFINITY:
            return int(mml)
        return DEFAULT_MAX_LENGTH

    @property
    def prefix_token_id(self) -> int:
        """The conditioning token for an empty context (BOS, else EOS)."""
        return self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id

    def tok_encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """lm-eval's ``tok_encode``: default special tokens unless ``add_bos``; none if text starts with BOS."""
        kwargs: dict[str, Any] = {} if add_bos is None else {"add_special_tokens": add_bos}
        if add_bos is None and text.startswith(self.tok.decode(self.prefix_token_id)):
            kwargs["add_special_tokens"] = False
        return self.tok.encode(text, **kwargs)

    def encode_pair(self, context: str, continuation: str, add_bos: bool | None = None) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's ``_encode_pair`` (+ its empty-context rule)."""
        if context == "":
            cont = self.tok.encode(continuation, add_special_tokens=False)
            return ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation, add_bos)
        ctx = self.tok_encode(context, add_bos)
        return ctx, whole[len(ctx):]

    # ---- scoring
    def loglikelihood(self, requests: list[tuple[str, str]], add_bos: bool | None = None,
                      progress: Callable[[int, int], None] | None = None) -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) of each (context, continuation), in request order."""
        enc = [self.encode_pair(c, x, add_bos) for c, x in requests]
        for (c, x), (_, cont) in zip(requests, enc):
            if not cont:
                raise ValueError(f"continuation {x!r} of context ending {c[-40:]!r} encodes to no tokens")
            if len(cont) > self.max_length:  # lm-eval asserts the same
                raise ValueError(f"continuation {x[:40]!r}… has {len(cont)} tokens, longer than the model's context ({self.max_length})")
        # longest first, as lm-eval (its batches then hold similar lengths: same padding, same numerics)
        order = sorted(range(len(enc)), key=lambda i: (-len(enc[i][0] + enc[i][1]), tuple(enc[i][0] + enc[i][1])))
        out: list[tuple[float, bool] | None] = [None] * len(enc)
        L = self.max_length
        done = 0
        for start in range(0, len(order), self.batch_size):
            chunk = order[start: start + self.batch_size]
            inps = [(enc[i][0] + enc[i][1])[-(L + 1):][:-1] for i in chunk]
            width = max(len(x) for x in inps)
            batch = torch.zeros((len(inps), width), dtype=torch.long)  # lm-eval pads with 0 on the right
            for row, x in enumerate(inps):
                batch[row, : len(x)] = torch.tensor(x, dtype=torch.long)
            with torch.inference_mode():
                logits = self.model(batch.to(self.device)).logits
                logp = F.log_softmax(logits, dim=-1)
            for row, i in enumerate(chunk):
                cont = enc[i][1]
                inplen = len(inps[row])
                lp = logp[row, inplen - len(cont): inplen]  # positions predicting the continuation
                target = torch.tensor(cont, dtype=torch.long, device=lp.device)
                greedy = bool((lp.argmax(dim=-1) == target).all())
                out[i] = (float(lp.gather(1, target[:, None]).sum()), greedy)
            done += len(chunk)
            if progress:
                progress(done, len(order))
        return out  # type: ignore[return-value]

    # ---- generation
    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The tokenizer's chat template with the assistant turn opened."""
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(f"{self.model_dir}: the tokenizer has no chat_template; generation suites need one")
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate_chat(self, conversations: list[list[dict[str, str]]], max_new_tokens: int, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """One completion per conversation (batched, left-padded); stops at EOS / turn-end tokens.

        A prompt that leaves no room for ``max_new_tokens`` in the context is left-truncated (its
        beginning is dropped; the request itself sits at the end) and counted in
        ``self.truncated_prompts``; at most half the context is reserved for new tokens.
        """
        new_tokens = max(1, min(max_new_tokens, self.max_length // 2))
        budget = self.max_length - new_tokens
        encoded = []
        self.truncated_prompts = 0
        for conv in conversations:
            ids = self.tok(self.chat_prompt(conv), add_special_tokens=False)["input_ids"]  # the template holds BOS
            if len(ids) > budget:
                ids = ids[-budget:]
                self.truncated_prompts += 1
            encoded.append(ids)
        kw: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": new_tokens,
                              "eos_token_id": self.stop_ids, "pad_token_id": self.tok.pad_token_id}
        kw.update({"temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0
                  else {"temperature": None, "top_p": None, "top_k": None})
        torch.manual_seed(seed)
        outs: list[str] = []
        for start in range(0, len(encoded), self.batch_size):
            part = encoded[start: start + self.batch_size]
            width = max(len(x) for x in part)
            ids = torch.full((len(part), width), self.tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for row, x in enumerate(part):  # left padding: every prompt ends where generation starts
                ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
                mask[row, width - len(x):] = 1
            with torch.inference_mode():
                seq = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kw)
            for row in seq[:, width:].tolist():
                cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
                outs.append(self.tok.decode(row[:cut], skip_special_tokens=True).strip())
            if progress:
                progress(len(outs), len(encoded))
        return outs
