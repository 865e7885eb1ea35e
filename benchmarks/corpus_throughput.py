"""Corpus throughput: ingestion, mixture and tokenization with 1 and N workers, against raw
``tokenizers`` ``encode_batch`` and datatrove, on one generated local corpus, in one run.

    python benchmarks/corpus_throughput.py [--gb 1.0] [--small] [--workers N] [--no-datatrove]

Corpus (generated, seeded): JSONL files (a few larger than one shard, so they are cut into byte
ranges) and Parquet files (many row groups), English-like and German-like documents tagged with a
``lang`` field, ~5 % exact duplicates and ~2 % whitespace variants (duplicates after cleaning).
``--gb`` is the size of the input text files (default 1 GB); ``--small`` is a 30 MB quick run.
A 8,192-token BPE is trained on a 4 MB sample by the tokenizer stage's own code.

Measured, each in a fresh process where the thread count matters (the rayon pool of ``tokenizers``
is sized once per process):

  ingest            data_lib.ingest.build_source over both sources (read, clean, filter, dedup,
                    merge) with 1 and N worker processes; MB/s of input file bytes
  mixture           data_lib.mixture.build_mixture (one process)
  tokenize          data_lib.encode.tokenize_corpus as the stage runs it (empty group cache): 1 worker
                    in process on 1 rayon thread, and N forked worker processes of one core each
  end to end        ingest(N) + mixture + tokenize(N) wall time, as MB/s of input bytes
  raw encode_batch  tokenizers.Tokenizer.encode_batch (batches of 512) of exactly the documents the
                    tokenize stage encodes (train + validation), already in memory, same thread count
  datatrove         JsonlReader → DocumentTokenizer (shuffle off) on the JSONL files, LocalPipelineExecutor
                    with N tasks and N workers; MB/s of its JSONL input bytes (if datatrove imports)

Goals (issue 14): ingestion ≥ 1.8× from 1 to 2 workers; end to end ≥ 80 % of raw encode_batch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EN = ("the of and to in is was for on that with as by at from it an be this which or are have had not but "
      "model data build cache stage token corpus training learning system every small large fast slow file "
      "process worker shard output input result value number time first second third across after before").split()
DE = ("der die das und zu den von mit sich des auf für ist im dem nicht ein eine als auch es an werden aus er "
      "hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur oder aber "
      "vor zur bis mehr durch man sein wurde sei modell daten schnell langsam datei arbeit ergebnis").split()
SHARD_MB = 16.0  # the spec's shard_mb for the run (--shard-mb): JSONL files are sized from it


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (worker pools are reaped on shutdown)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _doc(rng: random.Random, lang: str) -> str:
    words = EN if lang == "en" else DE
    paras = []
    for _ in range(rng.randint(1, 6)):
        n = rng.randint(30, 160)
        paras.append(" ".join(rng.choices(words, k=n)).capitalize() + ".")
    return "\n\n".join(paras)


def generate(root: Path, total_bytes: int, seed: int = 0) -> dict[str, Any]:
    """JSONL (70 %) and Parquet (30 %) files of about ``total_bytes`` in ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    (root / "jsonl").mkdir(parents=True)
    (root / "parquet").mkdir()
    recent: list[tuple[str, str]] = []
    stats = {"documents": 0, "duplicates": 0}

    def next_doc() -> tuple[str, str]:
        r = rng.random()
        if recent and r < 0.05:
            stats["duplicates"] += 1
            return rng.choice(recent)
        if recent and r < 0.07:  # same after cleaning: trailing spaces and CRLF
            t, lang = rng.choice(recent)
            stats["duplicates"] += 1
            return t.replace("\n", "  \r\n"), lang
        lang = "en" if rng.random() < 0.6 else "de"
        d = (_doc(rng, lang), lang)
        if len(recent) < 5000:
            recent.append(d)
        else:
            recent[rng.randrange(5000)] = d
        return d

    jsonl_target = int(total_bytes * 0.7)
    # file sizes: mostly one shard or less, every 4th three shards (cut into byte ranges)
    k = written = 0
    while written < jsonl_target:
        size = int(SHARD_MB * (1 << 20) * (3 if k % 4 == 3 else 0.75))
        size = min(size, jsonl_target - written) if jsonl_target - written > 1 << 20 else size
        f = root / "jsonl" / f"part-{k:04d}.jsonl"
        n = 0
        with open(f, "w", encoding="utf-8") as out:
            buf = []
            while n < size:
                t, lang = next_doc()
                line = json.dumps({"text": t, "lang": lang, "id": stats["documents"]}, ensure_ascii=False) + "\n"
                buf.append(line)
                n += len(line.encode())
                stats["documents"] += 1
            out.write("".join(buf))
        written += n
        k += 1
    pq_target = total_bytes - written
    k = 0
    while pq_target > 0:
        texts, langs, n = [], [], 0
        while n < min(SHARD_MB * (1 << 20) * 2, pq_target):
            t, lang = next_doc()
            texts.append(t)
            langs.append(lang)
            n += len(t.encode())
            stats["documents"] += 1
        pq.write_table(pa.table({"text": texts, "lang": langs}), root / "parquet" / f"part-{k:04d}.parquet",
                       row_group_size=4000)
        pq_target -= n
        k += 1
    sizes = {kind: sum(p.stat().st_size for p in (root / kind).iterdir()) for kind in ("jsonl", "parquet")}
    return {**stats, "bytes": sizes, "files": {kind: len(list((root / kind).iterdir())) for kind in ("jsonl", "parquet")}}


