"""The one tiny-LM helper every test uses: small real HF models built from scratch, offline.

* :func:`make_tokenizer` — a byte-level BPE trained with ``tokenizers`` on local text (the built-in
  CAI prompts or eval items, and the shared seed manifesto), saved as a transformers fast tokenizer
  with a chat template.
* :func:`make_tiny_lm` — that tokenizer plus a randomly initialised ``LlamaForCausalLM`` saved with
  ``save_pretrained``: a real model that every code path loads with ``AutoModelForCausalLM`` /
  ``AutoTokenizer``, just small (~0.1–0.2M parameters).
* :func:`make_constant_lm` — a real model whose output head is all zeros, so greedy decoding always
  picks token id 0, paired with a word-level tokenizer whose id 0 is a chosen word ("yes", "no",
  "4"): a deterministic judge behind a real OpenAI-compatible server.

Paths are found from this file: ``ROOT`` is the repository root, ``SHARED`` the shared data beside
it (``../shared``, where CI puts it too).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def training_text(sources: tuple[str, ...] = ("cai", "seed")) -> list[str]:
    """Local text for the tokenizer: ``cai`` the built-in CAI prompts, ``evals`` the built-in eval
    items, ``seed`` the shared seed manifesto (when present; the built-ins suffice). The eval tests
    train on ``("evals", "seed")``: their tiny LM's greedy outputs depend on the vocabulary."""
    lines: list[str] = []
    if "cai" in sources:
        lines += [json.loads(ln)["prompt"] for ln in (ROOT / "stages/cai_lib/builtin_prompts.jsonl").read_text().splitlines()
                  if ln.strip()]
    if "evals" in sources:
        for f in sorted((ROOT / "stages/evals_lib/builtin").glob("*.jsonl")):
            for line in f.read_text().splitlines():
                row = json.loads(line)
                lines += [v for v in row.values() if isinstance(v, str)]
                for t in ("mc1_targets", "mc2_targets"):
                    if t in row:
                        lines += row[t]["choices"]
    manifesto = SHARED / "seed" / "genesis-manifesto.txt"
    if "seed" in sources and manifesto.is_file():
        lines += manifesto.read_text().splitlines()
    return lines


def make_tokenizer(out: Path, vocab_size: int = 384, sources: tuple[str, ...] = ("cai", "seed")):
    """Train a byte-level BPE and save it in ``out`` as a fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(sources), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   additional_special_tokens=SPECIALS[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def make_tiny_lm(out: Path, seed: int = 0, hidden: int = 32, layers: int = 2, vocab: int = 384, context: int = 512,
                 init_std: float | None = None, tie: bool = True, dtype: str = "float32",
                 sources: tuple[str, ...] = ("cai", "seed")) -> Path:
    """Train the tokenizer, build a random ``LlamaForCausalLM``, save both into ``out``.

    ``init_std`` (e.g. 0.2) makes the output distributions peaky, so log-likelihood scores differ
    between choices; ``None`` keeps transformers' default initialisation.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    fast = make_tokenizer(out, vocab, sources)
    torch.manual_seed(seed)
    extra = {"initializer_range": init_std} if init_std is not None else {}
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         tie_word_embeddings=tie, **extra)
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
