"""Tokenize throughput: our stage's encoding path vs raw ``tokenizers`` ``encode_batch``, one run.

    python benchmarks/tokenize_throughput.py [--repeat 5] [--batch 512] [--docs-kib 4] [--tokenizer DIR]

Text: every top-level module of the running Python's standard library plus its pydoc topics
(≈5 MB, no download), cut into documents of about --docs-kib KiB. Tokenizer: a 4,096-token BPE
trained on that text with the tokenizer stage's own code (or --tokenizer DIR). Methods, on the same
documents and batches, interleaved --repeat times (best and median wall-clock tokens/s on all cores,
and median tokens per CPU-second of the whole process, which other load on the machine disturbs less):

  raw encode_batch        tokenizers.Tokenizer.encode_batch, then len(ids) per document
  raw encode_batch_fast   the same without offsets (what the stage calls)
  stage encoder           data_lib.encode.Encoder: encode one batch ahead + ids → flat uint16 + EOS + starts
  stage end-to-end        data_lib.encode.tokenize_corpus on a save_to_disk corpus with an empty group
                          cache: arrow reads, content hashing, grouping, shard + index files, meta.json

Goal: the stage paths reach ≥ 80% of raw encode_batch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stdlib_documents(doc_chars: int) -> list[str]:
    """Standard-library sources + pydoc topics, cut into documents of about ``doc_chars``."""
    import ast
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))]
    tree = ast.parse((stdlib / "pydoc_data" / "topics.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            texts += [v for _, v in sorted(ast.literal_eval(node.value).items())]
    docs = []
    for t in texts:
        docs += [t[i : i + doc_chars] for i in range(0, len(t), doc_chars)]
    return [d for d in docs if d.strip()]


def train_tokenizer(docs: list[str], out: Path) -> Path:
    """A 4,096-token tokenizer trained by the tokenizer stage's code on ``docs``."""
    import datasets

    from stages.data_lib.bpe import train_tokenizer as train
    from stages.tokenizer import TokenizerSpec

    corpus = out / "corpus"
    datasets.Dataset.from_dict({"text": docs, "source": ["b"] * len(docs), "language": ["x"] * len(docs)}).save_to_disk(
        str(corpus / "train"))
    datasets.Dataset.from_dict({"text": docs[:10], "source": ["b"] * 10, "language": ["x"] * 10}).save_to_disk(
        str(corpus / "validation"))
    tok = out / "tokenizer"
    tok.mkdir()
    train(TokenizerSpec(corpus="corpus:bench", vocab_size=4096), corpus, tok, "bench", lambda *a, **k: None)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=512, help="documents per encode_batch call")
    ap.add_argument("--docs-kib", type=float, default=4.0, help="document size in KiB of text")
    ap.add_argument("--tokenizer", type=Path, help="a tokenizer dir (default: train one on the text)")
    args = ap.parse_args()

    import datasets
    from tokenizers import Tokenizer

    from stages.data_lib.encode import Encoder, tokenize_corpus

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="tokbench-"))
    try:
        docs = stdlib_documents(int(args.docs_kib * 1024))
        t0 = time.time()
        tok_dir = args.tokenizer or train_tokenizer(docs, tmp)
        train_s = time.time() - t0
        tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        eos = tok.token_to_id("<|eos|>")
        batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
        corpus = tmp / "bench-corpus"
        datasets.Dataset.from_dict({"text": docs, "source": ["b"] * len(docs), "language": ["x"] * len(docs)}).save_to_disk(
            str(corpus / "train"))
        datasets.Dataset.from_dict({"text": [], "source": [], "language": []},
                                   features=datasets.Features({c: datasets.Value("string") for c in ("text", "source", "language")})
                                   ).save_to_disk(str(corpus / "validation"), num_shards=1)

        def raw() -> int:
            return sum(len(e.ids) for b in batches for e in tok.encode_batch(b, add_special_tokens=False))

        def raw_fast() -> int:
            return sum(len(e.ids) for b in batches for e in tok.encode_batch_fast(b, add_special_tokens=False))

        enc = Encoder(tok_dir / "tokenizer.json", "uint16", eos, args.batch)

        def stage_encoder() -> int:
            ids, starts = enc.encode(iter(batches))
            return len(ids) - len(starts)  # count content tokens like the raw paths (no EOS)

        def stage_e2e() -> int:
            out, store = tmp / "e2e-out", tmp / "e2e-store"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
            out.mkdir()
            section = SimpleNamespace(dtype="auto", group_documents=4096, batch_documents=args.batch)
            st = tokenize_corpus(section, tok_dir, corpus, out, store, "bench", lambda *a, **k: None)
            assert st["groups_encoded"] == st["groups"]
            return st["tokens"]["train"] - st["documents"]["train"]

        methods = {"raw encode_batch": raw, "raw encode_batch_fast": raw_fast, "stage encoder": stage_encoder,
                   "stage end-to-end": stage_e2e}
        rates: dict[str, list[float]] = {m: [] for m in methods}
        cpu_rates: dict[str, list[float]] = {m: [] for m in methods}
        tokens: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, fn in methods.items():  # interleaved: load changes hit every method alike
                t, c = time.perf_counter(), time.process_time()
                n = fn()
                rates[name].append(n / (time.perf_counter() - t))
                cpu_rates[name].append(n / (time.process_time() - c))  # all threads' CPU time: robust to other load
                tokens[name] = n
        enc.close()
        assert len(set(tokens.values())) == 1, f"methods disagree on the token count: {tokens}"

        n_chars = sum(map(len, docs))
        print(f"text: {len(docs):,} documents, {n_chars / 1e6:.2f} M chars, {tokens['raw encode_batch']:,} tokens; "
              f"tokenizer: {tok.get_vocab_size():,} ids{f' (trained in {train_s:.1f}s)' if not args.tokenizer else ''}; "
              f"batch {args.batch}; {os.cpu_count()} cores; {args.repeat} interleaved repeats")
        base_best = max(rates["raw encode_batch"])
        base_med = statistics.median(rates["raw encode_batch"])
        base_cpu = statistics.median(cpu_rates["raw encode_batch"])
        print(f"{'method':<24}{'best tok/s':>12}{'median tok/s':>14}{'best vs raw':>13}{'median vs raw':>15}"
              f"{'tok/CPU-s':>12}{'CPU vs raw':>12}")
        for name, r in rates.items():
            cpu = statistics.median(cpu_rates[name])
            print(f"{name:<24}{max(r):>12,.0f}{statistics.median(r):>14,.0f}{max(r) / base_best:>13.0%}"
                  f"{statistics.median(r) / base_med:>15.0%}{cpu:>12,.0f}{cpu / base_cpu:>12.0%}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
