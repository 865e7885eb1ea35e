"""GGUF files for llama.cpp (and Ollama, LM Studio) from an exported HF Llama directory.

Written with the ``gguf`` package — llama.cpp's own writer (``gguf.GGUFWriter``, ``gguf.quants``) —
following what llama.cpp's ``convert_hf_to_gguf.py`` does for ``LlamaForCausalLM``:

* tensor names from ``gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, n_layers)``;
* ``q_proj`` / ``k_proj`` rows permuted from HF's rotate-half RoPE layout to llama.cpp's interleaved
  one (transformers' GGUF loader undoes exactly this permutation);
* 1-D tensors (norms) stay F32; 2-D tensors are F16, or Q8_0 in the q8_0 file. Q8_0 packs each row
  in blocks of 32 values, so a tensor whose rows are not a multiple of 32 cannot be Q8_0: it falls
  back to F16, as llama.cpp's converter does (the written types are returned per tensor);
* the tokenizer as a byte-level BPE (``tokenizer.ggml.model = "gpt2"``, pre-tokenizer ``gpt-2``):
  tokens, merges, token types (special tokens are CONTROL), bos/eos/pad ids, ``add_bos_token``,
  and the chat template, so llama.cpp runs the file alone.

What GGUF's ``llama`` architecture cannot express is refused up front by :func:`check_gguf_support`
with one line naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genesis_build.errors import GenesisError

QTYPES = ("f16", "q8_0")
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"  # ByteLevel(use_regex)


class GGUFUnsupported(GenesisError):
    """The model uses a feature the GGUF ``llama`` architecture (or its tokenizer) cannot express."""


def _config_problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, why) for every config.json value llama.cpp's ``llama`` architecture cannot express."""
    bad: list[tuple[str, str]] = []
    if config.get("model_type") != "llama":
        bad.append(("model_type", f"{config.get('model_type')!r}: only 'llama' is written as GGUF here"))
    if config.get("hidden_act", "silu") != "silu":
        bad.append(("hidden_act", f"{config['hidden_act']!r}: GGUF llama computes SwiGLU (silu) only"))
    for f in ("attention_bias", "mlp_bias"):
        if config.get(f):
            bad.append((f, "true: transformers' GGUF loader has no llama bias tensors"))
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if (rope.get("rope_type") or rope.get("type") or "default") != "default":
        bad.append(("rope_parameters.rope_type", f"{rope.get('rope_type') or rope.get('type')!r}: only plain RoPE is written"))
    heads, hidden = config.get("num_attention_heads") or 1, config.get("hidden_size") or 0
    if config.get("head_dim") not in (None, hidden // heads):
        bad.append(("head_dim", f"{config['head_dim']} != hidden_size/num_attention_heads = {hidden // heads}: "
                                "transformers reads head_dim from GGUF's rope dimension"))
    if (config.get("pretraining_tp") or 1) != 1:
        bad.append(("pretraining_tp", f"{config['pretraining_tp']}: not expressible"))
    return bad


def _tokenizer_problems(tok: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, why) for a tokenizer.json llama.cpp's ``gpt2`` BPE with the ``gpt-2`` pre-tokenizer cannot run."""
    bad: list[tuple[str, str]] = []
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        bad.append(("model.type", f"{model.get('type')!r}: only byte-level BPE is written"))
    if tok.get("normalizer"):
        bad.append(("normalizer", f"{tok['normalizer'].get('type')}: GGUF's gpt2 tokenizer has no normalizer"))
    pre = tok.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
        kinds = [p.get("type") for p in pre.get("pretokenizers", [])] if pre.get("type") == "Sequence" else [pre.get("type")]
        hint = " (tokenizer spec field split_digits = true)" if "Digits" in kinds else ""
        bad.append(("pre_tokenizer", f"{'+'.join(str(k) for k in kinds)}{hint}: llama.cpp's gpt-2 pre-tokenizer is exactly "
                                     "ByteLevel with the GPT-2 regex and no prefix space"))
    return bad


def check_gguf_support(model_dir: Path) -> None:
    """Raise :class:`GGUFUnsupported` (one line, naming the file and field) if GGUF cannot hold the model."""
    cfg_path, tok_path = model_dir / "config.json", model_dir / "tokenizer.json"
    for path, problems in ((cfg_path, _config_problems(json.loads(cfg_path.read_text()))),
                           (tok_path, _tokenizer_problems(json.loads(tok_path.read_text())))):
        if problems:
            field, why = problems[0]
            raise GGUFUnsupported(f"GGUF cannot express {path.name} field {field} = {why}; "
                                  f"set [release] gguf = [] in the model spec to release without GGUF files")


def _permute(w: Any, n_head: int) -> Any:
    """HF rotate-half → llama.cpp interleaved rows (convert_hf_to_gguf.py ``LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _vocab(model_dir: Path) -> dict[str, Any]:
    """Tokens (byte-level spelling, id order), token types, merges, special ids, chat template."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    data = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = tok.get_vocab()
    n = max(vocab.values()) + 1
    by_id = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(n):
        if i not in by_id:  # a hole in the id space: llama.cpp's converter writes a padding token
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        a = added.get(i)
        types.append(gguf.TokenType.NORMAL if a is None else
                     gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    post = json.dumps(data.get("post_processor") or {})
    return {"tokens": tokens, "types": types, "merges": merges, "bos": tok.bos_token_id, "eos": tok.eos_token_id,
            "pad": tok.pad_token_id, "unk": tok.unk_token_id, "chat_template": tok.chat_template,
            "add_bos": tok.bos_token is not None and f'"{tok.bos_token}"' in post}  # BOS only if the post-processor adds it


def write_gguf(model_dir: Path, out: Path, qtype: str, name: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out`` (a GGUF file of the HF model in ``model_dir``, weights ``qtype`` = f16 | q8_0).

    Returns ``{"tensors": n, "types": {tensor: type}, "fallback_f16": [tensors not Q8_0-divisible]}``.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    if qtype not in QTYPES:
        raise GenesisError(f"GGUF type {qtype!r} is not one of {', '.join(QTYPES)}")
    check_gguf_support(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    n_layers, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    rope = cfg.get("rope_parameters") or {}
    weights: dict[str, Any] = {}
    files = sorted(model_dir.glob("*.safetensors"))
    for f in files:
        weights.update(load_file(str(f)))
    if not weights:
        raise GenesisError(f"{model_dir}: no *.safetensors weights to convert to GGUF")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    target = gguf.GGMLQuantizationType.Q8_0 if qtype == "q8_0" else gguf.GGMLQuantizationType.F16
    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for k, v in sorted((metadata or {}).items()):
        {"license": w.add_license, "description": w.add_description}.get(k, lambda _v: None)(v)
        if k == "tags":
            w.add_tags(v)
        elif k == "languages":
            w.add_languages(v)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(cfg["hidden_size"] // n_head)
    w.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    v = _vocab(model_dir)
    if len(v["tokens"]) != cfg["vocab_size"]:
        raise GGUFUnsupported(f"GGUF cannot express config.json field vocab_size = {cfg['vocab_size']}: the tokenizer has "
                              f"{len(v['tokens'])} tokens and llama.cpp needs one token per embedding row")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"])
    w.add_token_merges(v["merges"])
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id),
                     ("unk", w.add_unk_token_id)):
        if v[key] is not None:
            add(int(v[key]))
    w.add_add_bos_token(bool(v["add_bos"]))
    w.add_add_eos_token(False)
    if v["chat_template"]:
        w.add_chat_template(v["chat_template"])
    types: dict[str, str] = {}
    fallback: list[str] = []
    for hf_name in sorted(weights, key=_tensor_order):
        data = weights[hf_name].astype(np.float32)
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope.freq_base
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise GGUFUnsupported(f"GGUF cannot express tensor {hf_name} of {model_dir.name}: no llama GGUF name for it")
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        if data.ndim <= 1:
            qt = gguf.GGMLQuantizationType.F32
        else:
            qt = target
            if qt == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qt][0]:
                qt = gguf.GGMLQuantizationType.F16  # rows not a whole number of 32-blocks: llama.cpp falls back too
                fallback.append(new)
        w.add_tensor(new, gguf.quants.quantize(data, qt), raw_dtype=qt)
        types[new] = qt.name
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensors": len(types), "types": types, "fallback_f16": fallback}


def _tensor_order(name: str) -> tuple[int, int, str]:
    """Embedding, then layers in numeric order, then the final norm and head (llama.cpp's order)."""
    import re

    m = re.search(r"layers\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if "embed_tokens" in name else 2, 0, name)
