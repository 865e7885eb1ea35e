"""Pretraining planner for ``--dry-run``: pure Python (no torch), from the specs alone.

``plan(model_spec, parallel_spec, vocab_size)`` returns ``(label, value)`` rows: parameter counts,
per-rank memory (weights, gradients and AdamW state sharded by FSDP; activations with and without
checkpointing), tokens per step and the micro × accumulation × world split, steps and tokens of the
run, and an ETA from a measured or given throughput. ``launch_rows`` adds how a multi-node or SLURM
job is started (the other nodes' command; the sbatch script).

Memory model (bytes, per rank, world size W, P parameters, micro-batch m sequences of T tokens):
- fp32 master weights 4P/W, fp32 gradients 4P/W, AdamW moments 8P/W;
- gathered low-precision copies of the layers in flight (two decoder layers at a time);
- activations per token per layer with SDPA/flash attention ≈ 2·(6h + 2·kv + 4·f) bytes (norm
  inputs/outputs, q/k/v, attention output, SwiGLU gate/up/act/product); with checkpointing only the
  layer input (2h) is kept plus one layer being recomputed;
- logits: m·T·V·(2 + 4 + 4) bytes (low-precision logits, the fp32 copy for the loss and its gradient).
Estimates are ±20 %: allocator fragmentation and temporary buffers are not modelled.
"""

from __future__ import annotations

