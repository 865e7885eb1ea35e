"""One corpus source → ``docs.arrow`` (cleaned, filtered, deduplicated) + ``stats.json``.

Readers stream documents as ``(text, language, origin)``; ``origin`` ("data/a.jsonl:12") is only for
error messages. Every bad input is one GenesisError naming the node, the source and the field or
file. The output is an Arrow IPC file (memory-mapped by the mixture) with columns ``text``,
``language`` and the document hash halves ``h_hi``/``h_lo`` (xxh3-128 of the cleaned text).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from genesis_build.errors import GenesisError

from .shards import DEFAULT_SHARD_MB, Piece, Shard, ShardStore, pack, run_forked
from .text import Filter

DOCS_FILE = "docs.arrow"
SCHEMA = pa.schema([("text", pa.string()), ("language", pa.string()), ("h_hi", pa.uint64()), ("h_lo", pa.uint64())])
BATCH_DOCS = 2048
BATCH_BYTES = 32 << 20
Doc = tuple[str, str, str]  # text, language, origin


class SourceError(GenesisError):
    """A source's data is unusable (missing field, binary file, bad JSON …)."""


def _rel(path: Path, workspace: Path) -> str:
    try:
        return str(path.relative_to(workspace))
    except ValueError:
        return str(path)


def _decode(raw: bytes, origin: str, where: str) -> str:
    if b"\x00" in raw[:8192]:
        raise SourceError(f"{where}: {origin} looks binary (NUL bytes), not text; remove it or narrow the glob")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"{where}: {origin} is not UTF-8 text (bad byte 0x{raw[e.start]:02x} at offset {e.start}); "
                          "convert it to UTF-8 or exclude it") from None