def corpus_spec() -> Any:
    from stages.corpus import CorpusSpec

    return CorpusSpec.model_validate({
        "seed": 0, "shard_mb": SHARD_MB, "validation": {"fraction": 0.01},
        "filters": {"min_chars": 50, "whitespace": "collapse"},
        "sources": [{"name": "web-jsonl", "type": "jsonl", "glob": "data/jsonl/*.jsonl", "language_field": "lang"},
                    {"name": "web-parquet", "type": "parquet", "glob": "data/parquet/*.parquet", "language_field": "lang"}]})


def ingest(ws: Path, out: Path, workers: int) -> tuple[float, dict[str, Path], list[dict[str, Any]]]:
    """Both sources with ``workers`` processes (fresh temp shard dirs): (seconds, dirs, run infos;
    the first also holds ``cpu``, the CPU seconds of parent and workers)."""
    from stages.data_lib.ingest import build_source

    spec = corpus_spec()
    dirs, runs = {}, []
    t0, c0 = time.perf_counter(), cpu_seconds()
    for i, src in enumerate(spec.sources):
        d = out / src.name
        d.mkdir(parents=True)
        files = sorted((ws / "data" / ("jsonl" if src.type == "jsonl" else "parquet")).iterdir())
        run: dict[str, Any] = {}
        build_source(src, i, files, ws, d, f"corpus-source:bench/{src.name}", lambda *a, **k: None,
                     workers=workers, shard_mb=SHARD_MB, run_info=run)
        dirs[src.name] = d
        runs.append(run)
    runs[0]["cpu"] = cpu_seconds() - c0
    return time.perf_counter() - t0, dirs, runs


def train_tokenizer(corpus: Path, out: Path) -> Path:
    """An 8,192-token BPE trained by the tokenizer stage's code on a 4 MB sample of the corpus."""
    import datasets

    from stages.data_lib.bpe import train_tokenizer as train
    from stages.tokenizer import TokenizerSpec

    ds = datasets.load_from_disk(str(corpus / "train"))
    texts, n = [], 0
    for t in ds["text"][:20000]:
        texts.append(t)
        n += len(t)
        if n > 4_000_000:
            break
    sample = out / "sample"
    for split, rows in (("train", texts), ("validation", texts[:10])):
        datasets.Dataset.from_dict({"text": rows, "source": ["b"] * len(rows), "language": ["x"] * len(rows)}).save_to_disk(
            str(sample / split))
    tok = out / "tokenizer"
    tok.mkdir()
    train(TokenizerSpec(corpus="corpus:bench", vocab_size=8192), sample, tok, "bench", lambda *a, **k: None)
    return tok


# ------------------------------------------------------------------------------------------------
# children (one process each: RAYON_NUM_THREADS is read once per process)


