"""Digest memo: (path, inode, size, mtime_ns, ctime_ns) → xxh3, in a per-workspace sqlite DB.

A no-op status then reads no file contents; a ``touch`` changes mtime, so the file is rehashed
once, but since the digest is unchanged no key changes and nothing reruns.

Like git's index, two things guard against edits a stat signature cannot see: ``ctime`` is part of
the signature (``cp -p``, ``rsync -t`` or ``touch -d`` can set mtime back, nothing can set ctime
back), and a signature younger than ``RACY_NS`` when it is recorded is not memoised, because a
same-size edit within the same timestamp tick would leave it unchanged.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from .errors import GenesisError
from .keys import digest_file

RACY_NS = 2_000_000_000  # coarse-timestamp filesystems tick in 1-2 s


def stat_signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must change when a file's content changes: inode, size, mtime and ctime (ns)."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def is_racy(sig: tuple[int, ...] | list[int], now_ns: int | None = None, window_ns: int = RACY_NS) -> bool:
    """True when the file changed too recently for its signature to vouch for its content."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - max(sig[2], sig[3]) < window_ns


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    cols = [r[1] for r in db.execute("PRAGMA table_info(digests)")]
    if cols and "ctime_ns" not in cols:  # written by an older version: the memo is only a cache
        db.execute("DROP TABLE digests")
    db.execute(
        "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, inode INTEGER, size INTEGER,"
        " mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT)"
    )
    # node → key, valid while the fingerprint of the node's key material without file digests plus
    # its files' stat signatures is unchanged (see Engine.node_key)
    db.execute("CREATE TABLE IF NOT EXISTS keymemo (node TEXT PRIMARY KEY, fp TEXT, key TEXT)")
    return db


