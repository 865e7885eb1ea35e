"""One corpus source → ``docs.arrow`` (cleaned, filtered, deduplicated) + ``stats.json``.

Readers stream documents as ``(text, language, origin)``; ``origin`` ("data/a.jsonl:12") is only for
error messages. Every bad input is one GenesisError naming the node, the source and the field or
file. The output is an Arrow IPC file (memory-mapped by the mixture) with columns ``text``,
``language`` and the document hash halves ``h_hi``/``h_lo`` (xxh3-128 of the cleaned text).
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from genesis_build.errors import GenesisError

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


def _lines(path: Path, origin: str, where: str) -> Iterator[bytes]:
    """Raw lines of a (possibly gzipped) file, streamed: a JSONL file may be larger than memory."""
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise SourceError(f"{where}: cannot read {origin}: {e.strerror or e}") from None
    try:
        with f:
            yield from f
    except (OSError, EOFError) as e:
        raise SourceError(f"{where}: cannot read {origin}: {getattr(e, 'strerror', None) or e}") from None


def read_jsonl(files: list[Path], src: Any, where: str, workspace: Path) -> Iterator[Doc]:
    """One document per JSON line (``.jsonl`` or ``.jsonl.gz``); blank lines are skipped."""
    tf, lf = src.text_field, src.language_field
    for f in files:
        rel = _rel(f, workspace)
        for n, raw in enumerate(_lines(f, rel, where), 1):
            origin = f"{rel}:{n}"
            line = _decode(raw, origin, where)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{where}: {origin}: not valid JSON ({e.msg}); every line must be one object") from None
            body = _as_text(_field(rec, tf, origin, where, "text_field"), origin, where, tf)
            lang = str(_field(rec, lf, origin, where, "language_field")) if lf else src.language
            yield body, lang, origin


def _check_columns(names: list[str], src: Any, origin: str, where: str) -> None:
    for field, label in ((src.text_field, "text_field"), (src.language_field, "language_field")):
        if field is not None and field not in names:
            raise SourceError(f"{where}: {origin} has no column {field!r} ({label}); columns: {', '.join(names)}")


def read_parquet(files: list[Path], src: Any, where: str, workspace: Path) -> Iterator[Doc]:
    """Rows of Parquet files, reading only the text (and language) columns."""
    import pyarrow.parquet as pq

    cols = [src.text_field] + ([src.language_field] if src.language_field else [])
    for f in files:
        rel = _rel(f, workspace)
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as e:
            raise SourceError(f"{where}: {rel} is not a readable Parquet file: {e}") from None
        _check_columns(pf.schema_arrow.names, src, rel, where)
        row = 0
        for batch in pf.iter_batches(columns=cols, batch_size=BATCH_DOCS):
            texts = batch.column(0).to_pylist()
            langs = batch.column(1).to_pylist() if src.language_field else [src.language] * len(texts)
            for t, lang in zip(texts, langs):
                origin = f"{rel} row {row}"
                yield _as_text(t, origin, where, src.text_field), str(lang), origin
                row += 1


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


def read_hub(src: Any, where: str) -> Iterator[Doc]:
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
    names = list(ds.features) if getattr(ds, "features", None) else None
    if names is not None:
        _check_columns(names, src, src.dataset, where)
    yield from _iter_dataset(ds, src, src.dataset, where)


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


def build_source(src: Any, index: int, files: list[Path], workspace: Path, out: Path, node: str,
                 progress: Callable[..., None]) -> dict[str, Any]:
    """Clean, filter and dedup one source into ``out/docs.arrow``; returns its statistics."""
    where = f"{node}: source {src.name!r} (sources[{index}])"
    flt = Filter.from_spec(src.filters)
    writer = DocsWriter(out / DOCS_FILE)
    read = kept = kept_bytes = 0
    languages: Counter[str] = Counter()
    read_languages: Counter[str] = Counter()  # before filters, for the language-filter hint
    t0 = last = time.time()
    try:
        for text, lang, _origin in iter_documents(src, sorted(files), workspace, where):
            if src.max_documents is not None and read >= src.max_documents:
                break
            read += 1
            read_languages[lang] += 1
            res = flt.apply(text, lang)
            if res is not None:
                body, hi, lo = res
                writer.add(body, lang, hi, lo)
                kept += 1
                kept_bytes += len(body.encode("utf-8", "surrogatepass"))
                languages[lang] += 1
            now = time.time()
            if now - last > 0.5:
                last = now
                progress(read, src.max_documents, desc=f"{src.name}: read", kept=kept, docs_per_s=round(read / (now - t0)))
    finally:
        writer.close()
    if kept == 0:
        dropped = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in flt.counts.items() if n) or "none dropped"
        hint = ""
        if flt.counts["language"]:
            hint = f"; filters.languages is {flt.languages} but the documents are tagged {sorted(read_languages)}"
        raise SourceError(f"{where}: no documents left after filters ({read} read: {dropped}){hint}"
                          if read else f"{where}: the source holds no documents")
    candidates = kept + flt.counts["duplicate"]
    stats = {
        "source": src.name,
        "files": len(files),
        "documents_read": read,
        "documents": kept,
        "bytes": kept_bytes,
        "dropped": dict(flt.counts),
        "dup_rate": round(flt.counts["duplicate"] / candidates, 6) if candidates else 0.0,
        "languages": dict(sorted(languages.items())),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    progress(read, read, desc=f"{src.name}: done", kept=kept)
    return stats
