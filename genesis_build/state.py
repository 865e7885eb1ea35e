"""Digest memo: (path, inode, size, mtime_ns) → xxh3, in a per-workspace sqlite DB.

A no-op status then reads no file contents; a ``touch`` changes mtime, so the file is rehashed
once, but since the digest is unchanged no key changes and nothing reruns.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from .keys import digest_file


class StateDB:
    """Thread-safe digest memo; writes are committed per call so a crash loses nothing earlier."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, inode INTEGER, size INTEGER,"
            " mtime_ns INTEGER, digest TEXT)"
        )
        self.hashed = 0  # files whose content was read in this process (for tests/benchmarks)

    def digest(self, path: Path) -> str:
        """Content digest of ``path``, reusing the memo when its stat signature is unchanged."""
        st = os.stat(path)
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        key = str(path)
        with self._lock:
            row = self._db.execute(
                "SELECT inode, size, mtime_ns, digest FROM digests WHERE path=?", (key,)
            ).fetchone()
        if row and tuple(row[:3]) == sig:
            return row[3]
        d = digest_file(path)
        self.hashed += 1
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?)", (key, *sig, d)
            )
        return d

    def digest_many(self, paths: list[Path]) -> dict[Path, str]:
        """Digest several files in one transaction (fast for thousands of files)."""
        out: dict[Path, str] = {}
        with self._lock:
            rows = {}
            for i in range(0, len(paths), 900):
                chunk = [str(p) for p in paths[i : i + 900]]
                q = "SELECT path, inode, size, mtime_ns, digest FROM digests WHERE path IN (%s)" % ",".join("?" * len(chunk))
                for r in self._db.execute(q, chunk):
                    rows[r[0]] = r
        todo: list[tuple[str, tuple[int, int, int], Path]] = []
        for p in paths:
            st = os.stat(p)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            r = rows.get(str(p))
            if r and tuple(r[1:4]) == sig:
                out[p] = r[4]
            else:
                todo.append((str(p), sig, p))
        if todo:
            if len(todo) > 8:  # file reads release the GIL: overlap I/O and hashing
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
                    digests = list(pool.map(lambda t: digest_file(t[2]), todo))
            else:
                digests = [digest_file(t[2]) for t in todo]
            fresh = []
            for (key, sig, p), d in zip(todo, digests):
                self.hashed += 1
                out[p] = d
                fresh.append((key, *sig, d))
            from . import faults

            with self._lock:
                faults.point("state.write")
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?)", fresh)
                self._db.execute("COMMIT")
        return out

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
