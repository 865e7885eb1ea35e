"""Corpus splits → flat memmap token shards with document indexes, re-encoding only what changed.

Each split's documents are cut into *content-defined groups*: a document closes its group when its
hash is ``≡ -1 (mod group_documents)`` (or the group reaches 4× that size). Boundaries depend only on
the documents themselves, so inserting or appending documents changes the groups around the
insertion point and no others — the same trick rsync and restic play on bytes, applied to
documents. A group's tokens are cached cache-wide under
``key(format, tokenizer.json bytes, dtype, the group's document hashes)`` (``ctx.samples_dir``),
and one shard file of the output is one group (hard-linked from that cache, copied when the
filesystem refuses links). A rebuilt ``tokenize`` node therefore encodes only groups it has not seen.

Encoding uses ``tokenizers``' ``encode_batch_fast`` (Rust, all cores, no offsets), run on a helper
thread one batch ahead while the main thread turns the previous batch into a flat numpy array.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import xxhash

from genesis_build.errors import GenesisError

FORMAT_VERSION = 1  # bump when the shard bytes for the same input change
MAX_GROUP_FACTOR = 4
SPLITS = ("train", "validation")


@dataclass
class Group:
    """A run of documents ``[start, end)`` of one split and the digest of their texts."""

    start: int
    end: int
    digest: str

    @property
    def documents(self) -> int:
        """Documents in the group."""
        return self.end - self.start


def _string_chunks(col: pa.ChunkedArray) -> Iterator[tuple[np.ndarray, memoryview]]:
    """(offsets, data) of each chunk of a string column, zero-copy from the memory-mapped arrow."""
    for chunk in col.chunks:
        if chunk.null_count:
            raise GenesisError("the corpus has null texts; rebuild it with a current corpus stage")
        if pa.types.is_large_string(chunk.type):
            width = np.int64
        else:
            width = np.int32
        _, off_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(off_buf, dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
        yield offsets, data


def doc_digests(col: pa.ChunkedArray) -> Iterator[bytes]:
    """xxh3-128 digest of each text's UTF-8 bytes, read straight from the arrow buffers."""
    for offsets, data in _string_chunks(col):
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
            yield xxhash.xxh3_128_digest(data[a:b])


def content_groups(col: pa.ChunkedArray, group_documents: int) -> list[Group]:
    """Cut a text column into content-defined groups (see module docstring)."""
    groups: list[Group] = []
    cap = group_documents * MAX_GROUP_FACTOR
    h = xxhash.xxh3_128()
    start = i = 0
    for d in doc_digests(col):
        h.update(d)
        i += 1
        if int.from_bytes(d[:8], "little") % group_documents == group_documents - 1 or i - start >= cap:
            groups.append(Group(start, i, h.hexdigest()))
            h = xxhash.xxh3_128()
            start = i
    if i > start:
        groups.append(Group(start, i, h.hexdigest()))
    return groups


def pick_dtype(requested: str, vocab_size: int) -> str:
    """``uint16`` when every id (< vocab_size) fits, else ``uint32``; an explicit choice is checked."""
    fits16 = vocab_size <= 1 << 16
    if requested == "auto":
        return "uint16" if fits16 else "uint32"
    if requested == "uint16" and not fits16:
        raise GenesisError(f"tokenize.dtype uint16 cannot hold ids of a {vocab_size:,}-token vocabulary; use uint32 or auto")
    return requested


