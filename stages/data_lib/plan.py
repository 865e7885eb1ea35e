"""``--dry-run`` planner rows of the data nodes: how much each source holds and how long it will take.

Sizes come from what planning can see without reading content: file sizes for local sources, the
hub's dataset info for hub sources (``hub.resolve``). Documents are known from the dataset card, or
from the last build of the node (its manifest's ``documents_read``). Tokens are estimated at
≈ 4 bytes per token (BPE on web text). Throughput is the last build's measured MB/s of the node
(input bytes over ingestion time, and per worker; a resumed build's figure is not used) and the ETA
divides the size by it.
"""

from __future__ import annotations

import glob as globmod
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.training.planner import duration, human

from . import hub

BYTES_PER_TOKEN = 4.0  # rough BPE average on web text and code; a plan, not a measurement


@dataclass
class Estimate:
    """One source's planned size and speed."""

    documents: int | None
    bytes: int | None
    size_from: str  # "file sizes" | "dataset card" | "file sizes (hub)" | ""
    mb_per_s: float | None  # the last build's measured throughput
    capped: bool = False  # max_documents cut the size
    workers: int | None = None  # worker processes of the build that measured mb_per_s

    @property
    def tokens(self) -> int | None:
        """Estimated tokens (``bytes / BYTES_PER_TOKEN``)."""
        return None if self.bytes is None else int(self.bytes / BYTES_PER_TOKEN)

    @property
    def eta_s(self) -> float | None:
        """Seconds to read the source at the measured rate."""
        if self.bytes is None or not self.mb_per_s:
            return None
        return self.bytes / (self.mb_per_s * 1e6)


def local_bytes(src: Any, workspace: Path) -> int | None:
    """Total size of a local source's files (globs expanded, directories walked); None if none."""
    total, seen = 0, False
    for pattern in src.patterns():
        p = pattern  # patterns() already expanded {stdlib}
        if not os.path.isabs(p):
            p = str(workspace / p)
        for m in globmod.iglob(p, recursive=True) if any(c in p for c in "*?[") else [p]:
            if os.path.isdir(m):
                for root, _, names in os.walk(m):
                    for n in names:
                        total += _size(os.path.join(root, n))
                        seen = True
            elif os.path.isfile(m):
                total += _size(m)
                seen = True
    return total if seen else None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def last_build(view: Any, node: str) -> dict[str, Any] | None:
    """The manifest of ``node``'s last build in this workspace, if still cached."""
    lookup = getattr(view, "lookup", None)
    ref = lookup(node) if lookup else None
    return ref.manifest if ref is not None else None


def estimate(view: Any, src: Any, info: "hub.HubInfo | None") -> Estimate:
    """Size and measured speed of one source of ``view``'s corpus."""
    manifest = last_build(view, f"corpus-source:{view.name}/{src.name}")
    stats = (manifest or {}).get("stats") or {}
    if info is not None:
        docs, size, origin = info.documents, info.bytes, info.size_from
    elif src.type == "hub":  # a local dataset directory given as `dataset`
        docs, size, origin = None, None, ""
    else:
        docs, size, origin = None, local_bytes(src, view.workspace), "file sizes"
    if docs is None and stats.get("documents_read"):  # what the last build read (max_documents already applied)
        docs = int(stats["documents_read"])
    capped = False
    if src.max_documents and docs and docs > src.max_documents:
        if size is not None:
            size = int(size * src.max_documents / docs)
        docs, capped = src.max_documents, True
    rate, workers = None, None
    run = stats.get("run") or {}
    wall = (manifest or {}).get("wall_time_s")
    if run.get("shards_reused"):
        pass  # a resumed build read only part of the source in its time: no rate from it
    elif run.get("input_mb_per_s"):
        rate, workers = float(run["input_mb_per_s"]), run.get("workers")
    elif wall and stats.get("bytes"):  # a hub stream (input size unknown): the kept text over the build's time
        rate = stats["bytes"] / 1e6 / max(float(wall), 1e-3)
    return Estimate(docs, size, origin if size is not None else "", rate, capped, workers)


def fmt_bytes(n: float) -> str:
    """``1.2 GB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def pin_row(src: Any, info: "hub.HubInfo | None") -> tuple[str, str] | None:
    """The ``revision`` row of a hub source: the resolved sha, or why it is unpinned."""
    if info is None:
        return None
    rev = info.revision
    if info.problem:
        state = "unpinned" if info.sha is None else "pinned"
        return "revision", f"{rev} ({state}: {info.problem})"
    if rev == info.sha:
        return "revision", f"{info.sha} (pinned)"
    return "revision", f"{rev} → {info.sha} (pin it: revision = \"{info.sha}\")"


def size_rows(est: Estimate, src: Any) -> list[tuple[str, str]]:
    """Documents / bytes / tokens, throughput and ETA rows of one source."""
    parts = []
    if est.documents is not None:
        parts.append(f"{human(est.documents)} documents")
    elif src.max_documents:
        parts.append(f"≤ {human(src.max_documents)} documents")
    if est.bytes is not None:
        parts.append(fmt_bytes(est.bytes))
        parts.append(f"≈{human(est.tokens or 0)} tokens")
    if not parts:
        parts.append("unknown (no size information offline)" if src.type == "hub" else "unknown")
    origin = f" ({est.size_from}{', max_documents' if est.capped else ''})" if est.size_from else ""
    rows = [("size", ", ".join(parts) + origin)]
    if est.mb_per_s:
        eta = f", ETA {duration(est.eta_s)}" if est.eta_s is not None else ""
        per = (f" with {est.workers} workers, {est.mb_per_s / est.workers:.1f} MB/s per worker" if est.workers and est.workers > 1
               else " with 1 worker" if est.workers == 1 else "")
        rows.append(("speed", f"{est.mb_per_s:.1f} MB/s{per} (last build){eta}"))
    else:
        rows.append(("speed", "not measured yet (no earlier build of this source)"))
    return rows
