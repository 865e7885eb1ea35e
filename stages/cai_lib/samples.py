"""Per-sample cache: one JSON file per generated sample, addressed by the digest of what it
depends on, under the cache's shared ``samples/cai/`` store.

Each sample is written with temp file + fsync + rename as soon as it is finished, so a crash or a
kill keeps every finished sample and never exposes a half-written one. Unreadable files (a disk
error, a hand edit) are treated as missing and regenerated.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from genesis_build.cache import atomic_write, pid_alive
from genesis_build.keys import digest_json

# Bump when the meaning of a stored sample changes (e.g. how revisions are post-processed).
SAMPLE_FORMAT = 1


def sample_key(kind: str, material: dict[str, Any]) -> str:
    """Digest of a sample's dependencies (``kind`` separates namespaces that share the store)."""
    return digest_json({"format": SAMPLE_FORMAT, "kind": kind, **material})


class SampleStore:
    """A directory of ``<kk>/<key>.json`` sample files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where the sample with this key lives."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored sample, or None when absent or unreadable."""
        path = self.path(key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not (isinstance(value, dict) and value.get("key") == key):
            return None
        try:  # record the reuse in atime (mtime still says when it was written): see `cache gc --keep-days`
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
        except OSError:
            pass
        return value

    def has(self, key: str) -> bool:
        """True when a readable sample exists."""
        return self.get(key) is not None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store one finished sample atomically (the ``key`` is recorded inside for verification)."""
        atomic_write(self.path(key), json.dumps({**value, "key": key}, ensure_ascii=False, sort_keys=True), mode=0o664)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys without a readable sample, in order, without duplicates."""
        seen: set[str] = set()
        out = []
        for k in keys:
            if k not in seen and not self.has(k):
                out.append(k)
            seen.add(k)
        return out

    def clean_temp(self) -> int:
        """Remove temp files left by killed writers; returns how many (best effort)."""
        n = 0
        for p in self.root.glob("*/.*.tmp"):
            try:
                pid = int(p.name.split(".")[-3])
            except (ValueError, IndexError):
                continue
            if not pid_alive(pid):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
        return n