def _read_bytes(path: Path, origin: str, where: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceError(f"{where}: cannot read {origin}: {e.strerror or e}") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise SourceError(f"{where}: {origin} is not valid gzip: {e}") from None
    return data


def _field(record: Any, name: str, origin: str, where: str, what: str) -> Any:
    if not isinstance(record, dict):
        raise SourceError(f"{where}: {origin}: expected a JSON object, got {type(record).__name__}")
    if name not in record:
        have = ", ".join(sorted(map(str, record))[:12]) or "none"
        raise SourceError(f"{where}: {origin}: no field {name!r} ({what}); the record has: {have}")
    return record[name]


def _as_text(value: Any, origin: str, where: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceError(f"{where}: {origin}: field {field!r} holds {type(value).__name__}, not text; point "
                          "text_field at a string column")
    return value


def read_text_files(files: list[Path], src: Any, where: str, workspace: Path) -> Iterator[Doc]:
    """One document per file."""
    for f in files:
        origin = _rel(f, workspace)
        yield _decode(_read_bytes(f, origin, where), origin, where), src.language, origin


def _line_base(path: Path, start: int) -> int:
    """Lines before the first line that byte range ``start`` reads (see ``_lines``) of a plain file:
    counted only when an error needs a line number."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        left = start
        while left > 0 and (chunk := f.read(min(left, 1 << 24))):
            n += chunk.count(b"\n")
            left -= len(chunk)
            last = chunk[-1:]
    return n + (last != b"\n")  # the line running through `start` was skipped: it counts too


def _lines(path: Path, rel: str, where: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Raw lines of a (possibly gzipped) file, streamed: a JSONL file may be larger than memory.

    With a byte range (plain files only) the lines that *start* in ``[start, stop)``: a range that
    begins mid-line skips to the next line and its last line runs past ``stop`` to its end, so
    consecutive ranges together read every line exactly once.
    """
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise SourceError(f"{where}: cannot read {rel}: {e.strerror or e}") from None
    n = 0
    try:
        with f:
            if start > 0:
                f.seek(start - 1)
                f.readline()  # the line running through `start` belongs to the previous range
            pos = f.tell()
            while stop is None or pos < stop:
                line = f.readline()
                if not line:
                    break
                n += 1
                pos += len(line)
                yield line
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        at = f"{rel}:{n + 1 + (_line_base(path, start) if start else 0)}"
        damaged = " (truncated or damaged gzip)" if path.suffix == ".gz" else ""
        raise SourceError(f"{where}: cannot read {at}: {getattr(e, 'strerror', None) or e}{damaged}") from None


def read_jsonl(files: list[Path], src: Any, where: str, workspace: Path,
               ranges: list[tuple[int, int | None]] | None = None) -> Iterator[Doc]:
    """One document per JSON line (``.jsonl`` or ``.jsonl.gz``); blank lines are skipped.

    ``ranges`` (one per file) reads only the lines starting in that byte range (see ``_lines``).
    """
    tf, lf = src.text_field, src.language_field
    loads = json.loads
    for k, f in enumerate(files):
        rel = _rel(f, workspace)
        start, stop = ranges[k] if ranges else (0, None)
        base: list[int] = []  # lines before `start`, counted lazily: only error messages need it

        def at(n: int, f: Path = f, start: int = start, rel: str = rel, base: list[int] = base) -> str:
            if start and not base:
                base.append(_line_base(f, start))
            return f"{rel}:{n + (base[0] if base else 0)}"

        for n, raw in enumerate(_lines(f, rel, where, start, stop), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = _decode(raw, at(n), where)  # raises, naming the byte and its offset
            if not line.strip():
                continue
            try:
                rec = loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{where}: {at(n)}: not valid JSON ({e.msg}); every line must be one object") from None
            if type(rec) is dict and type(rec.get(tf)) is str and (lf is None or lf in rec):
                # the common case, without formatting an origin string per document
                yield rec[tf], (str(rec[lf]) if lf else src.language), rel
                continue
            origin = at(n)
            body = _as_text(_field(rec, tf, origin, where, "text_field"), origin, where, tf)
            lang = str(_field(rec, lf, origin, where, "language_field")) if lf else src.language
            yield body, lang, origin


def _check_columns(names: list[str], src: Any, origin: str, where: str) -> None:
    for field, label in ((src.text_field, "text_field"), (src.language_field, "language_field")):
        if field is not None and field not in names:
            raise SourceError(f"{where}: {origin} has no column {field!r} ({label}); columns: {', '.join(names)}")


def read_parquet(files: list[Path], src: Any, where: str, workspace: Path,
                 ranges: list[tuple[int, int | None]] | None = None) -> Iterator[Doc]:
    """Rows of Parquet files, reading only the text (and language) columns; ``ranges`` (one per
    file) reads only row groups ``[start, stop)``."""
    import pyarrow.parquet as pq

    cols = [src.text_field] + ([src.language_field] if src.language_field else [])
    for k, f in enumerate(files):
        rel = _rel(f, workspace)
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as e:
            raise SourceError(f"{where}: {rel} is not a readable Parquet file: {e}") from None
        _check_columns(pf.schema_arrow.names, src, rel, where)
        n_groups = pf.metadata.num_row_groups
        start, stop = ranges[k] if ranges else (0, None)
        groups = list(range(start, n_groups if stop is None else min(stop, n_groups)))
        row = sum(pf.metadata.row_group(g).num_rows for g in range(start))
        try:
            for batch in pf.iter_batches(columns=cols, batch_size=BATCH_DOCS, row_groups=groups):
                texts = batch.column(0).to_pylist()
                langs = batch.column(1).to_pylist() if src.language_field else [src.language] * len(texts)
                for t, lang in zip(texts, langs):
                    origin = f"{rel} row {row}"
                    yield _as_text(t, origin, where, src.text_field), str(lang), origin
                    row += 1
        except (OSError, pa.ArrowException) as e:
            raise SourceError(f"{where}: {rel} row {row}: cannot read this Parquet data: {e}") from None


def _iter_dataset(ds: Any, src: Any, label: str, where: str) -> Iterator[Doc]:
    for i, rec in enumerate(ds):
        origin = f"{label} row {i}"
        body = _as_text(_field(rec, src.text_field, origin, where, "text_field"), origin, where, src.text_field)
        lang = str(_field(rec, src.language_field, origin, where, "language_field")) if src.language_field else src.language
        yield body, lang, origin


def read_disk(path: Path, src: Any, where: str, workspace: Path) -> Iterator[Doc]:
    """A ``datasets.Dataset.save_to_disk`` directory (a DatasetDict's ``split``), memory-mapped."""
    import datasets

    rel = _rel(path, workspace)
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise SourceError(f"{where}: {rel} is not a datasets save_to_disk directory: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
            raise SourceError(f"{where}: {rel} has no split {src.split!r} (splits: {', '.join(ds)}); set `split`")
        ds = ds[src.split]
    _check_columns(list(ds.column_names), src, rel, where)
    cols = [src.text_field] + ([src.language_field] if src.language_field else [])
    yield from _iter_dataset(ds.select_columns(cols), src, rel, where)


def open_hub(src: Any, where: str) -> Any:
    """``datasets.load_dataset(dataset, config, split=…, revision=…, streaming=…)``.

    Works with a hub id (needs network) or a local dataset directory/script path; streaming writes
    nothing to the datasets cache.
    """
    import datasets

    try:
        ds = datasets.load_dataset(src.dataset, src.config, data_dir=src.data_dir, split=src.split,
                                   revision=src.revision, streaming=src.streaming)
    except Exception as e:  # noqa: BLE001 — datasets raises many types; the message is what matters
        raise SourceError(f"{where}: cannot load dataset {src.dataset!r}"
                          f"{f' config {src.config!r}' if src.config else ''} split {src.split!r}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return ds


def hub_shards(src: Any, where: str) -> int:
    """How many shards a hub stream splits into (``IterableDataset.n_shards``: its data files);
    1 for a non-streamed dataset, which is read by one worker."""
    if not src.streaming:  # do not load (download) a whole dataset just to learn it is one shard
        return 1
    ds = open_hub(src, where)
    return max(1, int(getattr(ds, "n_shards", 1) or 1))


def read_hub(src: Any, where: str, shard: tuple[int, int] | None = None) -> Iterator[Doc]:
    """The documents of a hub (or local) dataset; ``shard=(i, n)``: only ``IterableDataset.shard(n, i)``,
    contiguous, so shards 0…n-1 in order read the stream's documents in its own order."""
    ds = open_hub(src, where)
    label = src.dataset
    if shard is not None and shard[1] > 1:
        ds = ds.shard(num_shards=shard[1], index=shard[0])
        label = f"{src.dataset} shard {shard[0]}/{shard[1]}"
    names = list(ds.features) if getattr(ds, "features", None) else None
    if names is not None:
        _check_columns(names, src, src.dataset, where)
    yield from _iter_dataset(ds, src, label, where)


def read_pydoc_topics(files: list[Path], src: Any, where: str, workspace: Path) -> Iterator[Doc]:
    """The ``pydoc`` help topics bundled with Python (``pydoc_data/topics.py``), one per topic.

    The file is parsed with ``ast`` (never executed): it is one dict literal of topic → text.
    """
    import ast

    f = files[0]
    rel = _rel(f, workspace)
    tree = ast.parse(_decode(_read_bytes(f, rel, where), rel, where))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
            topics = ast.literal_eval(node.value)
            for name in sorted(topics):
                yield topics[name], src.language, f"{rel} topic {name!r}"
            return
    raise SourceError(f"{where}: {rel} holds no `topics` dict; this Python's pydoc data has an unknown layout")


def iter_documents(src: Any, files: list[Path], workspace: Path, where: str) -> Iterator[Doc]:
    """The source's raw documents in a deterministic order (files sorted by path)."""
    if src.type in ("text", "jsonl", "parquet", "pydoc-topics") and not files:
        pattern = src.path if src.path is not None else src.glob
        raise SourceError(f"{where}: {pattern} matches no file")
    if src.type == "text":
        return read_text_files(files, src, where, workspace)
    if src.type == "jsonl":
        return read_jsonl(files, src, where, workspace)
    if src.type == "parquet":
        return read_parquet(files, src, where, workspace)
    if src.type == "pydoc-topics":
        return read_pydoc_topics(files, src, where, workspace)
    if src.type == "disk":
        from .paths import resolve_path

        p = Path(resolve_path(src.path))
        return read_disk(p if p.is_absolute() else workspace / p, src, where, workspace)
    if src.type == "hub":
        return read_hub(src, where)
    raise SourceError(f"{where}: unknown source type {src.type!r}")


def plan_shards(src: Any, files: list[Path], workspace: Path, where: str, shard_bytes: int) -> list[Shard]:
    """Split the source into shards (see ``shards.py``); boundaries never depend on the worker count.

    Plain ``.jsonl`` files larger than a shard are cut into byte ranges and Parquet files into
    row-group ranges, so one big file still spreads over every worker; ``.gz`` files, text files
    and small files are whole pieces, packed in order. A hub stream gives one shard per
    ``IterableDataset`` shard; ``disk`` and ``pydoc-topics`` sources are one shard.
    ``max_documents`` (read the first N) makes the source one shard: where the N-th document falls
    is only known by reading in order.
    """
    settings = {k: v for k, v in src.model_dump(mode="json").items() if k != "weight"}
    if src.type == "hub":
        n = 1 if src.max_documents is not None else hub_shards(src, where)
        return pack([Piece("", i, n, 1) for i in range(n)], 1, settings, workspace)
    if src.type in ("disk", "pydoc-topics") or src.max_documents is not None:
        return pack([Piece(str(f), 0, None, 0) for f in files] or [Piece("", 0, None, 0)], 1 << 62, settings, workspace)
    pieces: list[Piece] = []
    for f in files:
        try:
            size = f.stat().st_size
        except OSError as e:
            raise SourceError(f"{where}: cannot read {_rel(f, workspace)}: {e.strerror or e}") from None
        if src.type == "jsonl" and f.suffix != ".gz" and size > shard_bytes:
            pieces += [Piece(str(f), a, min(a + shard_bytes, size), min(shard_bytes, size - a))
                       for a in range(0, size, shard_bytes)]
        elif src.type == "parquet":
            pieces += _parquet_pieces(f, size, shard_bytes, where, workspace)
        else:
            pieces.append(Piece(str(f), 0, None, size))
    return pack(pieces, shard_bytes, settings, workspace)


def _parquet_pieces(f: Path, size: int, shard_bytes: int, where: str, workspace: Path) -> list[Piece]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(f).metadata
    except (OSError, pa.ArrowException) as e:
        raise SourceError(f"{where}: {_rel(f, workspace)} is not a readable Parquet file: {e}") from None
    n = meta.num_row_groups
    if n <= 1 or size <= shard_bytes:
        return [Piece(str(f), 0, None, size)]
    out, a, acc = [], 0, 0
    for g in range(n):
        rg = meta.row_group(g)
        # bytes on disk (the shard size measures input read), from the column chunks' compressed sizes
        acc += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns)) or rg.total_byte_size
        if acc >= shard_bytes or g == n - 1:
            out.append(Piece(str(f), a, g + 1, acc))
            a, acc = g + 1, 0
    return out


def _shard_documents(src: Any, shard: Shard, workspace: Path, where: str) -> Iterator[Doc]:
    files = [Path(p.file) for p in shard.pieces]
    ranges = [(p.start, p.stop) for p in shard.pieces]
    if src.type == "jsonl":
        return read_jsonl(files, src, where, workspace, ranges)
    if src.type == "parquet":
        return read_parquet(files, src, where, workspace, ranges)
    if src.type == "hub":
        p = shard.pieces[0]
        return read_hub(src, where, (p.start, p.stop or 1))
    return iter_documents(src, [f for f in files if str(f)], workspace, where)


def run_shard(src: Any, shard: Shard, workspace: Path, where: str, store_root: Path) -> dict[str, Any]:
    """Read, clean, filter and dedup one shard into the store; returns its record.

    Runs in a worker process. A bad input comes back as ``{"error": message}`` (one line naming
    file and line) rather than an exception, so nothing depends on pickling exception types.
    """
    store = ShardStore(store_root)
    docs_path, _ = store.paths(shard.ident)
    tmp = docs_path.with_name(f"{docs_path.name}.tmp{os.getpid()}")
    flt = Filter.from_spec(src.filters)
    writer = DocsWriter(tmp)
    read = kept = 0
    read_languages: Counter[str] = Counter()
    try:
        for text, lang, _origin in _shard_documents(src, shard, workspace, where):
            if src.max_documents is not None and read >= src.max_documents:
                break
            read += 1
            read_languages[lang] += 1
            res = flt.apply(text, lang)
            if res is not None:
                writer.add(res[0], lang, res[1], res[2])
                kept += 1
        writer.close()
    except SourceError as e:
        writer.close()
        tmp.unlink(missing_ok=True)
        return {"error": str(e)}
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, docs_path)
    record = {"index": shard.index, "read": read, "kept": kept, "dropped": dict(flt.counts),
              "read_languages": dict(read_languages)}
    store.put_record(shard.ident, record)
    return record


class DocsWriter:
    """Streams kept documents into an Arrow IPC file in bounded batches."""

    def __init__(self, path: Path) -> None:
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_file(self.sink, SCHEMA)
        self.cols: tuple[list, list, list, list] = ([], [], [], [])
        self.pending = 0

    def add(self, text: str, language: str, hi: int, lo: int) -> None:
        """Queue one document."""
        for col, v in zip(self.cols, (text, language, hi, lo)):
            col.append(v)
        self.pending += len(text)
        if len(self.cols[0]) >= BATCH_DOCS or self.pending >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write queued documents as one record batch."""
        if self.cols[0]:
            self.writer.write_batch(pa.record_batch([pa.array(c, type=t.type) for c, t in zip(self.cols, SCHEMA)], schema=SCHEMA))
            self.cols = ([], [], [], [])
            self.pending = 0

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self.writer.close()
        self.sink.close()


def _batch_ends(char_lengths: list[int]) -> list[int]:
    """Record-batch boundaries exactly as :class:`DocsWriter` cuts them (``BATCH_DOCS`` documents or
    ``BATCH_BYTES`` characters), so a merged file has the same bytes as a one-pass write."""
    ends, n, pending = [], 0, 0
    for i, c in enumerate(char_lengths):
        n += 1
        pending += c
        if n >= BATCH_DOCS or pending >= BATCH_BYTES:
            ends.append(i + 1)
            n = pending = 0
    if n:
        ends.append(len(char_lengths))
    return ends


def _merge(tables: list[pa.Table], dedup: bool, out_path: Path) -> tuple[pa.Table, int]:
    """Concatenate the shards in order, drop documents an earlier shard already kept (each shard is
    deduplicated inside), write ``docs.arrow``; returns (the written table, memory-mapped; cross-shard
    duplicates).

    Record batches are gathered from the shards one at a time (zero-copy slices of the runs of kept
    rows, then one copy into a fresh batch), so the text is copied once on its way into the file,
    never into a filtered table first. (``Table.take`` of the kept rows, tried first, was 3–4× slower.)
    """
    import numpy as np
    import pyarrow.compute as pc

    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    keep = np.arange(table.num_rows)  # row numbers kept, in shard order
    if dedup and len(tables) > 1 and table.num_rows:
        hi = table["h_hi"].to_numpy().astype(np.uint64)
        lo = table["h_lo"].to_numpy().astype(np.uint64)
        keys = np.ascontiguousarray(np.stack([hi, lo], axis=1)).view(np.dtype((np.void, 16))).ravel()
        _, first = np.unique(keys, return_index=True)  # the first occurrence in shard order wins
        keep = np.sort(first)
    dups = int(table.num_rows - len(keep))
    lengths = pc.utf8_length(table["text"]).to_numpy(zero_copy_only=False)[keep] if table.num_rows else keep
    with pa.OSFile(str(out_path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as w:
        a = 0
        for b in _batch_ends(lengths.tolist()):
            rows = keep[a:b]
            runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
            part = pa.concat_tables([table.slice(int(r[0]), len(r)) for r in runs]).combine_chunks()
            # fresh arrays (offsets from 0): the same bytes as a batch built from Python lists
            w.write_batch(pa.record_batch([part.column(c).chunk(0) for c in range(part.num_columns)], schema=SCHEMA))
            a = b
    return pa.ipc.open_file(pa.memory_map(str(out_path))).read_all(), dups


@dataclass
class SourcePlan:
    """A source split into shards: what :func:`build_source` (and the SLURM shard array) runs."""

    src: Any
    where: str  # the prefix of every error message: node, source name and index
    files: list[Path]  # sorted
    shards: list[Shard]


def plan_source(src: Any, index: int, files: list[Path], workspace: Path, node: str,
                shard_mb: float = DEFAULT_SHARD_MB) -> SourcePlan:
    """Check the source has files and split it into shards (:func:`plan_shards`)."""
    where = f"{node}: source {src.name!r} (sources[{index}])"
    if src.type in ("text", "jsonl", "parquet", "pydoc-topics") and not files:
        pattern = src.path if src.path is not None else src.glob
        raise SourceError(f"{where}: {pattern} matches no file")
    files = sorted(files)
    shard_bytes = max(1, int(shard_mb * (1 << 20)))
    return SourcePlan(src, where, files, plan_shards(src, files, workspace, where, shard_bytes))


def merge_source(plan: SourcePlan, store: ShardStore, records: list[dict[str, Any]], out: Path) -> tuple[dict[str, Any], float]:
    """Merge the finished shards (``records`` in shard order) into ``out/docs.arrow`` and write
    ``out/stats.json``; returns (stats, merge seconds)."""
    t_merge = time.time()
    tables = [pa.ipc.open_file(pa.memory_map(str(store.paths(s.ident)[0]))).read_all() for s in plan.shards]
    table, cross_dups = _merge(tables, plan.src.filters.dedup, out / DOCS_FILE)
    merge_secs = time.time() - t_merge
    del tables
    stats = _source_stats(plan.src, plan.files, records, table, cross_dups, plan.where)
    del table
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats, merge_secs


def run_summary(plan: SourcePlan, redone: int, workers: int, secs: float, merge_secs: float) -> dict[str, Any]:
    """The run's manifest metadata (shards redone and reused, workers, seconds, MB/s): never output bytes."""
    # input bytes are the files' sizes; a hub stream's size is unknown here (its pieces count 1 each)
    in_bytes = sum(s.nbytes for s in plan.shards) if plan.src.type != "hub" else None
    return dict(shards=len(plan.shards), shards_redone=redone, shards_reused=len(plan.shards) - redone, workers=workers,
                seconds=round(secs, 3), merge_seconds=round(merge_secs, 3), input_bytes=in_bytes,
                input_mb_per_s=in_bytes / secs / 1e6 if secs > 0 and in_bytes else None)


def build_source(src: Any, index: int, files: list[Path], workspace: Path, out: Path, node: str,
                 progress: Callable[..., None], *, run_dir: Path | None = None, fresh: bool = False,
                 workers: int | None = None,
                 shard_mb: float = DEFAULT_SHARD_MB, log: Callable[[str], None] | None = None,
                 run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Clean, filter and dedup one source into ``out/docs.arrow`` (+ ``stats.json``); returns its statistics.

    The source is split into shards (:func:`plan_shards`) that ``workers`` processes read in
    parallel; every decision about a document depends only on the document (and, for dedup, on the
    documents before it in source order), so the output bytes are the same for any worker count.
    Finished shards are kept under ``run_dir`` (the node's run directory; the caller holds its lock)
    and reused by the next run: after a kill only unfinished shards are read again; ``fresh``
    (``--force``) forgets them first. Without ``run_dir`` (tests, scripts) a temporary directory is
    used and removed. ``run_info`` (if given) receives the run's metadata
    (shards, shards redone and reused, workers, seconds, MB/s): manifest material, never output bytes.
    """
    workers = max(1, workers or 1)
    t0 = time.time()
    plan = plan_source(src, index, files, workspace, node, shard_mb)
    tmp_root = None
    if run_dir is None:
        tmp_root = Path(tempfile.mkdtemp(prefix=".shards-", dir=out.parent))
    store = open_store((run_dir / "shards") if run_dir is not None else tmp_root, fresh)
    try:
        records, redone = _run_shards(src, plan.shards, store, workspace, plan.where, workers, progress, log)
        stats, merge_secs = merge_source(plan, store, records, out)
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    secs = time.time() - t0
    read = stats["documents_read"]
    progress(read, read, desc=f"{src.name}: done", kept=stats["documents"])
    if run_info is not None:  # for the manifest only: out/stats.json is in the output digest
        run_info.update(run_summary(plan, redone, workers, secs, merge_secs))
    return stats


def open_store(root: Path, fresh: bool = False) -> ShardStore:
    """The shard store at ``root``, swept of half-written shards (the run-dir lock says none is
    still writing); ``fresh`` (``--force``) empties it."""
    store = ShardStore(root)
    store.sweep_temps()
    if fresh:
        store.clear()
    return store


def _run_shards(src: Any, shards: list[Shard], store: ShardStore, workspace: Path, where: str, workers: int,
                progress: Callable[..., None], log: Callable[[str], None] | None) -> tuple[list[dict[str, Any]], int]:
    """Records of every shard in order, running the unfinished ones on ``workers`` processes;
    returns (records, how many shards ran)."""
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for s in shards:
        rec = store.get(s.ident)
        if rec is not None:
            records[s.index] = rec
        else:
            todo.append(s)
    if log:
        log(f"{src.name}: {len(shards)} shards, {len(shards) - len(todo)} finished earlier, {len(todo)} to run "
            f"on {min(workers, max(1, len(todo)))} worker(s)")
    total_bytes = sum(s.nbytes for s in shards) or None
    done_bytes = sum(s.nbytes for s in shards if s.index in records)
    t0 = time.time()

    def finished(s: Shard, rec: dict[str, Any]) -> None:
        nonlocal done_bytes
        if "error" in rec:
            raise SourceError(rec["error"])
        records[s.index] = rec
        done_bytes += s.nbytes
        if log:
            log(f"{src.name}: shard {s.index + 1}/{len(shards)} done ({rec['read']} read, {rec['kept']} kept)")
        progress(done_bytes if total_bytes else len(records), total_bytes or len(shards), desc=f"{src.name}: read",
                 shards=f"{len(records)}/{len(shards)}", mb_per_s=round((done_bytes / 1e6) / max(time.time() - t0, 1e-9), 1))

    # on an error or Ctrl-C: start no new shard; those running finish and stay in the store
    with closing(run_shards_forked(src, todo, workspace, where, store.root, workers)) as runs:
        for s, rec in runs:
            finished(s, rec)
    return [records[s.index] for s in shards], len(todo)


def run_shards_forked(src: Any, shards: list[Shard], workspace: Path, where: str, store_root: Path, workers: int,
                      wait_on_stop: bool = True) -> Iterator[tuple[Shard, dict[str, Any]]]:
    """``(shard, record)`` of each of ``shards`` as it finishes, read by :func:`run_shard` on up to
    ``workers`` forked processes (see :func:`~stages.data_lib.shards.run_forked`; use it inside
    ``contextlib.closing``)."""
    if workers > 1 and len(shards) > 1:
        # pyarrow imports pandas on its first list conversion (~0.3-0.5 s): once here, not in every worker
        pa.array([""], type=pa.string())
    calls = [(src, s, workspace, where, store_root) for s in shards]
    with closing(run_forked(run_shard, calls, workers, wait_on_stop=wait_on_stop)) as runs:
        for i, rec in runs:
            yield shards[i], rec


def _source_stats(src: Any, files: list[Path], records: list[dict[str, Any]], table: pa.Table, cross_dups: int,
                  where: str) -> dict[str, Any]:
    import pyarrow.compute as pc

    read = sum(r["read"] for r in records)
    dropped: Counter[str] = Counter({k: 0 for k in records[0]["dropped"]} if records else {})
    read_languages: Counter[str] = Counter()
    for r in records:
        dropped.update(r["dropped"])
        read_languages.update(r["read_languages"])
    dropped["duplicate"] += cross_dups
    kept = table.num_rows
    if kept == 0:
        shown = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in dropped.items() if n) or "none dropped"
        hint = ""
        if dropped.get("language"):
            hint = f"; filters.languages is {list(src.filters.languages or [])} but the documents are tagged {sorted(read_languages)}"
        raise SourceError(f"{where}: no documents left after filters ({read} read: {shown}){hint}"
                          if read else f"{where}: the source holds no documents")
    kept_bytes = int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)
    languages = {k["values"]: k["counts"] for k in pc.value_counts(table["language"]).to_pylist()}
    candidates = kept + dropped["duplicate"]
    return {
        "source": src.name,
        "files": len(files),
        "documents_read": read,
        "documents": kept,
        "bytes": kept_bytes,
        "dropped": dict(dropped),
        "dup_rate": round(dropped["duplicate"] / candidates, 6) if candidates else 0.0,
        "languages": dict(sorted(languages.items())),
    }
