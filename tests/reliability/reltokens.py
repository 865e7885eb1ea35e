"""Synthetic ``tokenize`` output for the reliability tests of the real ML stages.

Registers the kind ``tokenizer`` and the stage ``tokenize`` (overriding the repo's, in a test
workspace only) so that ``pretrain:<model>`` and the CAI stages can be driven through the CLI
without building a corpus and training a BPE first. Output follows the agreed tokenize format:
``meta.json`` plus flat little-endian token shards and int64 ``.idx.npy`` document offsets (learnable
arithmetic runs, deterministic from ``seed``).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from genesis_build.stage import Context, register_kind, stage


class SynthTokenizer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vocab_size: int = Field(257, ge=16, le=65535)
    train_tokens: int = Field(40_000, ge=1_000, le=10_000_000)
    seed: int = Field(0, ge=0)


register_kind("tokenizer", SynthTokenizer, default_stage="tokenize")


@stage("tokenize", version=1, kind="tokenizer", fields=("vocab_size", "train_tokens", "seed"))
def tokenize(ctx: Context) -> None:
    """Write synthetic token shards in the agreed tokenize format."""
    import numpy as np

    spec = ctx.spec
    rng = np.random.default_rng(spec.seed)
    eos = spec.vocab_size - 1
    meta: dict = {"dtype": "uint16", "vocab_size": spec.vocab_size, "eos_id": eos, "bos_id": eos, "pad_id": eos,
                  "splits": {}}
    for split, n_tokens in (("train", spec.train_tokens), ("validation", spec.train_tokens // 10)):
        docs, total = [], 0
        while total < n_tokens:
            n = int(rng.integers(8, 60))
            start, step = int(rng.integers(0, eos)), int(rng.integers(1, 4))
            docs.append(np.append((start + step * np.arange(n)) % eos, eos).astype("uint16"))
            total += n + 1
        (ctx.out / split).mkdir()
        arr = np.concatenate(docs)
        arr.tofile(ctx.out / split / "00000.bin")
        starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]]).astype(np.int64)
        np.save(ctx.out / split / "00000.idx.npy", starts)
        meta["splits"][split] = {"tokens": int(len(arr)), "documents": len(docs), "shards": [
            {"file": f"{split}/00000.bin", "tokens": int(len(arr)), "index": f"{split}/00000.idx.npy"}]}
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