from typing import Any

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def param_counts(arch: Any, vocab_size: int) -> dict[str, int]:
    """Parameters of the Llama described by ``arch``: total, embedding, per layer, non-embedding."""
    h, f = arch.hidden_size, arch.ffn_size
    kv = (arch.num_kv_heads or arch.num_heads) * (h // arch.num_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h  # q,o + k,v + SwiGLU + two RMSNorm gains
    embed = vocab_size * h
    head = 0 if arch.tie_embeddings else vocab_size * h
    total = embed + arch.num_layers * per_layer + h + head
    return {"total": total, "embedding": embed, "per_layer": per_layer, "non_embedding": total - embed}


def flops_per_token(arch: Any, vocab_size: int) -> float:
    """Training FLOPs per token: 6 × matmul parameters (LM head included) + causal attention (PaLM, app. B)."""
    h, L, T = arch.hidden_size, arch.num_layers, arch.context_length
    kv = (arch.num_kv_heads or arch.num_heads) * (h // arch.num_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * arch.ffn_size
    matmul_params = L * per_layer + vocab_size * h
    attention = 12 * L * h * T / 2  # causal: half of the T×T score and value matmuls on average
    return 6.0 * matmul_params + attention


def memory_per_rank(arch: Any, vocab_size: int, world: int, micro_batch: int, checkpointing: bool,
                    compute_dtype: str | None = None) -> dict[str, float]:
    """Estimated bytes per rank, by category (see module docstring)."""
    pc = param_counts(arch, vocab_size)
    P = pc["total"]
    cb = DTYPE_BYTES[compute_dtype or arch.dtype]
    h, f, L, T = arch.hidden_size, arch.ffn_size, arch.num_layers, arch.context_length
    kv = (arch.num_kv_heads or arch.num_heads) * (h // arch.num_heads)
    tokens = micro_batch * T
    per_token_layer = cb * (6 * h + 2 * kv + 4 * f)
    full_acts = tokens * L * per_token_layer
    ckpt_acts = tokens * L * cb * h + tokens * per_token_layer
    logits = tokens * vocab_size * (cb + 4 + 4)
    gathered = (2 * pc["per_layer"] + (pc["embedding"] if world > 1 else 0)) * cb if world > 1 else 0
    return {
        "weights": 4 * P / world, "grads": 4 * P / world, "optimizer": 8 * P / world, "gathered": gathered,
        "activations": (ckpt_acts if checkpointing else full_acts) + logits,
        "activations_no_ckpt": full_acts + logits, "activations_ckpt": ckpt_acts + logits,
    }


def human(n: float) -> str:
    """``1.23B``: a count with an SI-like suffix, for planner rows and probe answers."""
    for unit, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _gib(b: float) -> str:
    return f"{b / GIB:.2f} GiB"


def duration(s: float) -> str:
    """Seconds as "42 s", "17.5 min", "3.2 h" or "4.1 days": planner ETAs of every stage."""
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def plan(model_spec: Any, parallel_spec: Any, vocab_size: int | None) -> list[tuple[str, str]]:
    """Rows describing what ``pretrain`` of ``model_spec`` on ``parallel_spec`` will cost."""
    arch, tr, par = model_spec.architecture, model_spec.training, parallel_spec
    rows: list[tuple[str, str]] = []
    vocab_note = ""
    if not vocab_size:
        vocab_size, vocab_note = 32000, " (vocab unknown: assumed 32000)"
    pc = param_counts(arch, vocab_size)
    rows.append(("params", f"{human(pc['total'])} total, {human(pc['non_embedding'])} non-embedding, "
                           f"vocab {vocab_size}{vocab_note}"))
    world = par.nproc_per_node * par.nnodes
    T = arch.context_length
    seqs = tr.global_batch_tokens // T if tr.global_batch_tokens % T == 0 else None
    if seqs and seqs % (world * par.micro_batch_size) == 0:
        accum = seqs // (world * par.micro_batch_size)
        rows.append(("tokens/step", f"{tr.global_batch_tokens:,} = micro {par.micro_batch_size} × accum {accum} × "
                                    f"world {world} × context {T}"))
    else:
        rows.append(("tokens/step", f"{tr.global_batch_tokens:,} — NOT divisible into micro {par.micro_batch_size} × "
                                    f"world {world} × context {T}"))
    steps = tr.total_steps
    total_tokens = steps * tr.global_batch_tokens
    chinchilla = 20 * pc["total"]
    rows.append(("steps", f"{steps:,} ({human(total_tokens)} tokens, {total_tokens / pc['total']:.1f} tokens/param; "
                          f"20 tokens/param would be {-(-chinchilla // tr.global_batch_tokens):,} steps)"))
    if tr.schedule == "wsd":
        decay = min(int(round(steps * tr.decay_fraction)), steps - tr.warmup_steps)
        rows.append(("schedule", f"WSD: warmup {tr.warmup_steps}, stable to step {steps - decay}, linear decay "
                                 f"{decay} steps to {tr.min_lr_ratio:g}×{tr.lr:g}"))
    else:
        rows.append(("schedule", f"cosine: warmup {tr.warmup_steps}, decay to {tr.min_lr_ratio:g}×{tr.lr:g} at step {steps}"))
    mp = par.mixed_precision.param_dtype
    compute = arch.dtype if mp == "model" else mp
    mem = memory_per_rank(arch, vocab_size, world, par.micro_batch_size, par.activation_checkpointing, compute)
    states = mem["weights"] + mem["grads"] + mem["optimizer"] + mem["gathered"]
    rows.append(("memory/rank: states", f"{_gib(states)} (weights {_gib(mem['weights'])} + grads {_gib(mem['grads'])} + "
                                        f"AdamW {_gib(mem['optimizer'])}, sharded over {world}; gathered layers "
                                        f"{_gib(mem['gathered'])})"))
    rows.append(("memory/rank: activations", f"{_gib(mem['activations_ckpt'])} with checkpointing, "
                                             f"{_gib(mem['activations_no_ckpt'])} without (micro-batch "
                                             f"{par.micro_batch_size}; checkpointing is "
                                             f"{'on' if par.activation_checkpointing else 'off'})"))
    peak = states + mem["activations"]
    fit = ""
    if par.device_memory_gib:
        fit = "fits" if peak <= 0.9 * par.device_memory_gib * GIB else f"does NOT fit in {par.device_memory_gib:g} GiB"
        fit = f" — {fit}"
    rows.append(("memory/rank: peak", f"≈ {_gib(peak)}{fit}"))
    fpt = flops_per_token(arch, vocab_size)
    rows.append(("FLOPs/token", f"{human(fpt)} (6N + attention); {human(fpt * total_tokens)}FLOP for the run"))
    tok_s, source = None, ""
    if par.tokens_per_second:
        tok_s, source = par.tokens_per_second, "measured (parallel spec)"
    elif par.peak_tflops_per_device:
        tok_s = par.peak_tflops_per_device * 1e12 * world * par.mfu_guess / fpt
        source = f"{par.peak_tflops_per_device:g} TFLOP/s × {world} × MFU {par.mfu_guess:g}"
    if tok_s:
        rows.append(("throughput", f"{human(tok_s)} tokens/s ({source})"))
        rows.append(("ETA", f"{duration(total_tokens / tok_s)} for {steps:,} steps "
                            f"({tr.global_batch_tokens / tok_s:.2f} s/step)"))
    else:
        rows.append(("ETA", "unknown: set tokens_per_second or peak_tflops_per_device in the parallel spec"))
    return rows


def launch_rows(parallel_spec: Any, job_name: str) -> list[tuple[str, str]]:
    """How the job starts, for layouts that need more than this machine: multi-node torchrun, SLURM."""
    par = parallel_spec
    if par.launcher == "slurm":
        from .slurm import describe_rows

        return describe_rows(par, job_name)
    if par.nnodes > 1:
        from .launch import join_command

        others = "node 1" if par.nnodes == 2 else f"nodes 1 … {par.nnodes - 1}"
        return [("launch", f"torchrun on {par.nnodes} nodes × {par.nproc_per_node} rank(s), c10d rendezvous at "
                           f"{par.rdzv_endpoint} (id genesis-<trajectory key>): node 0 runs this build and publishes; "
                           f"on {others} run `{join_command(par.rdzv_endpoint)}` (before or after node 0); the cache "
                           f"must be on a filesystem every node mounts at the same path")]
    return []


def check_batch(spec: Any, parallel: Any, parallel_name: str = "parallel") -> None:
    """global_batch_tokens must equal micro × accum × world × context for a whole accum ≥ 1."""
    from genesis_build.errors import FieldError

    T = spec.architecture.context_length
    gbt = spec.training.global_batch_tokens
    if gbt % T:
        lo, hi = gbt // T * T, (gbt // T + 1) * T
        raise FieldError("training.global_batch_tokens",
                         f"{gbt} is not a multiple of architecture.context_length {T} (each step trains whole "
                         f"sequences); use {lo or hi} or {hi}")
    world, micro = parallel.world_size, parallel.micro_batch_size
    unit = world * micro * T
    if gbt % unit:
        lo, hi = gbt // unit * unit, (gbt // unit + 1) * unit
        raise FieldError("training.global_batch_tokens",
                         f"{gbt} tokens/step cannot be split as micro {micro} × accum × world {world} × context {T} "
                         f"(must be a multiple of {unit}); use {lo or hi} or {hi}, or change micro_batch_size / "
                         f"nproc_per_node in specs/parallel/{parallel_name}.toml")
