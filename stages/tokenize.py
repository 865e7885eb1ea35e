"""Tokenize: corpus + tokenizer → memmap token shards, at node ``tokenize:<tokenizer name>``.

    genesis-build tokenize:tiny

Settings live in the tokenizer spec's ``[tokenize]`` table (dtype, mean documents per shard group,
optionally another corpus than the one the tokenizer was trained on). Output (``meta.json``):

    {"dtype": "uint16", "vocab_size": 4096, "eos_id": 1, "bos_id": 0, "pad_id": 2,
     "splits": {"train": {"tokens": N, "documents": D,
                          "shards": [{"file": "train/00000.bin", "tokens": n, "index": "train/00000.idx.npy"}]},
                "validation": {…}}}

Shards are flat little-endian ids with EOS after every document; ``.idx.npy`` holds each document's
int64 start offset in its shard; ``tokenizer/`` is a copy of the tokenizer. Shards are
content-defined groups of documents cached across builds (``data_lib/encode.py``): appending data
re-encodes only the groups that changed, and the ``groups_encoded``/``groups_reused`` statistics say so.
"""

from __future__ import annotations


from genesis_build.stage import Context, SpecView, ref_name, stage
from stages.tokenizer import TokenizerSpec, check_tokenizer


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    spec: TokenizerSpec = view.spec
    corpus = spec.tokenize.corpus or spec.corpus
    return {"tokenizer": f"tokenizer:{view.name}", "corpus": f"corpus:{ref_name(corpus)}"}


def _check(view: SpecView) -> None:
    check_tokenizer(view.spec, view.resolve)


def _describe(view: SpecView) -> list[tuple[str, str]]:
    """``--dry-run`` rows: what is tokenized and how it is stored."""
    spec: TokenizerSpec = view.spec
    t = spec.tokenize
    dtype = t.dtype if t.dtype != "auto" else ("uint16" if spec.vocab_size <= 1 << 16 else "uint32") + " (auto)"
    return [("corpus", t.corpus or spec.corpus), ("ids", f"{dtype}, vocab {spec.vocab_size:,}, EOS after each document"),
            ("shards", f"content-defined groups of ~{t.group_documents:,} documents, cached across builds")]


# batch_documents and the corpus reference are not in the key: one is speed only, the other is an input.
@stage("tokenize", version=1, kind="tokenizer", fields=("tokenize.dtype", "tokenize.group_documents"),
       inputs=_inputs, check=_check, describe=_describe, heavy=True)
def tokenize(ctx: Context) -> None:
    """Encode the corpus splits into memmap token shards (re-encoding only changed groups)."""
    import os

    from stages.data_lib.encode import tokenize_corpus
    from stages.data_lib.shards import resolve_workers

    # `--workers N` / GENESIS_DATA_WORKERS / all cores: N > 1 forked processes encode whole groups on
    # one core each; 1 encodes here, on one rayon thread unless RAYON_NUM_THREADS says otherwise (it
    # must be set before tokenizers first encodes: the pool size is fixed then). The shard bytes are
    # the same for any count (tests/stage_tests/data/test_data_parallel.py).
    workers = resolve_workers(None, ctx.options.get("workers"))
    if workers == 1:
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    stats = tokenize_corpus(ctx.spec.tokenize, ctx.inputs["tokenizer"].path, ctx.inputs["corpus"].path, ctx.out,
                            ctx.samples_dir("tokenize-groups"), ctx.node, ctx.progress, workers=workers)
    ctx.stats(**stats, workers=workers)