class Encoder:
    """Documents → one flat little-endian id array (EOS after each document) + start offsets."""

    def __init__(self, tokenizer_json: Path, dtype: str, eos_id: int, batch_documents: int) -> None:
        from tokenizers import Tokenizer

        self.args = (tokenizer_json, dtype, eos_id, batch_documents)
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.eos = eos_id
        self.batch = batch_documents
        # encode_batch_fast (tokenizers >= 0.20) skips offsets, which token shards do not need
        self._encode_batch = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast releases the GIL and spreads documents over all cores (rayon)
        return [e.ids for e in self._encode_batch(texts, add_special_tokens=False)]

    def encode(self, batches: Iterator[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Encode batches of texts (one batch ahead on a helper thread) into (ids, doc starts)."""
        pieces: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        it = iter(batches)
        nxt = next(it, None)
        fut = self.pool.submit(self._encode, nxt) if nxt is not None else None
        while fut is not None:
            ids = fut.result()
            nxt = next(it, None)
            fut = self.pool.submit(self._encode, nxt) if nxt is not None else None
            for doc in ids:  # fresh lists from the encodings: appending EOS costs one call per document
                doc.append(self.eos)
            lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(chain.from_iterable(ids), dtype=self.dtype, count=int(lens.sum()))
            pieces.append(flat)
            lengths.append(lens)
        if not pieces:
            return np.zeros(0, self.dtype), np.zeros(0, np.int64)
        lens = np.concatenate(lengths)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        return np.concatenate(pieces), starts

    def close(self) -> None:
        """Stop the helper thread."""
        self.pool.shutdown()


class GroupStore:
    """Cache-wide store of encoded groups: ``<key>.bin``, ``<key>.idx.npy``, then ``<key>.json`` last."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        """(bin, idx, json) of a key."""
        d = self.root / key[:2]
        return d / f"{key}.bin", d / f"{key}.idx.npy", d / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of a complete, intact group, or None (a damaged one is ignored and rewritten)."""
        b, x, j = self.paths(key)
        try:
            rec = json.loads(j.read_text())
            if (b.stat().st_size, x.stat().st_size) != (rec["bin_bytes"], rec["idx_bytes"]):
                return None
            if _digest(b) != rec["bin_xxh3"] or _digest(x) != rec["idx_xxh3"]:
                return None
            return rec
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, ids: np.ndarray, starts: np.ndarray) -> dict[str, Any]:
        """Write a group atomically (temp files + rename; the json marker goes last)."""
        b, x, j = self.paths(key)
        b.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp{os.getpid()}"
        with open(f"{b}{tag}", "wb") as f:
            ids.tofile(f)
        with open(f"{x}{tag}", "wb") as f:
            np.save(f, starts)
        rec = {"tokens": int(len(ids)), "documents": int(len(starts)), "bin_bytes": os.path.getsize(f"{b}{tag}"),
               "idx_bytes": os.path.getsize(f"{x}{tag}"), "bin_xxh3": _digest(Path(f"{b}{tag}")),
               "idx_xxh3": _digest(Path(f"{x}{tag}"))}
        os.replace(f"{b}{tag}", b)
        os.replace(f"{x}{tag}", x)
        with open(f"{j}{tag}", "w") as f:
            json.dump(rec, f)
        os.replace(f"{j}{tag}", j)
        return rec


def _digest(p: Path) -> str:
    h = xxhash.xxh3_128()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _place(src: Path, dst: Path) -> None:
    """Hard-link a cached group file into the output (copy across filesystems)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def tokenize_corpus(section: Any, tokenizer_dir: Path, corpus_dir: Path, out: Path, store_dir: Path, node: str,
                    progress: Callable[..., None], workers: int = 1) -> dict[str, Any]:
    """Write ``meta.json``, ``<split>/NNNNN.bin`` + ``.idx.npy`` and ``tokenizer/`` into ``out``.

    ``workers`` > 1 encodes groups in that many forked processes, one core each (see
    :func:`_encode_groups`); 1 encodes in this process with ``tokenizers``' own thread pool. The
    bytes are the same either way.
    """
    import datasets

    from .special_tokens import BOS, EOS, PAD

    tj = tokenizer_dir / "tokenizer.json"
    if not tj.is_file():
        raise GenesisError(f"{node}: {tokenizer_dir} has no tokenizer.json; the tokenizer input must be a tokenizer output")
    tok_digest = _digest(tj)
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(tj))
    vocab = backend.get_vocab_size(with_added_tokens=True)
    ids = {name: backend.token_to_id(t) for name, t in (("bos_id", BOS), ("eos_id", EOS), ("pad_id", PAD))}
    if ids["eos_id"] is None:
        raise GenesisError(f"{node}: the tokenizer has no {EOS} token")
    dtype = pick_dtype(section.dtype, vocab)
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    enc = Encoder(tj, dtype, ids["eos_id"], section.batch_documents)
    store = GroupStore(store_dir)
    meta: dict[str, Any] = {"dtype": dtype, "vocab_size": vocab, **ids, "splits": {}}
    counts = {"groups": 0, "groups_encoded": 0, "tokens_encoded": 0, "encode_seconds": 0.0}
    try:
        for split in SPLITS:
            meta["splits"][split] = _tokenize_split(split, corpus_dir / split, out, enc, store, section, tok_digest,
                                                    dtype, ids["eos_id"], counts, progress, datasets, workers)
    finally:
        enc.close()
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    secs = counts["encode_seconds"]
    return {
        "dtype": dtype,
        "vocab_size": vocab,
        "tokens": {s: meta["splits"][s]["tokens"] for s in SPLITS},
        "documents": {s: meta["splits"][s]["documents"] for s in SPLITS},
        "groups": counts["groups"],
        "groups_encoded": counts["groups_encoded"],
        "groups_reused": counts["groups"] - counts["groups_encoded"],
        "tokens_encoded": counts["tokens_encoded"],
        "encode_tokens_per_s": round(counts["tokens_encoded"] / secs) if secs > 0 else None,
    }


def _tokenize_split(split: str, split_dir: Path, out: Path, enc: Encoder, store: GroupStore, section: Any, tok_digest: str,
                    dtype: str, eos: int, counts: dict[str, Any], progress: Callable[..., None], datasets: Any,
                    workers: int = 1) -> dict[str, Any]:
    try:
        ds = datasets.load_from_disk(str(split_dir))
    except (FileNotFoundError, ValueError) as e:
        raise GenesisError(f"{split_dir} is not a corpus split (datasets save_to_disk): {e}") from None
    if "text" not in ds.column_names:
        raise GenesisError(f"{split_dir} has no 'text' column (columns: {', '.join(ds.column_names)})")
    col = ds.data.column("text")
    groups = content_groups(col, section.group_documents)
    keys = [xxhash.xxh3_128_hexdigest(json.dumps([FORMAT_VERSION, tok_digest, dtype, eos, g.digest]).encode())
            for g in groups]
    (out / split).mkdir()
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for i, key in enumerate(keys):
        rec = store.get(key)
        if rec is None:
            todo.append(i)
        else:
            records[i] = rec
    docs_done = sum(groups[i].documents for i in records)
    tokens_done = sum(r["tokens"] for r in records.values())
    t0 = time.time()

    def finished(i: int, rec: dict[str, Any]) -> None:
        nonlocal docs_done, tokens_done
        records[i] = rec
        counts["tokens_encoded"] += rec["tokens"]
        counts["groups_encoded"] += 1
        docs_done += groups[i].documents
        tokens_done += rec["tokens"]
        counts["encode_seconds"] = encode_s0 + time.time() - t1
        progress(docs_done, len(ds), desc=f"tokenize {split}", tokens=tokens_done,
                 tokens_per_s=round(counts["tokens_encoded"] / counts["encode_seconds"]) if counts["encode_seconds"] else None,
                 groups_reused=len(groups) - len(todo), elapsed_s=round(time.time() - t0, 1))

    encode_s0, t1 = counts["encode_seconds"], time.time()
    _encode_groups(col, groups, keys, todo, enc, store, section.batch_documents, workers, finished)
    shards, tokens = [], 0
    for i, key in enumerate(keys):
        rec = records[i]
        b, x, _ = store.paths(key)
        name = f"{split}/{i:05d}"
        _place(b, out / f"{name}.bin")
        _place(x, out / f"{name}.idx.npy")
        shards.append({"file": f"{name}.bin", "tokens": rec["tokens"], "index": f"{name}.idx.npy"})
        tokens += rec["tokens"]
    counts["groups"] += len(groups)
    progress(len(ds), len(ds), desc=f"tokenize {split}", tokens=tokens, groups_reused=len(groups) - len(todo),
             elapsed_s=round(time.time() - t0, 1))
    return {"tokens": tokens, "documents": len(ds), "shards": shards}


def _group_texts(col: pa.ChunkedArray, g: Group, batch: int) -> Iterator[list[str]]:
    return (col.slice(s, min(batch, g.end - s)).to_pylist() for s in range(g.start, g.end, batch))


# What forked group workers read: set by the parent before the pool starts (fork copies it, and the
# memory-mapped text column is shared, not copied).
_WORKER: dict[str, Any] = {}


def _worker_init() -> None:
    from .shards import die_with_parent

    die_with_parent()
    # One core per worker process: tokenizers' rayon pool would put every worker on every core.
    # Read at each encode call, so setting it here (before the first encode in this process) holds.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _encode_in_worker(i: int, key: str) -> dict[str, Any]:
    w = _WORKER
    if "enc" not in w:  # its own Encoder: the parent's helper thread does not exist in a forked child
        w["enc"] = Encoder(*w["encoder_args"])
    flat, starts = w["enc"].encode(_group_texts(w["col"], w["groups"][i], w["batch"]))
    return w["store"].put(key, flat, starts)


def _encode_groups(col: pa.ChunkedArray, groups: list[Group], keys: list[str], todo: list[int], enc: Encoder,
                   store: GroupStore, batch: int, workers: int, finished: Callable[[int, dict[str, Any]], None]) -> None:
    """Encode groups ``todo`` into the store, calling ``finished(i, record)`` for each (in any order).

    With several workers each process encodes whole groups on one core: on 2 cores that beat one
    process whose ``encode_batch_fast`` spreads each batch over both (the Python side that turns
    encodings into arrays then competes with the encoding threads). A group's bytes do not depend
    on who encodes it, and each lands in the store atomically, so a kill keeps finished groups.
    """
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            flat, starts = enc.encode(_group_texts(col, groups[i], batch))
            finished(i, store.put(keys[i], flat, starts))
        return
    from .shards import run_forked

    _WORKER.update(col=col, groups=groups, store=store, batch=batch, encoder_args=enc.args)
    try:
        with closing(run_forked(_encode_in_worker, [(i, keys[i]) for i in todo], workers,
                                initializer=_worker_init)) as runs:
            for j, rec in runs:  # j: the position in todo
                finished(todo[j], rec)
    finally:
        _WORKER.clear()
