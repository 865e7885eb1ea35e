"""A tiny real HF model (random ``LlamaForCausalLM`` + a byte-level BPE trained here) and our
OpenAI-compatible server on a free 127.0.0.1 port, for the server reliability cases and the load test."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEXT = ["the quick brown fox jumps over the lazy dog", "a content-addressed build system for language models",
        "every request must complete; none may starve", "pack my box with five dozen liquor jugs"] * 20


def make_lm(out: Path, context: int = 256, seed: int = 0) -> Path:
    """Train a 300-token BPE and save a random 2-layer Llama of context ``context`` into ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   additional_special_tokens=SPECIALS[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(config)
    # never stop early at EOS: every generation runs to max_tokens (request sizes stay as designed)
    model.generation_config = GenerationConfig(bos_token_id=fast.bos_token_id, pad_token_id=fast.pad_token_id)
    model.save_pretrained(out)
    return out


def start(model_dir: Path, name: str = "tiny", **kw: Any):
    """Our server on a free loopback port in a daemon thread; returns (httpd, base url)."""
    from stages.serving.openai_server import make_server

    httpd = make_server(model_dir, "127.0.0.1", 0, model_name=name, device="cpu", **kw)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    host, port = httpd.server_address[:2]
    return httpd, f"http://{host}:{port}"


def call(base: str, path: str, body: dict | None = None, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
    """(status, JSON body) of one request; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
