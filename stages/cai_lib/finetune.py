"""Running SFT/DPO through the shared trainer and exporting the result as an HF model dir.

Used by the ``instruct``, ``sft`` and ``dpo`` stages (heavy, resumable): the stage prepares token data in its run
directory, this module writes the ``TrainJob``, launches torchrun (``stages.training.launch``),
turns the exit status into a clear error, and publishes ``checkpoint/`` (the final DCP checkpoint),
``hf/`` (transformers dir), ``metrics.jsonl`` and ``train_state.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from genesis_build.errors import GenesisError

from .io import write_jsonl


def find_dcp(path: Path) -> Path:
    """The DCP checkpoint dir at or inside ``path`` (a dir with ``.metadata``; newest step-N)."""
    if (path / ".metadata").is_file():
        return path
    steps = sorted((p for p in path.glob("step-*") if (p / ".metadata").is_file()), key=lambda p: int(p.name[5:]))
    if not steps:
        raise GenesisError(f"{path}: no DCP checkpoint (.metadata) found")
    return steps[-1]


def model_ids(hf_dir: Path) -> tuple[int, dict[str, int | None]]:
    """(vocab size, special ids) of a base model from its ``config.json`` — the embedding shape the
    checkpoint has, whatever the tokenizer says."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    return int(cfg["vocab_size"]), {"bos_id": cfg.get("bos_token_id"), "eos_id": _first(cfg.get("eos_token_id")),
                                    "pad_id": cfg.get("pad_token_id")}


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, list) and v else v


def training_section(recipe: Any, micro_hint: int = 1) -> Any:
    """The shared trainer's ``Training`` for an SFT/DPO recipe (tokens/step is nominal)."""
    from stages.model_spec import Training

    return Training(global_batch_tokens=recipe.batch_size * recipe.max_len, steps=recipe.steps, lr=recipe.lr,
                    warmup_steps=recipe.warmup_steps, schedule=recipe.schedule, min_lr_ratio=recipe.min_lr_ratio,
                    weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip, seed=recipe.seed,
                    eval_every=recipe.steps, checkpoint_every=recipe.checkpoint_every, keep_last=recipe.keep_last)


def run_training(ctx: Any, recipe: Any, task: str, task_options: dict[str, Any], rows: list[dict[str, Any]],
                 init_checkpoint: Path, base_dir: Path, desc: str,
                 validation: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``task`` on ``rows`` from ``init_checkpoint``; publish outputs into ``ctx.out``.
    ``validation`` rows (same layout) are written beside them for tasks that evaluate."""
    from stages.training.config import TrainJob
    from stages.training.launch import run_torchrun, start_fresh
    from stages.training.layout import finetune_parallel
    from stages.training.metrics import publish_curves

    spec = ctx.spec
    if ctx.run_dir is None:
        raise GenesisError(f"{ctx.node}: the stage must be resumable (no run dir)")
    run = Path(ctx.run_dir)
    parallel = finetune_parallel(ctx.resolve(spec.parallel), recipe.batch_size)
    if ctx.options.get("fresh_run"):
        start_fresh(run, parallel)
    data_dir = run / "data"
    tmp = data_dir / "train.jsonl.tmp"
    write_jsonl(tmp, rows)  # identical for the same key, so a resumed run sees the same data
    tmp.replace(data_dir / "train.jsonl")
    if validation:
        write_jsonl(data_dir / "validation.jsonl.tmp", validation)
        (data_dir / "validation.jsonl.tmp").replace(data_dir / "validation.jsonl")
    vocab, special = model_ids(base_dir)
    job = TrainJob(architecture=spec.architecture, training=training_section(recipe), parallel=parallel,
                   data_dir=str(data_dir), run_dir=str(run / "train"), vocab_size=vocab, special_ids=special,
                   task=task, task_options=task_options, init_checkpoint=str(find_dcp(init_checkpoint)),
                   reset_optimizer=bool(ctx.options.get("reset_optimizer")), progress_file=str(run / "progress.jsonl"))
    (run / "train").mkdir(parents=True, exist_ok=True)
    job_path = run / "job.json"
    job.write(job_path)
    (run / "progress.jsonl").unlink(missing_ok=True)

    def relay(msg: dict[str, Any]) -> None:
        extra = {k: v for k, v in msg.items() if k not in ("done", "total", "desc", "t", "node")}
        ctx.progress(msg.get("done", 0), msg.get("total"), desc=desc, **extra)

    rc = run_torchrun(job_path, parallel, progress_file=run / "progress.jsonl", on_progress=relay)
    result_path = run / "train" / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if rc != 0 or result.get("status") != "finished":
        msg = result.get("message") or f"training exited with code {rc} (status {result.get('status', 'unknown')})"
        raise GenesisError(f"{ctx.node}: {msg}; the run dir {run} keeps its checkpoints, rerun to resume")

    final = run / "train" / "checkpoints" / f"step-{recipe.steps}"
    if not (final / ".metadata").is_file():
        raise GenesisError(f"{ctx.node}: the final checkpoint {final} is missing")
    shutil.copytree(final, ctx.out / "checkpoint")
    if (run / "train" / "metrics.jsonl").is_file():
        publish_curves(run / "train" / "metrics.jsonl", ctx.out / "metrics.jsonl")
    (ctx.out / "train_state.json").write_text((final / "train_state.json").read_text())
    dcp_to_hf(final, spec.architecture, vocab, special, base_dir, ctx.out / "hf")
    ctx.stats(**{k: result.get(k) for k in ("final_loss", "steps_run", "resumed_from", "world_size", "tokens_per_s")},
              **{k: result.get(k) for k in ("initial_val_loss", "final_val_loss") if validation})
    return result


def dcp_to_hf(checkpoint: Path, arch: Any, vocab: int, special: dict[str, Any], base_dir: Path, out: Path,
              dtype: str = "float32") -> None:
    """The shared DCP → HF exporter (``stages/training/export_hf``) with the base model's tokenizer.

    The intermediate copies stay float32 (the trainer's master weights), so the DPO reference and
    the preference sampler see exactly the trained weights; ``export-aligned`` casts."""
    import warnings

    from stages.training.export_hf import export_hf
    from stages.training.model import llama_config

    config = llama_config(arch, vocab, **special)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        export_hf(Path(checkpoint), config, out, tokenizer_dir=base_dir, dtype=dtype)


def export_model_dir(src: Path, out: Path, dtype_name: str) -> int:
    """Write the fine-tuned ``hf/`` copy at ``src`` as a release-style model dir in ``out``:
    safetensors in ``dtype_name``, config, tokenizer files (with the chat template) and
    ``generation_config.json``. Returns the parameter count. Used by ``export-instruct`` and
    ``export-aligned``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    dtype = getattr(torch, dtype_name)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.config.use_cache = True
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    try:
        GenerationConfig.from_pretrained(src).save_pretrained(out)
    except OSError:
        GenerationConfig.from_model_config(model.config).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())
