"""Canonical JSON and xxh3_128 digests: node keys, file and directory digests."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import xxhash

CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, integral floats written as ints."""
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normalize(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    return value


def digest_json(value: Any) -> str:
    """xxh3_128 hex of the canonical JSON of ``value``."""
    return xxhash.xxh3_128_hexdigest(canonical_json(value).encode())


_buffers = threading.local()


def digest_file(path: Path | str) -> str:
    """xxh3_128 hex of a file's bytes, streamed through one reused buffer per thread.

    ``readinto`` a reused buffer is ~4× faster than ``read`` (which allocates a new bytes object per
    chunk): hashing then runs at memory speed, which is what makes a post-``touch`` status cheap.
    """
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(CHUNK)
    view = memoryview(buf)
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def list_files(root: Path) -> list[Path]:
    """Files below ``root``, sorted by relative path. Symlinks are listed too, including symlinks to
    directories (which ``os.walk`` would silently skip), so that callers can refuse them."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out += [Path(dirpath) / d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames):
            out.append(Path(dirpath) / name)
    out.sort(key=lambda p: p.relative_to(root).as_posix())
    return out


def digest_listing(entries: list[dict[str, Any]]) -> str:
    """Digest of a directory from its ``[{path, size, xxh3}]`` listing."""
    return digest_json([[e["path"], e["size"], e["xxh3"]] for e in entries])
