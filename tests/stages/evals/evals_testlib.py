"""Helpers for the eval / serving / report tests: tiny real HF models built from scratch.

* :func:`make_tiny_lm` — a byte-level BPE trained with ``tokenizers`` on local text (our built-in
  eval sets and the seed manifesto) and a randomly initialised ``LlamaForCausalLM`` (~0.1M
  parameters) saved with ``save_pretrained``; the tokenizer carries a chat template.
* :func:`make_constant_lm` — a real model whose output head is all zeros, so greedy decoding always
  picks token id 0, paired with a word-level tokenizer whose id 0 is a chosen word ("yes", "no",
  "4"): a deterministic judge behind a real OpenAI-compatible server.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SHARED_EVALS = Path("/work/shared/data/evals")


def training_text() -> list[str]:
    """Local text for the tokenizer: our built-in eval items and the seed manifesto."""
    lines: list[str] = []
    for f in sorted((ROOT / "stages/evals_lib/builtin").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            lines += [v for v in row.values() if isinstance(v, str)]
            for t in ("mc1_targets", "mc2_targets"):
                if t in row:
                    lines += row[t]["choices"]
    manifesto = Path("/work/shared/seed/genesis-manifesto.txt")
    if manifesto.is_file():
        lines += manifesto.read_text().splitlines()
    return lines


def make_tiny_lm(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, vocab: int = 512,
                 context: int = 1024, init_std: float = 0.2, dtype: str = "float32") -> Path:
    """Train the tokenizer, build a random LlamaForCausalLM, save both into ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   additional_special_tokens=SPECIALS[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         initializer_range=init_std,  # peaky distributions: scores vary between choices
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                                               pad_token_id=fast.pad_token_id)
    model.save_pretrained(out)
    return out


def make_constant_lm(out: Path, word: str) -> Path:
    """A model that always answers ``word`` (greedy): zero output head, ``word`` is token id 0."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    words = [word] + [w for w in ("yes", "no", "1", "2", "3", "4", "5", "the", "a") if w != word]
    vocab = {w: i for i, w in enumerate(words + ["[UNK]", "<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|end|>"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=vocab["<|bos|>"], eos_token_id=vocab["<|eos|>"], pad_token_id=vocab["<|pad|>"])
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # all logits 0 → argmax is id 0 = ``word``
    model.save_pretrained(out)
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, name: str | None = None):
    """Our OpenAI-compatible server on a free port in a daemon thread; returns (httpd, base_url)."""
    from stages.serving.openai_server import make_server

    httpd = make_server(model_dir, "127.0.0.1", 0, model_name=name, device="cpu")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    host, port = httpd.server_address[:2]
    return httpd, f"http://{host}:{port}"


def fix_sys_path() -> None:
    """The repo root must precede tests/ on sys.path (else ``stages`` is the tests/stages namespace)."""
    for p in (str(Path(__file__).parent), str(ROOT)):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
