"""The corpus mixture: cross-source dedup, weighted sampling, train/validation split, save_to_disk.

Every decision about a document is a pure function of ``(seed, document hash)``, never of its
position, so adding documents or sources leaves every other document's fate unchanged:

- dedup: the first occurrence in source order wins (sources are read in spec order);
- sampling: ``weight`` is a rate — each document is kept ``floor(w)`` times plus once more with
  probability ``frac(w)`` (0.5 keeps half, 2.5 repeats every document twice and half of them thrice);
- split: a document goes to validation when its split draw is below ``validation.fraction``
  (one copy, never also in train), topped up to ``validation.min_documents`` by smallest draw.

Output order is stable — sources in spec order, documents in source order, repeated copies as
later passes over the source — so appended data lands in few places and incremental tokenization
(content-defined groups in ``encode.py``) re-encodes only what changed. Training order is not this
order: pretraining draws windows in a seeded global permutation.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from genesis_build.errors import GenesisError

from .ingest import DOCS_FILE

MASK64 = (1 << 64) - 1
SALT_SAMPLE, SALT_SPLIT = 1, 2
COLUMNS = ("text", "source", "language")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer over uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform(hi: np.ndarray, lo: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform [0, 1) draw per document, determined by (seed, salt, document hash) only."""
    s = np.uint64(xxhash.xxh3_64_intdigest(f"{seed}:{salt}".encode()))
    with np.errstate(over="ignore"):
        x = _mix64(hi ^ _mix64(lo ^ s))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def open_docs(path: Path) -> pa.Table:
    """A source's ``docs.arrow``, memory-mapped (no copy of the text)."""
    return pa.ipc.open_file(pa.memory_map(str(path / DOCS_FILE))).read_all()


def plan(spec: Any, tables: list[pa.Table]) -> dict[str, Any]:
    """Decide every document's fate; returns row orders per split and counts (no text touched)."""
    sizes = [t.num_rows for t in tables]
    src = np.repeat(np.arange(len(tables), dtype=np.int32), sizes)
    row = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]) if sizes else np.zeros(0, np.int64)
    hi = np.concatenate([t["h_hi"].to_numpy() for t in tables]).astype(np.uint64)
    lo = np.concatenate([t["h_lo"].to_numpy() for t in tables]).astype(np.uint64)

    keys = np.ascontiguousarray(np.stack([hi, lo], axis=1)).view(np.dtype((np.void, 16))).ravel()
    _, first = np.unique(keys, return_index=True)  # index of each hash's first occurrence = earliest source
    unique = np.zeros(len(keys), dtype=bool)
    unique[first] = True

    weights = np.array([s.weight for s in spec.sources], dtype=np.float64)
    w = weights[src]
    u_sample, u_split = uniform(hi, lo, spec.seed, SALT_SAMPLE), uniform(hi, lo, spec.seed, SALT_SPLIT)
    copies = np.floor(w).astype(np.int64) + (u_sample < (w - np.floor(w))).astype(np.int64)
    copies[~unique] = 0

    val = (u_split < spec.validation.fraction) & (copies > 0)
    short = spec.validation.min_documents - int(val.sum())
    if short > 0:
        cand = np.flatnonzero((copies > 0) & ~val)
        cand = cand[np.argsort(u_split[cand], kind="stable")][: max(0, min(short, len(cand) - 1))]
        val[cand] = True
    train_copies = np.where(val, 0, copies)

    order_train, order_val = [], []
    for s in range(len(tables)):
        mine = src == s
        order_val.append(np.flatnonzero(mine & val))
        for k in range(int(train_copies[mine].max(initial=0))):
            order_train.append(np.flatnonzero(mine & (train_copies > k)))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return {"src": src, "row": row, "hi": hi, "lo": lo, "unique": unique, "copies": copies, "val": val,
            "train": cat(order_train), "validation": cat(order_val)}


def _fingerprint(split: str, idx: np.ndarray, p: dict[str, Any], names: list[str]) -> str:
    h = xxhash.xxh3_64()
    h.update(split.encode())
    h.update(json.dumps(names).encode())
    h.update(np.ascontiguousarray(p["hi"][idx]).tobytes())
    h.update(np.ascontiguousarray(p["lo"][idx]).tobytes())
    h.update(np.ascontiguousarray(p["src"][idx]).tobytes())
    return h.hexdigest()


