"""How a corpus source splits into shards, and where finished shards are kept.

A *shard* is a run of consecutive *pieces* of the source: whole files, byte ranges of a large plain
``.jsonl`` file (a line belongs to the range it starts in), row-group ranges of a Parquet file, or
one ``IterableDataset.shard`` of a hub stream. Shard boundaries depend only on the files (their
sizes and row groups) and ``shard_mb``, never on the number of workers, so the same shards come out
of any run and a finished one can be reused by the next.

Finished shards live in a :class:`ShardStore` (the node's run directory): ``<id>.arrow`` (the
cleaned, filtered, shard-deduplicated documents) then ``<id>.json`` (its counts) written last,
each by temp file + rename, so a kill leaves either a complete shard or none. A shard's id hashes
the source's reader/filter settings and, per piece, the file's workspace-relative path, size,
mtime and range: a file edited in place (new size or mtime) gets new ids, the others keep theirs,
so the rerun after fixing one bad file redoes only that file's shards. This module is stdlib +
xxhash only (``ingest`` imports it; it imports nothing from ``ingest``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import xxhash

SHARD_FORMAT = 1  # bump when a shard's bytes for the same input change
DEFAULT_SHARD_MB = 64.0


@dataclass(frozen=True)
class Piece:
    """Part of one input: ``file`` with ``[start, stop)`` (bytes for jsonl, row groups for parquet,
    ``stop=None``: the whole file), or hub stream shard ``start`` of ``stop`` (``file`` empty)."""

    file: str
    start: int = 0
    stop: int | None = None
    nbytes: int = 0


@dataclass(frozen=True)
class Shard:
    """Consecutive pieces processed by one worker; ``ident`` names its files in the store."""

    index: int
    pieces: tuple[Piece, ...]
    ident: str
    nbytes: int


def default_workers() -> int:
    """All cores this process may use (the CPU affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(spec_value: int | None, cli_value: int | None = None) -> int:
    """Worker processes: ``genesis-build --workers N`` over ``GENESIS_DATA_WORKERS`` (env) over the
    spec's ``workers`` over all cores."""
    if cli_value:
        return max(1, int(cli_value))
    env = os.environ.get("GENESIS_DATA_WORKERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            from genesis_build.errors import GenesisError

            raise GenesisError(f"GENESIS_DATA_WORKERS={env!r} is not a whole number of worker processes") from None
        return max(1, n)
    return max(1, spec_value) if spec_value else default_workers()


def _stat_id(path: str, workspace: Path) -> list[Any]:
    st = os.stat(path)
    try:
        rel = str(Path(path).relative_to(workspace))
    except ValueError:
        rel = path
    return [rel, st.st_size, st.st_mtime_ns]


def pack(pieces: list[Piece], shard_bytes: int, settings: Any, workspace: Path) -> list[Shard]:
    """Group consecutive pieces into shards of about ``shard_bytes`` (a piece is never split here)."""
    groups: list[list[Piece]] = []
    size = 0
    for p in pieces:
        if not groups or size + p.nbytes > shard_bytes and size > 0:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += p.nbytes
    shards = []
    for i, g in enumerate(groups):
        ident_src = [SHARD_FORMAT, settings, [(_stat_id(p.file, workspace) if p.file else None, p.start, p.stop)
                                              for p in g]]
        ident = xxhash.xxh3_128_hexdigest(json.dumps(ident_src, sort_keys=True, default=str).encode())
        shards.append(Shard(i, tuple(g), ident, sum(p.nbytes for p in g)))
    return shards


class ShardStore:
    """Finished shards of one source: ``<id>.arrow`` + ``<id>.json`` (the marker, written last)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def paths(self, ident: str) -> tuple[Path, Path]:
        """(docs, record) of a shard."""
        return self.root / f"{ident}.arrow", self.root / f"{ident}.json"

    def get(self, ident: str) -> dict[str, Any] | None:
        """The record of a finished shard whose docs file is intact (size as recorded), else None."""
        docs, rec = self.paths(ident)
        try:
            r = json.loads(rec.read_text())
            if docs.stat().st_size != r["docs_bytes"]:
                return None
            return r
        except (OSError, ValueError, KeyError):
            return None

    def put_record(self, ident: str, record: dict[str, Any]) -> None:
        """Write the record (the docs file is already in place) atomically: the shard is now finished."""
        docs, rec = self.paths(ident)
        record = {**record, "docs_bytes": docs.stat().st_size}
        tmp = rec.with_name(f"{rec.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(record, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, rec)

    def sweep_temps(self) -> None:
        """Remove temp files of shards a killed run was writing (call only while holding the run dir)."""
        for f in self.root.glob("*.tmp*"):
            f.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every finished shard (``--force``: a fresh run)."""
        for f in self.root.iterdir():
            if f.is_file():
                f.unlink()


def die_with_parent() -> None:
    """Worker initializer: on Linux, get SIGKILL when the parent dies, so a kill -9 of the stage
    leaves no orphaned worker writing into the run directory of the next run."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not glibc Linux: workers then finish their shard and exit with the pool


def run_forked(fn: Callable[..., Any], calls: list[tuple[Any, ...]], workers: int, *,
               initializer: Callable[[], None] = die_with_parent, wait_on_stop: bool = True) -> Iterator[tuple[int, Any]]:
    """``fn(*call)`` for every call, on up to ``workers`` forked processes; yields ``(i, result)`` as
    calls finish (those finishing together in call order). One worker or one call: in this process,
    in order, no pool to start.

    Use it inside ``contextlib.closing``: when the consumer stops (an error, Ctrl-C) no new call
    starts; ``wait_on_stop`` lets the running ones finish (what they wrote stays), else they are
    left to die with this process (their workers have ``PR_SET_PDEATHSIG``).
    """
    if workers <= 1 or len(calls) <= 1:
        for i, call in enumerate(calls):
            yield i, fn(*call)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork: the workers share the parent's imports; spawn would re-import them in every worker
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    pool = ProcessPoolExecutor(max_workers=min(workers, len(calls)), mp_context=ctx, initializer=initializer)
    finished = False
    try:
        pending = {pool.submit(fn, *call): i for i, call in enumerate(calls)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=pending.__getitem__):
                yield pending.pop(fut), fut.result()
        finished = True
    finally:
        pool.shutdown(wait=finished or wait_on_stop, cancel_futures=True)


Progress = Callable[..., None]