def open_db(path: Path) -> sqlite3.Connection:
    """Open the state DB; a file that is not a database is moved aside (it only memoises) and
    recreated, and a disk that cannot hold it is one clear error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path)
    except sqlite3.DatabaseError as e:
        if "not a database" not in str(e) and "malformed" not in str(e):
            raise GenesisError(f"{path}: cannot open the state DB: {e} (is the disk full or read-only?)") from None
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    import sys

    print(f"warning: {path} was not a valid database; moved it to {aside.name} and started a new one "
          "(it only memoises file digests and last builds)", file=sys.stderr)
    try:
        return _connect(path)
    except sqlite3.DatabaseError as e:
        raise GenesisError(f"{path}: cannot create the state DB: {e} (is the disk full or read-only?)") from None


class StateDB:
    """Thread-safe digest memo; writes are committed per call so a crash loses nothing earlier."""

    def __init__(self, path: Path, racy_ns: int = RACY_NS) -> None:
        self.path = path
        self.racy_ns = racy_ns
        self._lock = threading.Lock()
        self._db = open_db(path)
        self.hashed = 0  # files whose content was read in this process (for tests/benchmarks)

    def digest(self, path: Path) -> str:
        """Content digest of ``path``, reusing the memo when its stat signature is unchanged."""
        sig = stat_signature(os.stat(path))
        key = str(path)
        with self._lock:
            row = self._db.execute(
                "SELECT inode, size, mtime_ns, ctime_ns, digest FROM digests WHERE path=?", (key,)
            ).fetchone()
        if row and tuple(row[:4]) == sig:
            return row[4]
        d = digest_file(path)
        self.hashed += 1
        if not is_racy(sig, window_ns=self.racy_ns):
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?,?)", (key, *sig, d))
        return d

    def digest_many(self, paths: list[Path] | list[str],
                    sigs: dict[str, tuple[int, int, int, int]] | None = None) -> dict:
        """Digest several files in one transaction (fast for thousands of files).

        ``sigs`` are stat signatures already taken (by the directory listing, before any content
        is read), keyed by ``str(path)``; files without one are stat'ed here. Returns
        ``{path: digest}`` keyed by the objects given."""
        keys = [str(p) for p in paths]
        rows: dict[str, tuple] = {}
        with self._lock:
            for i in range(0, len(keys), 900):
                chunk = keys[i : i + 900]
                q = "SELECT path, inode, size, mtime_ns, ctime_ns, digest FROM digests WHERE path IN (%s)" % ",".join("?" * len(chunk))
                for r in self._db.execute(q, chunk):
                    rows[r[0]] = r
        out: dict = {}
        todo: list[tuple[str, tuple[int, int, int, int], Path | str]] = []
        known = sigs or {}
        for p, key in zip(paths, keys):
            sig = known.get(key) or stat_signature(os.stat(p))
            r = rows.get(key)
            if r and r[1:5] == sig:
                out[p] = r[5]
            else:
                todo.append((key, sig, p))
        if todo:
            if len(todo) > 8:  # file reads release the GIL: overlap I/O and hashing
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
                    digests = list(pool.map(lambda t: digest_file(t[2]), todo))
            else:
                digests = [digest_file(t[2]) for t in todo]
            fresh = []
            now = time.time_ns()
            for (key, sig, p), d in zip(todo, digests):
                self.hashed += 1
                out[p] = d
                if not is_racy(sig, now, self.racy_ns):
                    fresh.append((key, *sig, d))
            from . import faults

            with self._lock:
                faults.point("state.write")
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?,?)", fresh)
                self._db.execute("COMMIT")
        return out

    def memo_keys(self, nodes: list[str]) -> dict[str, tuple[str, str]]:
        """node → (fingerprint, key) recorded by ``put_keys``."""
        out: dict[str, tuple[str, str]] = {}
        with self._lock:
            for i in range(0, len(nodes), 900):
                chunk = nodes[i : i + 900]
                q = "SELECT node, fp, key FROM keymemo WHERE node IN (%s)" % ",".join("?" * len(chunk))
                for r in self._db.execute(q, chunk):
                    out[r[0]] = (r[1], r[2])
        return out

    def put_keys(self, rows: list[tuple[str, str, str]]) -> None:
        """Record (node, fingerprint, key) rows in one transaction (a memo: never fsync'd)."""
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO keymemo VALUES (?,?,?)", rows)
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


class Refs:
    """Per-workspace record of the last build of each node (for reasons, ``why`` and gc roots).

    Stored in the same sqlite file as the digest memo; each node's row is written as soon as the
    node finishes (not at the end of the run), so an interrupted build keeps what it did.
    """

    def __init__(self, db: StateDB) -> None:
        self.db = db
        with db._lock:
            db._db.execute(
                "CREATE TABLE IF NOT EXISTS refs (node TEXT PRIMARY KEY, key TEXT, material TEXT,"
                " source_hash TEXT, version INTEGER, output_digest TEXT, built_at REAL)"
            )

    def head(self, node: str) -> tuple[str, str, int, str] | None:
        """(key, source_hash, version, output_digest) of the last build of ``node``, without
        parsing its key material (which lists every file input)."""
        with self.db._lock:
            return self.db._db.execute(
                "SELECT key, source_hash, version, output_digest FROM refs WHERE node=?", (node,)
            ).fetchone()

    def get(self, node: str) -> dict | None:
        """The last recorded build of ``node``."""
        import json

        with self.db._lock:
            row = self.db._db.execute(
                "SELECT key, material, source_hash, version, output_digest, built_at FROM refs WHERE node=?", (node,)
            ).fetchone()
        if not row:
            return None
        return {"key": row[0], "material": json.loads(row[1]), "source_hash": row[2], "version": row[3],
                "output_digest": row[4], "built_at": row[5]}

    def put(self, node: str, key: str, material: dict, source_hash: str, version: int, output_digest: str) -> None:
        """Record that ``node`` now points at ``key``."""
        import json
        import time

        with self.db._lock:
            self.db._db.execute(
                "INSERT OR REPLACE INTO refs VALUES (?,?,?,?,?,?,?)",
                (node, key, json.dumps(material), source_hash, version, output_digest, time.time()),
            )

    def all(self) -> dict[str, str]:
        """node → key for every recorded node."""
        with self.db._lock:
            return dict(self.db._db.execute("SELECT node, key FROM refs").fetchall())
