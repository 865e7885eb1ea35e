"""``layout = "auto"`` in a parallel spec: ranks × threads per rank × micro-batch chosen for the machine.

How a step is executed — ranks, threads per rank, micro-batch, and so the gradient accumulation —
does not change the math (the global batch and data order are in the key; DCP reshards), so it is
an execution choice and never part of a key. With ``layout = "auto"``:

- ``genesis-build probe pretrain:<model>`` trains a few steps on every candidate layout of this
  machine (same launcher, FSDP2 + DCP trainer) and records the fastest, with every measurement, in
  ``<workspace>/.genesis/layouts.json`` under a fingerprint of the machine (CPU count, platform,
  torch version) and of the workload (architecture, global batch, vocab);
- the build and ``--dry-run`` use that record; without one they use the default below and say so.

Candidates on one node with gloo: ranks r dividing the CPU count (threads per rank = CPUs / r) ×
micro-batches dividing each rank's share of the batch (the 2 largest). Default when nothing
was measured: one rank with every core and the largest micro-batch ≤ 16 — on the 2-core box gloo's
all-reduce between two 1-thread ranks costs more than two threads in one rank (docs/pretraining-speed.md).
GPU layouts (nccl) are not searched: ``auto`` keeps the spec's ranks and micro-batch there.

No torch here: ``--dry-run`` reads this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RECORD = "layouts.json"
DEFAULT_MAX_MICRO = 16


@dataclass(frozen=True)
class Layout:
    """One execution layout of a training step on one node."""

    nproc_per_node: int
    threads_per_rank: int
    micro_batch_size: int

    def label(self, sequences: int | None = None) -> str:
        """``1 rank × 2 threads, micro 16 × accum 1``."""
        accum = f" × accum {sequences // (self.nproc_per_node * self.micro_batch_size)}" if sequences else ""
        r, t = self.nproc_per_node, self.threads_per_rank
        return f"{r} rank{'s' if r > 1 else ''} × {t} thread{'s' if t > 1 else ''}, micro {self.micro_batch_size}{accum}"


def cpus() -> int:
    """CPUs this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def sequences_per_step(spec: Any) -> int:
    """Sequences in one global batch."""
    return spec.training.global_batch_tokens // spec.architecture.context_length


def candidates(spec: Any, n_cpus: int | None = None) -> list[Layout]:
    """The layouts ``probe`` measures for ``spec`` on a machine with ``n_cpus`` CPUs."""
    n = n_cpus or cpus()
    seqs = sequences_per_step(spec)
    out = []
    for r in _divisors(n):
        if seqs % r:
            continue
        micros = [m for m in _divisors(seqs // r) if m <= 4 * DEFAULT_MAX_MICRO][-2:]
        out += [Layout(r, n // r, m) for m in reversed(micros)]
    return out


def default_layout(spec: Any, n_cpus: int | None = None) -> Layout:
    """Unmeasured choice: one rank with every core, the largest micro-batch ≤ 16 that divides the batch."""
    return layout_for_sequences(sequences_per_step(spec), n_cpus)


def layout_for_sequences(sequences: int, n_cpus: int | None = None) -> Layout:
    """One rank with every core, the largest micro-batch ≤ 16 that divides ``sequences`` per step."""
    micro = max(m for m in _divisors(sequences) if m <= DEFAULT_MAX_MICRO)
    return Layout(1, n_cpus or cpus(), micro)


def finetune_parallel(parallel: Any, batch_size: int) -> Any:
    """The concrete parallel spec of a fine-tuning stage (SFT, DPO) that trains ``batch_size`` sequences a
    step: as written when the layout is given; for ``layout = "auto"`` the unmeasured default (fine-tuning
    runs are short and are not probed)."""
    return apply(parallel, layout_for_sequences(batch_size)) if is_auto(parallel) else parallel


def fingerprint(spec: Any, vocab: int | None) -> str:
    """Machine + workload: a layout measured for one is not evidence for another."""
    import importlib.metadata as md

    try:
        torch_version = md.version("torch")
    except md.PackageNotFoundError:
        torch_version = "?"
    material = {"cpus": cpus(), "machine": platform.machine(), "processor": platform.processor(), "torch": torch_version,
                "architecture": spec.architecture.model_dump(mode="json"),
                "global_batch_tokens": spec.training.global_batch_tokens, "vocab": vocab}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _record_path(workspace: Path | None) -> Path | None:
    return Path(workspace) / ".genesis" / RECORD if workspace is not None else None


def recorded(spec: Any, vocab: int | None, workspace: Path | None) -> dict[str, Any] | None:
    """The probe's record for this machine and workload, if any."""
    path = _record_path(workspace)
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(fingerprint(spec, vocab))
    except (OSError, ValueError):
        return None


def record(spec: Any, vocab: int | None, workspace: Path, measurements: list[tuple[Layout, float]]) -> dict[str, Any]:
    """Store the fastest of ``measurements`` ((layout, tokens/s)) for this machine and workload."""
    best, tok_s = max(measurements, key=lambda m: m[1])
    entry = {"layout": asdict(best), "tokens_per_s": round(tok_s, 1),
             "measured": [{**asdict(lay), "tokens_per_s": round(t, 1)} for lay, t in measurements]}
    path = _record_path(workspace)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        data = {}
    data[fingerprint(spec, vocab)] = entry
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return entry


def is_auto(parallel: Any) -> bool:
    """Does this parallel spec leave the layout to the machine (searched on CPU/gloo only)?"""
    return getattr(parallel, "layout", "given") == "auto" and parallel.nnodes == 1 and parallel.backend == "gloo"


def resolve_layout(spec: Any, parallel: Any, vocab: int | None, workspace: Path | None,
                   measure: bool = False) -> tuple[Layout, str]:
    """(the layout to run, where it came from) for ``spec`` on ``parallel``."""
    if not is_auto(parallel):
        threads = parallel.threads_per_rank or max(1, cpus() // parallel.nproc_per_node)
        return Layout(parallel.nproc_per_node, threads, parallel.micro_batch_size), "given in the parallel spec"
    rec = recorded(spec, vocab, workspace)
    if rec is not None:
        lay = Layout(**rec["layout"])
        others = ", ".join(f"{Layout(m['nproc_per_node'], m['threads_per_rank'], m['micro_batch_size']).label()}: "
                           f"{m['tokens_per_s']:,.0f}" for m in rec["measured"] if Layout(
                               m['nproc_per_node'], m['threads_per_rank'], m['micro_batch_size']) != lay)
        return lay, f"auto: fastest measured by probe, {rec['tokens_per_s']:,.0f} tokens/s" + (
            f" (others, tokens/s: {others})" if others else "")
    return default_layout(spec), "auto: default for this machine, not measured (`genesis-build probe` measures every candidate)"


def apply(parallel: Any, layout: Layout) -> Any:
    """The concrete parallel spec the trainer gets: ``layout`` filled in, threads in the ranks' env."""
    env = dict(parallel.env)
    env.setdefault("OMP_NUM_THREADS", str(layout.threads_per_rank))
    return parallel.model_copy(update={"layout": "given", "nproc_per_node": layout.nproc_per_node,
                                       "micro_batch_size": layout.micro_batch_size,
                                       "threads_per_rank": layout.threads_per_rank, "env": env})