def child(mode: str, tok: Path, corpus: Path, work: Path, jsonl_dir: Path, workers: int) -> dict[str, Any]:
    """Run one measurement; returns seconds and counts."""
    if mode == "tokenize":
        from types import SimpleNamespace

        from stages.data_lib.encode import tokenize_corpus

        out, store = work / f"tok-out-{workers}", work / f"tok-store-{workers}"
        out.mkdir()
        t0, c0 = time.perf_counter(), cpu_seconds()
        st = tokenize_corpus(SimpleNamespace(dtype="auto", group_documents=4096, batch_documents=512), tok, corpus, out,
                             store, "bench", lambda *a, **k: None, workers=workers)
        secs, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        shutil.rmtree(out)
        shutil.rmtree(store)
        docs = st["documents"]["train"] + st["documents"]["validation"]
        return {"seconds": secs, "cpu": cpu, "tokens": st["tokens"]["train"] + st["tokens"]["validation"] - docs}
    if mode == "raw":
        import datasets
        from tokenizers import Tokenizer

        texts = []
        for split in ("train", "validation"):
            texts += datasets.load_from_disk(str(corpus / split))["text"]
        t = Tokenizer.from_file(str(tok / "tokenizer.json"))
        t0, c0 = time.perf_counter(), cpu_seconds()
        n = sum(len(e.ids) for i in range(0, len(texts), 512) for e in t.encode_batch(texts[i : i + 512], add_special_tokens=False))
        return {"seconds": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, "tokens": n, "chars": sum(map(len, texts))}
    if mode == "datatrove":
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.readers import JsonlReader
        from datatrove.pipeline.tokens import DocumentTokenizer

        out = work / "datatrove-out"
        ex = LocalPipelineExecutor(pipeline=[
            JsonlReader(str(jsonl_dir), glob_pattern="*.jsonl", text_key="text"),
            DocumentTokenizer(str(out), tokenizer_name_or_path=str(tok / "tokenizer.json"), eos_token="<|eos|>",
                              batch_size=512, shuffle_documents=False),
        ], tasks=workers, workers=workers, logging_dir=str(work / "datatrove-logs"),
            start_method="fork")  # fork: its workers are our children, so their CPU time is counted
        t0, c0 = time.perf_counter(), cpu_seconds()
        ex.run()
        secs, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work / "datatrove-logs", ignore_errors=True)
        return {"seconds": secs, "cpu": cpu}
    raise ValueError(mode)


