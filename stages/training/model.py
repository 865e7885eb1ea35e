"""Build the HF ``LlamaForCausalLM`` a model spec describes, and count its parameters and FLOPs."""

from __future__ import annotations

from typing import Any

import torch

from .planner import flops_per_token  # noqa: F401 — one formula, shared with the torch-free planner

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def llama_config(arch: Any, vocab_size: int, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None) -> Any:
    """A ``transformers.LlamaConfig`` for an ``Architecture`` section and the tokenizer's vocab."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.kv_heads,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.context_length,
        rope_parameters={"rope_type": "default", "rope_theta": float(arch.rope_theta)},
        rms_norm_eps=arch.rms_norm_eps,
        initializer_range=arch.init_std,
        tie_word_embeddings=arch.tie_embeddings,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=False,
        dtype=arch.dtype,
    )


def build_model(arch: Any, vocab_size: int, seed: int, **ids: Any) -> torch.nn.Module:
    """Initialise the model in fp32 on the CPU from ``seed`` (identical on every rank)."""
    from transformers import LlamaForCausalLM

    cfg = llama_config(arch, vocab_size, **ids)
    torch.manual_seed(seed)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    return model


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside the input embedding) — tied weights counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings().weight
    return total, total - emb.numel()