def write_split(split: str, idx: np.ndarray, p: dict[str, Any], tables: list[pa.Table], names: list[str],
                out: Path, shard_documents: int, progress: Callable[..., None]) -> None:
    """Write documents ``idx`` (global ids, in order) as ``out/<split>`` with ``save_to_disk``.

    Text is gathered chunk by chunk from the memory-mapped sources into temporary Arrow files, which
    ``datasets`` memory-maps, concatenates and shards: peak memory is one chunk, not the corpus.
    """
    import datasets

    features = datasets.Features({c: datasets.Value("string") for c in COLUMNS})
    parts_dir = out / f".parts-{split}"
    parts_dir.mkdir()
    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    files = []
    for start in range(0, len(idx), shard_documents):
        chunk = idx[start : start + shard_documents]
        pieces = []
        srcs = p["src"][chunk]
        cuts = np.flatnonzero(np.diff(srcs)) + 1
        for run in np.split(np.arange(len(chunk)), cuts):
            s = int(srcs[run[0]])
            t = tables[s].select(["text", "language"]).take(pa.array(p["row"][chunk[run]]))
            pieces.append(pa.table({"text": t["text"], "source": pa.array([names[s]] * t.num_rows, pa.string()),
                                    "language": t["language"]}, schema=schema))
        f = parts_dir / f"{len(files):05d}.arrow"
        with pa.OSFile(str(f), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
            w.write_table(pa.concat_tables(pieces).combine_chunks())
        files.append(f)
        progress(start + len(chunk), len(idx), desc=f"write {split}")
    if files:
        ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])
    else:
        ds = datasets.Dataset.from_dict({c: [] for c in COLUMNS}, features=features)
    # The fingerprint (state.json) would otherwise depend on the temp paths: make it the content's.
    ds = ds.select(range(len(ds)), new_fingerprint=_fingerprint(split, idx, p, names))
    ds.save_to_disk(str(out / split), num_shards=max(1, math.ceil(len(idx) / shard_documents)))
    del ds
    shutil.rmtree(parts_dir)


def _lang_counts(codes: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = np.bincount(codes, minlength=len(names))
    return {names[i]: int(counts[i]) for i in sorted(range(len(names)), key=names.__getitem__) if counts[i]}


def build_mixture(spec: Any, dirs: dict[str, Path], out: Path, node: str, progress: Callable[..., None]) -> dict[str, Any]:
    """Mix the source outputs ``dirs`` (name → dir) into ``out``; returns the statistics."""
    import datasets

    datasets.disable_progress_bars()
    names = [s.name for s in spec.sources]
    tables = [open_docs(dirs[n]) for n in names]
    p = plan(spec, tables)
    if len(p["train"]) == 0:
        raise GenesisError(f"{node}: the mixture is empty: no training document survived dedup and sampling "
                           f"({len(p['src'])} documents in, validation takes {int(p['val'].sum())}); add data, raise "
                           "weights or lower validation.fraction")
    for split in ("train", "validation"):
        write_split(split, p[split], p, tables, names, out, spec.shard_documents, progress)

    nbytes = np.concatenate([pc.binary_length(t["text"].cast(pa.binary())).to_numpy(zero_copy_only=False).astype(np.int64)
                             for t in tables]) if tables else np.zeros(0, np.int64)
    # per-document language codes into one vocabulary (dictionary-encoded, no per-row Python strings)
    vocab: dict[str, int] = {}
    codes = []
    for t in tables:
        enc = pc.dictionary_encode(t["language"]).combine_chunks()
        remap = np.array([vocab.setdefault(v, len(vocab)) for v in enc.dictionary.to_pylist()], dtype=np.int32)
        codes.append(remap[enc.indices.to_numpy(zero_copy_only=False)] if len(remap) else np.zeros(0, np.int32))
    lang_codes = np.concatenate(codes) if codes else np.zeros(0, np.int32)
    lang_names = sorted(vocab, key=vocab.get)
    per_source: dict[str, Any] = {}
    total_train_bytes = int(nbytes[p["train"]].sum())
    for s, name in enumerate(names):
        src_stats = json.loads((dirs[name] / "stats.json").read_text()) if (dirs[name] / "stats.json").is_file() else {}
        mine = p["src"] == s
        tr = p["train"][p["src"][p["train"]] == s]
        va = p["validation"][p["src"][p["validation"]] == s]
        per_source[name] = {
            "weight": spec.sources[s].weight,
            "documents_in": int(mine.sum()),
            "within_source_duplicates": int(src_stats.get("dropped", {}).get("duplicate", 0)),
            "cross_source_duplicates": int((mine & ~p["unique"]).sum()),
            "train_documents": int(len(tr)),
            "validation_documents": int(len(va)),
            "train_bytes": int(nbytes[tr].sum()),
            "train_share": round(int(nbytes[tr].sum()) / total_train_bytes, 6) if total_train_bytes else 0.0,
        }
    n_in = len(p["src"])
    cross = int((~p["unique"]).sum())
    within = sum(v["within_source_duplicates"] for v in per_source.values())
    stats = {
        "documents": {"train": int(len(p["train"])), "validation": int(len(p["validation"]))},
        "bytes": {"train": total_train_bytes, "validation": int(nbytes[p["validation"]].sum())},
        "cross_source_duplicates": cross,
        "dup_rate": round((cross + within) / (n_in + within), 6) if n_in + within else 0.0,
        "languages": {split: _lang_counts(lang_codes[p[split]], lang_names) for split in ("train", "validation")},
        "sources": per_source,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats
