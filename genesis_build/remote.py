"""Remote cache over any fsspec URL (``s3://bucket/prefix``, ``file:///mnt/shared``, ``gs://`` …).

Layout mirrors the local store: ``<url>/objects/<kk>/<key>/manifest.json`` and ``…/data/<files>``.
Push uploads the data files first and the manifest last (a remote object without a manifest does
not exist). Pull downloads into the local cache's ``tmp/``, verifies every file's size and xxh3
against the manifest, and publishes with the same atomic rename as a local build.

A remote object that fails verification is never used: a warning names the object and the file,
the node is built instead, and the key is remembered in the local cache (``remote-corrupt/<key>``)
so that the next ``push`` from this cache replaces the remote copy instead of skipping it as
"already there". ``cache verify --remote`` rehashes every remote object; ``--repair`` re-uploads a
good local copy or removes the remote object (manifest first) so that it is rebuilt and pushed.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from .cache import DATA, MANIFEST, Cache, CorruptObject, safe_relpath
from .errors import GenesisError
from .keys import digest_file, digest_listing

CORRUPT_DIR = "remote-corrupt"  # under the local cache root: remote objects found corrupt by this cache


class Remote:
    """A remote object store shared by many builders."""

    def __init__(self, url: str, cache: Cache, options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec is a dependency
            raise GenesisError("the remote cache needs fsspec: pip install fsspec") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except (ImportError, ValueError, TypeError) as e:
            raise GenesisError(f"remote cache {url}: {e}") from None
        self.url = url
        self.root = root.rstrip("/")
        self.cache = cache
        self._manifests: dict[str, dict[str, Any] | None] = {}
        # where warnings go (the build UI sets its own); default: one line on stderr
        self.warn: Callable[[str], None] | None = None

    def _obj(self, key: str) -> str:
        return posixpath.join(self.root, "objects", key[:2], key)

    def _warn(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)
        else:
            sys.stderr.write(f"warning: {message}\n")

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

    # ---- remembered corruption (per local cache, survives this process)
    def _marker(self, key: str) -> Path:
        return self.cache.root / CORRUPT_DIR / key

    def known_corrupt(self, key: str) -> bool:
        """Whether this cache found the remote copy of ``key`` corrupt (and has not replaced it yet)."""
        return self._marker(key).exists()

    def _mark_corrupt(self, key: str, reason: str) -> None:
        with contextlib.suppress(OSError):
            self._marker(key).parent.mkdir(parents=True, exist_ok=True)
            self._marker(key).write_text(reason + "\n")

    # ---- transfer
    def _put(self, local: str, remote: str) -> None:
        # fsspec's local filesystem does not create parent directories (unless auto_mkdir): make them,
        # so a file:// URL works as given; object stores treat makedirs as a no-op
        self.fs.makedirs(posixpath.dirname(remote), exist_ok=True)
        self.fs.put_file(local, remote)

    def push(self, key: str, progress: Callable[[str, int, int], None] | None = None, replace: bool = False) -> int:
        """Upload a local object (data first, manifest last); returns 1 if uploaded, 0 if present.

        A remote copy this cache found corrupt (or ``replace``) is overwritten: its manifest is
        removed first, so no reader ever sees the new manifest with old data or the reverse.
        """
        replace = replace or self.known_corrupt(key)
        if self.has(key) and not replace:
            return 0
        m = self.cache.manifest(key)
        if m is None:
            raise GenesisError(f"cannot push {key}: not in the local cache")
        obj = self._obj(key)
        if replace:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(posixpath.join(obj, MANIFEST))
            self._manifests.pop(key, None)
        data = self.cache.data_dir(key)
        total = sum(e["size"] for e in m["outputs"])
        done = 0
        for e in m["outputs"]:
            self._put(str(data / e["path"]), posixpath.join(obj, DATA, e["path"]))
            done += e["size"]
            if progress:
                progress(m.get("node", key), done, total)
        self.fs.makedirs(obj, exist_ok=True)
        with self.fs.open(posixpath.join(obj, MANIFEST), "wb") as f:
            f.write(json.dumps(m, indent=1, sort_keys=True).encode())
        self._manifests[key] = m
        with contextlib.suppress(OSError):
            self._marker(key).unlink()
        return 1

    def _fetch(self, key: str, m: dict[str, Any], data_dir: Path, progress: Callable[[str, int, int], None] | None) -> None:
        """Download every listed file into ``data_dir`` and check its size and xxh3 (names the file)."""
        total = sum(e.get("size", 0) for e in m.get("outputs", []))
        done = 0
        for e in m.get("outputs", []):
            rel = e.get("path", "")
            if not safe_relpath(rel):
                raise CorruptObject(f"manifest path {rel!r} escapes the object")
            dest = data_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(posixpath.join(self._obj(key), DATA, rel), str(dest))
            except FileNotFoundError:
                raise CorruptObject(f"{DATA}/{rel}: missing") from None
            size = dest.stat().st_size
            if size != e.get("size"):
                raise CorruptObject(f"{DATA}/{rel}: size {size} != {e.get('size')}")
            if digest_file(dest) != e.get("xxh3"):
                raise CorruptObject(f"{DATA}/{rel}: content digest mismatch")
            done += size
            if progress:
                progress(m.get("node", key), done, total)

    def pull(self, key: str, progress: Callable[[str, int, int], None] | None = None) -> bool:
        """Download, verify and publish a remote object locally; False if it failed verification
        (after a warning naming the object and the file; the next push from this cache replaces it)."""
        m = self.manifest(key)
        if m is None:
            return False
        tmp = self.cache.new_tmp(key)
        try:
            self._fetch(key, m, tmp / DATA, progress)
            self.cache.publish_verified(tmp, key, m)
            return True
        except CorruptObject as e:
            self.cache.discard(tmp)
            reason = str(e).removeprefix(f"object {key}: ")
            self._mark_corrupt(key, reason)
            self._warn(f"remote object {key} ({m.get('node', '?')}) is corrupt: {reason} "
                       f"(in {posixpath.join(self.url, 'objects', key[:2], key)}); not used: it is built instead and "
                       "the next push from this cache replaces it (or run `genesis-build cache verify --remote --repair`)")
            return False
        except BaseException:
            self.cache.discard(tmp)
            raise


    # ---- verification
    def keys(self) -> list[str]:
        """Keys of every remote object that has a manifest file."""
        found = self.fs.glob(posixpath.join(self.root, "objects", "*", "*", MANIFEST))
        return sorted(posixpath.basename(posixpath.dirname(p)) for p in found)

    def verify(self, key: str) -> list[str]:
        """Download and rehash one remote object; its problems (empty when intact)."""
        self._manifests.pop(key, None)
        m = self.manifest(key)
        if m is None:
            return ["manifest unreadable"]
        if m.get("key") != key:
            return [f"manifest names key {m.get('key')}"]
        scratch = self.cache.new_tmp(f"verify-{key}")
        try:
            self._fetch(key, m, scratch / DATA, None)
        except CorruptObject as e:
            return [str(e)]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if digest_listing(m.get("outputs", [])) != m.get("output_digest"):
            return ["output digest does not match the file list"]
        return []

    def remove(self, key: str) -> None:
        """Delete a remote object, manifest first (from then on it does not exist for any reader)."""
        obj = self._obj(key)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(posixpath.join(obj, MANIFEST))
        self._manifests.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(obj, recursive=True)


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


def verify_remote(remote: Remote, repair: bool, report: Callable[[str, str, list[str], str], None]) -> tuple[int, int]:
    """Rehash every remote object; with ``repair`` re-upload a good local copy of a corrupt one, or
    remove it so that the next build rebuilds and pushes it. ``report(key, node, problems, action)``
    is called per corrupt object; returns (objects checked, corrupt)."""
    keys = remote.keys()
    bad = 0
    for key in keys:
        problems = remote.verify(key)
        if not problems:
            continue
        bad += 1
        node = (remote.manifest(key) or {}).get("node", "?")
        action = "kept (run with --repair to fix)"
        if repair:
            if remote.cache.has(key) and not remote.cache.verify(key):
                remote.push(key, replace=True)
                action = "re-uploaded from the local cache"
            else:
                remote.remove(key)
                action = "removed (the next build rebuilds and pushes it)"
        else:
            remote._mark_corrupt(key, "; ".join(problems))
        report(key, str(node), problems, action)
    return len(keys), bad
