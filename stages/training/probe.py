"""``genesis-build probe pretrain:<model>``: measure real training throughput for the planner.

Runs ``steps`` + 1 optimizer steps of the model's architecture and ``[training]`` batch on the
parallel spec's layout, through the same launcher and trainer as the build (torchrun, multi-node or
SLURM; FSDP2, micro-batching, activation checkpointing all as configured), on synthetic uniform
random tokens of the model's vocabulary, in a scratch directory that is deleted afterwards. No
checkpoint is written and nothing enters the cache. The first step (allocator warm-up, lazy init)
is excluded from tokens/s. The answer says which line to put into the parallel spec::

    $ genesis-build probe pretrain:tiny --steps 5
    pretrain:tiny on parallel:cpu-2 (2 ranks: 1 node × 2, torchrun, backend gloo), 2,048 tokens/step, vocab 4096 (tokenizer:tiny vocab_size; tokenize:tiny not built yet)
      throughput  4,275 tokens/s (0.479 s/step, mean of steps 2–6; step 1 is warm-up)
      MFU         35.2 % (14.75M FLOP/token; peak 89.6 GFLOP/s per device, measured matmul)
    → put `tokens_per_second = 4275` in specs/parallel/cpu-2.toml; the planner's ETA (genesis-build --dry-run pretrain:tiny) uses it

The vocabulary comes from the tokenize output this workspace last built (its ``meta.json``), else
from the tokenizer spec's ``vocab_size``. The scratch dir is in the system temp dir on one node, and
in ``<workspace>/.genesis/`` for multi-node or SLURM layouts (the other nodes' ranks must see it;
node 0 prints their join command as for a build).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genesis_build.errors import GenesisError
from genesis_build.stage import ref_name

ANNOUNCE = ("node 0 of", "submitting", "SLURM job")  # launcher messages the user must see (join command, job id)


def write_random_tokens(out: Path, vocab: int, tokens: int, seed: int = 0) -> Path:
    """A tokenize-format dir (train split only: the probe evaluates nothing) of uniform random ids."""
    dtype = "uint16" if vocab <= 65536 else "uint32"
    (out / "train").mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(seed).integers(0, vocab, size=tokens, dtype=np.int64).astype(dtype)
    ids.tofile(out / "train" / "00000.bin")
    np.save(out / "train" / "00000.idx.npy", np.zeros(1, dtype=np.int64))
    meta = {"dtype": dtype, "vocab_size": vocab, "eos_id": None, "bos_id": None, "pad_id": None,
            "splits": {"train": {"tokens": tokens, "documents": 1,
                                 "shards": [{"file": "train/00000.bin", "tokens": tokens, "index": "train/00000.idx.npy"}]}}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def probe_vocab(tokenizer: str, resolve: Callable[[str], Any],
                lookup: Callable[[str], Any] | None = None) -> tuple[int, str]:
    """(vocab size, where it came from): the ``meta.json`` of the ``tokenize:<tok>`` this workspace last
    built (``lookup(node) -> InputRef | None``: the engine's read-only cache lookup), else the spec."""
    tok = ref_name(tokenizer)
    if lookup is not None:
        try:
            ref = lookup(f"tokenize:{tok}")
            meta = ref.path / "meta.json" if ref is not None else None
            if meta is not None and meta.is_file():
                return int(json.loads(meta.read_text())["vocab_size"]), f"tokenize:{tok} meta.json"
        except (OSError, ValueError, KeyError, GenesisError):
            pass
    try:
        v = getattr(resolve(tokenizer), "vocab_size", None)
    except GenesisError:
        v = None
    if not isinstance(v, int):
        raise GenesisError(f"probe: no vocabulary size: tokenize:{tok} is not built and {tokenizer} has no vocab_size")
    return v, f"{tokenizer} vocab_size; tokenize:{tok} not built yet"


def _flops(x: float) -> str:
    for unit, div in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x / 1e6:.1f} MFLOP/s"


def probe_layouts(spec: Any, resolve: Callable[[str], Any], steps: int = 5, workspace: Path | None = None,
                  node: str = "pretrain", lookup: Callable[[str], Any] | None = None) -> str:
    """``layout = "auto"``: probe every candidate layout of this machine, record the fastest, say which.

    Candidates run one after another (never concurrently: they would share the cores); each is the
    same trainer as a build. The record (``.genesis/layouts.json``) is what the build and the planner use.
    """
    from . import layout as lay

    if workspace is None:
        raise GenesisError("probe: layout = \"auto\" needs a workspace to record the choice in")
    parallel = resolve(spec.parallel)
    vocab, _ = probe_vocab(spec.tokenizer, resolve, lookup)
    seqs = lay.sequences_per_step(spec)
    measured: list[tuple[Any, float]] = []
    lines = [f"{node} on {spec.parallel} (layout = \"auto\", {lay.cpus()} CPUs): {len(lay.candidates(spec))} candidate "
             f"layouts, {steps} steps each after a warm-up step"]
    for cand in lay.candidates(spec):
        result = _probe_run(spec, lay.apply(parallel, cand), vocab, steps, workspace, node, spec.parallel)
        tok_s = float(result["tokens_per_s"])
        measured.append((cand, tok_s))
        lines.append(f"  {cand.label(seqs):<40} {tok_s:>9,.0f} tokens/s")
    entry = lay.record(spec, vocab, Path(workspace), measured)
    best = lay.Layout(**entry["layout"])
    lines.append(f"→ fastest: {best.label(seqs)} ({entry['tokens_per_s']:,.0f} tokens/s), recorded in .genesis/layouts.json; "
                 f"builds and `genesis-build --dry-run {node}` on this machine use it")
    return "\n".join(lines)


