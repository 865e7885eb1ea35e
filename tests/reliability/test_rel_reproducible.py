"""Reproducible rebuilds (finding 8 of the second reliability round): the default pipeline built twice
into two fresh caches must give every node the same output digest (identical bytes).

Nothing is shared between the two builds: every node, from the corpus to the report, is built twice
from nothing and compared. ``pretrain`` publishes only deterministic bytes (issue 13: no TensorBoard
events, curves-only metrics, DCP's save uuid stripped), so its digest — and every key downstream — is
equal.

The model is the e2e test's ``model:e2e`` (``model:tiny`` with fewer steps and samples).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rel_helpers import record

from test_default_target_e2e import Product  # tests/ is on sys.path (see tests/conftest.py)

pytestmark = pytest.mark.slow


def digests(cache: Path) -> dict[str, dict]:
    """node id → its manifest, for every object in ``cache``."""
    out = {}
    for m in (cache / "objects").glob("*/*/manifest.json"):
        d = json.loads(m.read_text())
        out[d["node"]] = d
    return out


def differing(a: dict, b: dict) -> list[str]:
    """Nodes whose output digests differ, each with the files that differ."""
    out = []
    for node in sorted(set(a) | set(b)):
        ma, mb = a.get(node), b.get(node)
        if ma is None or mb is None:
            out.append(f"{node}: built only in {'the first' if mb is None else 'the second'} cache")
        elif ma["output_digest"] != mb["output_digest"]:
            fa = {e["path"]: e["xxh3"] for e in ma["outputs"]}
            fb = {e["path"]: e["xxh3"] for e in mb["outputs"]}
            files = sorted(p for p in set(fa) | set(fb) if fa.get(p) != fb.get(p))
            out.append(f"{node}: {len(files)} files differ: {', '.join(files[:8])}")
    return out


def test_default_target_twice_gives_identical_bytes(tmp_path: Path) -> None:
    builds = []
    for name in ("first", "second"):
        ws = Product(tmp_path / name)
        r = ws.cli()
        assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
        builds.append(digests(ws.root / "cache"))
    a, b = builds
    diff = differing(a, b)
    print(f"\nreproducible rebuild: {len(a)} nodes built twice, {len(diff)} differ")
    for line in diff:
        print("  " + line)
    record("reproducibility", f"default target twice: {len(a)} nodes, identical output digests", not diff,
           rebuilt=len(a), differing=len(diff))
    stages = {n.split(":", 1)[0] for n in a}
    assert {"corpus", "tokenize", "pretrain", "export-aligned", "dpo", "sft", "report"} <= stages, sorted(a)
    assert not diff, "\n".join(diff)