def run_child(mode: str, tok: Path, corpus: Path, work: Path, jsonl_dir: Path, workers: int) -> dict[str, Any]:
    """``child`` in a fresh process with ``workers`` rayon threads."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers), "TOKENIZERS_PARALLELISM": "true"}
    p = subprocess.run([sys.executable, __file__, "--child", mode, str(tok), str(corpus), str(work), str(jsonl_dir),
                        str(workers)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, tok, corpus, work, jsonl_dir, workers = sys.argv[2:8]
        print(json.dumps(child(mode, Path(tok), Path(corpus), Path(work), Path(jsonl_dir), int(workers))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="input size in GB (default 1)")
    ap.add_argument("--small", action="store_true", help="a 30 MB quick run")
    ap.add_argument("--workers", type=int, default=None, help="N (default: all cores)")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--keep", type=Path, help="generate into this dir and keep it")
    ap.add_argument("--shard-mb", type=float, default=None,
                    help="shard size (default 16 MB; 4 MB below 0.5 GB, so every worker gets several shards)")
    args = ap.parse_args()
    global SHARD_MB
    SHARD_MB = args.shard_mb or (16.0 if not args.small and args.gb >= 0.5 else 4.0)
    from stages.data_lib.shards import default_workers

    n = args.workers or default_workers()
    size = int((0.03 if args.small else args.gb) * 1e9)
    import datasets

    datasets.disable_progress_bars()
    work = args.keep or Path(tempfile.mkdtemp(prefix="corpusbench-"))
    try:
        t0 = time.perf_counter()
        gen = generate(work / "data", size)
        in_bytes = sum(gen["bytes"].values())
        print(f"corpus: {in_bytes / 1e6:,.1f} MB in {sum(gen['files'].values())} files "
              f"(JSONL {gen['bytes']['jsonl'] / 1e6:,.1f} MB / {gen['files']['jsonl']} files, Parquet "
              f"{gen['bytes']['parquet'] / 1e6:,.1f} MB / {gen['files']['parquet']} files), {gen['documents']:,} documents "
              f"({gen['duplicates']:,} duplicates), en + de; generated in {time.perf_counter() - t0:.1f}s")
        print(f"machine: {os.cpu_count()} cores, N = {n} workers, shard_mb {SHARD_MB:g}; load average before: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        secs, cpus = {}, {}
        for w in sorted({1, n}):
            s, dirs, runs = ingest(work, work / f"ingest-{w}", w)
            secs[w], cpus[w] = s, runs[0]["cpu"]
            merge = sum(r["merge_seconds"] for r in runs)
            print(f"ingest   {w} worker(s): {s:7.2f} s  {in_bytes / s / 1e6:7.1f} MB/s  "
                  f"({sum(r['shards'] for r in runs)} shards; serial merge {merge:.2f} s; CPU {cpus[w]:.2f} s, "
                  f"{in_bytes / cpus[w] / 1e6:.1f} MB per CPU-second)")
        docs_a = (work / "ingest-1" / "web-jsonl" / "docs.arrow").read_bytes()
        docs_b = (work / f"ingest-{n}" / "web-jsonl" / "docs.arrow").read_bytes()
        assert docs_a == docs_b, "ingestion output differs between 1 and N workers"
        from stages.data_lib.mixture import build_mixture

        corpus = work / "corpus"
        corpus.mkdir()
        t1, c1 = time.perf_counter(), cpu_seconds()
        mix = build_mixture(corpus_spec(), dirs, corpus, "corpus:bench", lambda *a, **k: None)
        mix_s = time.perf_counter() - t1
        mix_cpu = cpu_seconds() - c1
        print(f"mixture  1 process : {mix_s:7.2f} s  {in_bytes / mix_s / 1e6:7.1f} MB/s  "
              f"({mix['documents']['train']:,} train + {mix['documents']['validation']:,} validation documents, "
              f"dup rate {mix['dup_rate']:.3f})")
        tok = train_tokenizer(corpus, work)
        tok_s, raw_s, tok_cpu, raw_cpu = {}, {}, {}, {}
        for w in sorted({1, n}):
            r = run_child("tokenize", tok, corpus, work, work / "data" / "jsonl", w)
            raw = run_child("raw", tok, corpus, work, work / "data" / "jsonl", w)
            assert r["tokens"] == raw["tokens"], (r, raw)
            tok_s[w], raw_s[w], tok_cpu[w], raw_cpu[w] = r["seconds"], raw["seconds"], r["cpu"], raw["cpu"]
            text_mb = raw["chars"] / 1e6
            print(f"tokenize {w} worker(s): {r['seconds']:7.2f} s  {text_mb / r['seconds']:7.2f} M chars/s | raw encode_batch "
                  f"{raw['seconds']:7.2f} s  {text_mb / raw['seconds']:7.2f} M chars/s | stage {raw['seconds'] / r['seconds']:.0%} "
                  f"of raw ({raw['tokens']:,} tokens; CPU s stage {r['cpu']:.2f}, raw {raw['cpu']:.2f})")
        e2e = secs[n] + mix_s + tok_s[n]
        e2e_cpu = cpus[n] + mix_cpu + tok_cpu[n]
        print(f"end to end, N = {n}: ingest {secs[n]:.2f} + mixture {mix_s:.2f} + tokenize {tok_s[n]:.2f} = {e2e:.2f} s, "
              f"{in_bytes / e2e / 1e6:.2f} MB/s of input; CPU {e2e_cpu:.2f} s")
        dt = None
        if args.no_datatrove:
            print("datatrove: skipped (--no-datatrove)")
        else:
            try:
                import datatrove  # noqa: F401

                dt = run_child("datatrove", tok, corpus, work, work / "data" / "jsonl", n)
                print(f"datatrove JsonlReader → DocumentTokenizer, {n} tasks/workers, JSONL only: {dt['seconds']:.2f} s, "
                      f"{gen['bytes']['jsonl'] / dt['seconds'] / 1e6:.2f} MB/s of its input; CPU {dt['cpu']:.2f} s, "
                      f"{gen['bytes']['jsonl'] / dt['cpu'] / 1e6:.2f} MB per CPU-second")
            except ImportError:
                print("datatrove: not installed (pip install 'datatrove[processing]' orjson); not compared")
            except RuntimeError as e:  # datatrove itself failed: say why, keep our numbers
                print(f"datatrove: failed, not compared: {str(e).strip().splitlines()[-1]}")
        print("ratios:")
        if n > 1:
            print(f"  ingestion 1 → {n} workers: {secs[1] / secs[n]:.2f}× (goal ≥ 1.8× on 2 cores)")
            print(f"  tokenize 1 → {n} workers: {tok_s[1] / tok_s[n]:.2f}×; raw encode_batch 1 → {n} threads: {raw_s[1] / raw_s[n]:.2f}×")
            print(f"  ingestion CPU seconds, {n} workers vs 1: {cpus[n] / cpus[1]:.2f}× (parallel overhead)")
        print(f"  tokenize stage ({n} workers) vs raw encode_batch ({n} threads): {raw_s[n] / tok_s[n]:.0%} wall, "
              f"{raw_cpu[n] / tok_cpu[n]:.0%} CPU")
        print(f"  end to end (ingest + mixture + tokenize) vs raw encode_batch of the same documents: "
              f"{raw_s[n] / e2e:.0%} wall, {raw_cpu[n] / e2e_cpu:.0%} CPU (goal ≥ 80 %)")
        if dt:
            print(f"  end to end MB/s vs datatrove MB/s: {(in_bytes / e2e) / (gen['bytes']['jsonl'] / dt['seconds']):.2f}× wall, "
                  f"{(in_bytes / e2e_cpu) / (gen['bytes']['jsonl'] / dt['cpu']):.2f}× per CPU-second")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
