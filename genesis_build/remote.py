"""Remote cache over any fsspec URL (``s3://bucket/prefix``, ``file:///mnt/shared``, ``gs://`` …).

Layout mirrors the local store: ``<url>/objects/<kk>/<key>/manifest.json`` and ``…/data/<files>``.
Push uploads the data files first and the manifest last (a remote object without a manifest does
not exist). Pull downloads into the local cache's ``tmp/``, verifies every file's size and xxh3
against the manifest, and publishes with the same atomic rename as a local build; a mismatched
object is rejected (and the node is built instead).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Callable, Iterable

from .cache import DATA, MANIFEST, Cache, CorruptObject, safe_relpath
from .errors import GenesisError


class Remote:
    """A remote object store shared by many builders."""

    def __init__(self, url: str, cache: Cache, options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec is a dependency
            raise GenesisError("the remote cache needs fsspec: pip install fsspec") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except (ImportError, ValueError) as e:
            raise GenesisError(f"remote cache {url}: {e}") from None
        self.url = url
        self.root = root.rstrip("/")
        self.cache = cache
        self._manifests: dict[str, dict[str, Any] | None] = {}

    def _obj(self, key: str) -> str:
        return posixpath.join(self.root, "objects", key[:2], key)

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The remote manifest of ``key`` or None (memoised for this run)."""
        if key not in self._manifests:
            try:
                with self.fs.open(posixpath.join(self._obj(key), MANIFEST), "rb") as f:
                    self._manifests[key] = json.loads(f.read())
            except (FileNotFoundError, OSError, ValueError):
                self._manifests[key] = None
        return self._manifests[key]

    def has(self, key: str) -> bool:
        """Whether a complete remote object exists."""
        return self.manifest(key) is not None

    def output_digest(self, key: str) -> str | None:
        """Output digest of a remote object (lets ``--dry-run`` compute downstream keys)."""
        m = self.manifest(key)
        return m.get("output_digest") if m else None

    def push(self, key: str, progress: Callable[[str, int, int], None] | None = None) -> int:
        """Upload a local object (data first, manifest last); returns 1 if uploaded, 0 if present."""
        if self.has(key):
            return 0
        m = self.cache.manifest(key)
        if m is None:
            raise GenesisError(f"cannot push {key}: not in the local cache")
        data = self.cache.data_dir(key)
        total = sum(e["size"] for e in m["outputs"])
        done = 0
        for e in m["outputs"]:
            self.fs.put_file(str(data / e["path"]), posixpath.join(self._obj(key), DATA, e["path"]))
            done += e["size"]
            if progress:
                progress(m.get("node", key), done, total)
        with self.fs.open(posixpath.join(self._obj(key), MANIFEST), "wb") as f:
            f.write(json.dumps(m, indent=1, sort_keys=True).encode())
        self._manifests[key] = m
        return 1

    def pull(self, key: str, progress: Callable[[str, int, int], None] | None = None) -> bool:
        """Download, verify and publish a remote object locally; False if it failed verification."""
        m = self.manifest(key)
        if m is None:
            return False
        tmp = self.cache.new_tmp(key)
        try:
            total = sum(e["size"] for e in m["outputs"])
            done = 0
            for e in m["outputs"]:
                if not safe_relpath(e["path"]):
                    raise CorruptObject(f"object {key}: manifest path {e['path']!r} escapes the object")
                dest = tmp / DATA / e["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(posixpath.join(self._obj(key), DATA, e["path"]), str(dest))
                done += e["size"]
                if progress:
                    progress(m.get("node", key), done, total)
            self.cache.publish_verified(tmp, key, m)
            return True
        except CorruptObject:
            self.cache.discard(tmp)
            return False
        except BaseException:
            self.cache.discard(tmp)
            raise


def transfer(remote: Remote, cache: Any, keys: Iterable[str], action: str) -> int:
    """``cache push|pull``: push each of ``keys`` the local cache has, or pull each one it lacks and the
    remote has; returns how many objects moved."""
    n = 0
    for key in keys:
        if action == "push" and cache.has(key):
            n += remote.push(key)
        elif action == "pull" and not cache.has(key) and remote.has(key):
            n += bool(remote.pull(key))
    return n
