"""Consolidate a sharded DCP checkpoint into a Hugging Face model directory, offline.

No process group is needed: DCP reads every shard into plain tensors of a freshly built model
(``dcp.load`` with ``no_dist=True``). Only tensor entries of the ``model`` state are read — DCP reads
tensor bytes with ``weights_only=True`` — so no pickled object from the checkpoint is loaded here.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import check_complete

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt")


def load_hf_config(config_path: Path) -> Any:
    """The ``LlamaConfig`` a pretrain output recorded."""
    from transformers import LlamaConfig

    return LlamaConfig.from_dict(json.loads(config_path.read_text()))


def load_plain_model(checkpoint: Path, config: Any) -> torch.nn.Module:
    """An fp32 ``LlamaForCausalLM`` holding the checkpoint's weights (strict: every weight must be there)."""
    import torch.distributed.checkpoint as dcp
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    state = {"model": model.state_dict()}
    check_complete(checkpoint, state)
    with warnings.catch_warnings():  # "no process group: loading in a single process" is the point here
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state, checkpoint_id=str(checkpoint), no_dist=True)
    missing, unexpected = model.load_state_dict(state["model"], strict=True)
    assert not missing and not unexpected
    model.eval()
    return model


def export_hf(checkpoint: Path, config: Any, out: Path, tokenizer_dir: Path | None = None,
              dtype: str | None = None) -> dict[str, Any]:
    """Write ``model.safetensors`` (or shards), ``config.json``, ``generation_config.json`` and the
    tokenizer files into ``out``; returns a few facts for stats."""
    from transformers import GenerationConfig

    model = load_plain_model(checkpoint, config)
    target = dtype or (str(config.dtype).replace("torch.", "") if getattr(config, "dtype", None) else "float32")
    model = model.to(getattr(torch, target))
    model.config.use_cache = True
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), max_shard_size="5GB")
    gen = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                           pad_token_id=config.pad_token_id, max_new_tokens=256, do_sample=True, temperature=0.8, top_p=0.95)
    gen.save_pretrained(str(out))
    copied = []
    if tokenizer_dir is not None and tokenizer_dir.is_dir():
        for f in sorted(tokenizer_dir.iterdir()):
            if f.is_file() and (f.name in TOKENIZER_FILES or f.suffix in (".json", ".jinja", ".txt", ".model")) \
                    and f.name not in ("config.json", "generation_config.json"):
                shutil.copy2(f, out / f.name)
                copied.append(f.name)
    n_params = sum(p.numel() for p in model.parameters())
    return {"params": n_params, "dtype": target, "tokenizer_files": copied,
            "bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file())}
