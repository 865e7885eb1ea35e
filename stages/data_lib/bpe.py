"""Byte-level BPE training with ``tokenizers`` and saving through ``transformers``.

Special tokens take ids 0…n-1 in the order ``<|bos|> <|eos|> <|pad|> <|system|> <|user|>
<|assistant|> <|end|>`` + extras, then the 256 byte symbols, then merges. Encoding adds no special
tokens (pretraining appends EOS per document itself; the chat template writes its own markers).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from genesis_build.errors import GenesisError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_backend(spec: Any) -> Any:
    """An untrained ``tokenizers.Tokenizer`` with the byte-level pipeline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if spec.split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets cover each token's full characters (SFT masks work in character space)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def sample_mask(col: Any, fraction: float) -> Any:
    """Which documents of a text column are in a ``fraction`` sample (decided by each text's hash)."""
    import numpy as np

    from .encode import doc_digests

    if fraction >= 1:
        return np.ones(len(col), dtype=bool)
    draws = np.array([int.from_bytes(d[8:16], "little") for d in doc_digests(col)], dtype=np.float64)
    return draws < fraction * 2.0**64


def training_texts(train_dir: Path, spec: Any, progress: Callable[..., None]) -> tuple[Iterator[list[str]], dict[str, int]]:
    """Batches of train-split texts in corpus order (the ``training.sample_fraction`` sample)."""
    import datasets
    import pyarrow as pa

    ds = datasets.load_from_disk(str(train_dir))
    col = ds.data.column("text")  # memory-mapped arrow; no copy until a batch is materialized
    total = len(ds)
    fed = {"documents": 0, "chars": 0}
    batch = spec.training.batch_documents

    def gen() -> Iterator[list[str]]:
        t0 = last = time.time()
        for start in range(0, total, batch):
            part = col.slice(start, min(batch, total - start))
            if spec.training.sample_fraction < 1:
                part = part.filter(pa.array(sample_mask(part, spec.training.sample_fraction)))
            texts = part.to_pylist()
            if not texts:
                continue
            fed["documents"] += len(texts)
            fed["chars"] += sum(map(len, texts))
            yield texts
            now = time.time()
            if now - last > 0.5:
                last = now
                progress(start + batch, total, desc="BPE: count", chars_per_s=round(fed["chars"] / (now - t0)))

    return gen(), fed


def train_tokenizer(spec: Any, corpus_dir: Path, out: Path, node: str, progress: Callable[..., None]) -> dict[str, Any]:
    """Train on ``corpus_dir/train`` and save an AutoTokenizer-loadable directory into ``out``."""
    from tokenizers import pre_tokenizers, trainers

    t0 = time.time()
    tok = build_backend(spec)
    specials = spec.special_tokens()
    kwargs: dict[str, Any] = {}
    if spec.max_token_length is not None:
        kwargs["max_token_length"] = spec.max_token_length
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, **kwargs)
    texts, fed = training_texts(corpus_dir / "train", spec, progress)
    tok.train_from_iterator(texts, trainer=trainer)
    if fed["documents"] == 0:
        raise GenesisError(f"{node}: the corpus train split is empty; nothing to train the tokenizer on")
    for i, t in enumerate(specials):  # ids 0…n-1, relied on by nobody but worth guaranteeing
        if tok.token_to_id(t) != i:
            raise GenesisError(f"{node}: special token {t} got id {tok.token_to_id(t)}, expected {i}")
    train_s = time.time() - t0
    progress(1, 1, desc="BPE: save")
    save_hf(tok, spec, out)
    sample = _compression(tok, corpus_dir / "validation")
    return {
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "vocab_size_requested": spec.vocab_size,
        "special_tokens": len(specials),
        "training_documents": fed["documents"],
        "training_chars": fed["chars"],
        "train_seconds": round(train_s, 3),
        **sample,
    }


def save_hf(tok: Any, spec: Any, out: Path) -> None:
    """Save via ``transformers`` so ``AutoTokenizer.from_pretrained(out)`` gives the same tokenizer."""
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    from .special_tokens import BOS, CHAT_TOKENS, EOS, PAD

    hf_logging.set_verbosity_error()
    extra = [*CHAT_TOKENS, *spec.extra_special_tokens]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                 extra_special_tokens=extra, chat_template=spec.chat_template,
                                 model_max_length=spec.model_max_length, clean_up_tokenization_spaces=False)
    # save_jinja_files=False: the chat template lives in tokenizer_config.json (the agreed layout)
    hf.save_pretrained(str(out), save_jinja_files=False)
    # transformers 5 no longer writes special_tokens_map.json; older loaders and tools still read it.
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": extra}, indent=2) + "\n")


def _compression(tok: Any, val_dir: Path, limit: int = 200) -> dict[str, Any]:
    """Characters per token on (up to ``limit``) validation documents: the tokenizer's efficiency."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(val_dir))
    except (FileNotFoundError, ValueError):
        return {}
    texts = ds.data.column("text").slice(0, limit).to_pylist()
    if not texts:
        return {}
    n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    return {"validation_chars_per_token": round(sum(map(len, texts)) / max(1, n), 4)}