def probe_pretrain(spec: Any, resolve: Callable[[str], Any], steps: int = 5, workspace: Path | None = None,
                   node: str = "pretrain", parallel_address: str | None = None,
                   lookup: Callable[[str], Any] | None = None) -> str:
    """Train ``steps`` + 1 steps of ``spec`` on its parallel layout; return the human-readable answer."""
    from .planner import flops_per_token, human

    if steps < 1:
        raise GenesisError("probe: --steps must be at least 1")
    parallel_address = parallel_address or spec.parallel
    parallel = resolve(parallel_address)
    vocab, vocab_src = probe_vocab(spec.tokenizer, resolve, lookup)
    result = _probe_run(spec, parallel, vocab, steps, workspace, node, parallel_address)
    total = steps + 1
    gbt = spec.training.global_batch_tokens
    tok_s = float(result["tokens_per_s"])
    s_step = gbt / tok_s
    world = parallel.world_size
    backend = parallel.backend
    layout = (f"{world} rank{'s' if world > 1 else ''}: {parallel.nnodes} node{'s' if parallel.nnodes > 1 else ''} × "
              f"{parallel.nproc_per_node}, {parallel.launcher}, backend {backend}")
    lines = [f"{node} on {parallel_address} ({layout}), {gbt:,} tokens/step, vocab {vocab} ({vocab_src})",
             f"  throughput  {tok_s:,.0f} tokens/s ({s_step:.3f} s/step, mean of steps 2–{total}; step 1 is warm-up)"]
    peak = result.get("peak_flops_per_device")
    if peak:
        fpt = flops_per_token(spec.architecture, vocab)
        mfu = fpt * tok_s / (float(peak) * world)
        lines.append(f"  MFU         {100 * mfu:.1f} % ({human(fpt)} FLOP/token; peak {_flops(float(peak))} per "
                     f"device, {result.get('peak_flops_source')})")
    lines.append(f"→ put `tokens_per_second = {tok_s:.0f}` in specs/parallel/{ref_name(parallel_address)}.toml; "
                 f"the planner's ETA (genesis-build --dry-run {node}) uses it")
    return "\n".join(lines)


def _probe_run(spec: Any, parallel: Any, vocab: int, steps: int, workspace: Path | None, node: str,
               parallel_address: str) -> dict[str, Any]:
    """``steps`` + 1 training steps of ``spec`` on the concrete ``parallel`` layout; the trainer's result.json."""
    from stages.model_spec import Training

    from .config import TrainJob
    from .launch import run_torchrun
    from .planner import check_batch

    if steps < 1:
        raise GenesisError("probe: --steps must be at least 1")
    check_batch(spec, parallel, ref_name(parallel_address))
    total = steps + 1  # + the warm-up step
    tr = spec.training.model_dump()
    tr.update(steps=total, tokens=None, warmup_steps=min(tr["warmup_steps"], total - 1), eval_every=total,
              checkpoint_every=total, keep_last=1)
    training = Training.model_validate(tr)
    gbt = training.global_batch_tokens
    # multi-node and SLURM ranks must see the scratch dir: keep it in the workspace (like the cache, shared)
    base = None
    if workspace is not None and (parallel.nnodes > 1 or parallel.launcher == "slurm"):
        base = Path(workspace) / ".genesis"
        base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=base))
    try:
        data = write_random_tokens(scratch / "tokens", vocab, total * gbt + spec.architecture.context_length + 1)
        run = scratch / "run"
        run.mkdir()
        job = TrainJob(architecture=spec.architecture, training=training, parallel=parallel, data_dir=str(data),
                       run_dir=str(run), vocab_size=vocab, progress_file=str(run / "progress.jsonl"),
                       save_checkpoints=False)
        job_path = scratch / "job.json"  # the scratch dir's unique name becomes the rendezvous id
        job.write(job_path)
        log = scratch / "probe.log"
        with open(log, "w") as f:

            def say(msg: str) -> None:  # rank output to the log; how to join / which job to the terminal
                f.write(msg + "\n")
                f.flush()
                if msg.startswith(ANNOUNCE):
                    print(msg, flush=True)

            rc = run_torchrun(job_path, parallel, stdout=f, log=say, job_name=f"genesis-probe-{ref_name(parallel_address)}")
        res_file = run / "result.json"
        result = json.loads(res_file.read_text()) if res_file.is_file() else {}
        if rc != 0 or result.get("status") != "finished":
            tail = log.read_text(errors="replace")[-3000:]
            raise GenesisError(f"probe {node}: training exited with code {rc} "
                               f"({result.get('message') or result.get('status') or 'no result'}); last output:\n{tail}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    return result
