"""Pretraining: ``pretrain:<model>`` trains the spec's Llama on ``tokenize:<tokenizer>`` with FSDP2.

    genesis-build pretrain:tiny            # 2 CPU ranks (parallel:cpu-2), a few minutes
    genesis-build --dry-run pretrain:1b    # the planner: params, memory per rank, steps, ETA

The key covers ``[architecture]`` and the math of ``[training]``; the parallel spec (world size,
micro-batch, sharding, checkpointing) is not part of it. ``training.steps`` / ``training.tokens`` are
excluded from the trajectory, so a longer run reuses the run directory: with WSD it continues from
the checkpoint at the old decay start and only re-does the decay. Output: ``checkpoint/`` (final DCP
checkpoint), ``config.json`` (HF config), ``metrics.jsonl``, ``tb/``, ``train_state.json``.

Multi-node (parallel spec ``nnodes = 2``, ``rdzv_endpoint = "node0:29500"``): only node 0 builds —
``genesis-build pretrain:1b`` there locks the key and the run dir, writes ``job.json``, serves its path
at the rendezvous endpoint and starts its torchrun agent (c10d, id ``genesis-<trajectory key>``); the
other nodes run ``python -m stages.training.launch node0:29500``, which fetches the job and adds their
ranks. They never run the engine, so only node 0 publishes. The cache must be on a filesystem all
nodes mount at the same path (every rank's DCP shards go into the run dir). ``launcher = "slurm"``
instead writes ``<run dir>/sbatch.sh`` and blocks in ``sbatch --wait``; ``--dry-run`` shows the
script. Details: ``stages.training.launch`` and ``stages.training.slurm``.

    genesis-build probe pretrain:tiny      # a few real steps on random tokens → tokens/s for the planner
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import Context, SpecView, command, ref_name, stage

from stages.model_spec import TRAINING_EXECUTION_FIELDS, TRAINING_EXTENSION_FIELDS, ModelSpec, Training
from stages.training.planner import check_batch  # noqa: F401 — public here too (tests, other stages)

KEY_FIELDS = ("architecture",) + tuple(f"training.{f}" for f in Training.model_fields if f not in TRAINING_EXECUTION_FIELDS)


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    return {"tokens": f"tokenize:{ref_name(view.spec.tokenizer)}"}


def _check(view: SpecView) -> None:
    spec: ModelSpec = view.spec
    try:
        parallel = view.resolve(spec.parallel)
    except GenesisError as e:
        raise FieldError("parallel", str(e)) from e
    check_batch(spec, parallel, ref_name(spec.parallel))
    if spec.training.eval_every > spec.training.total_steps:
        raise FieldError("training.eval_every", f"{spec.training.eval_every} is more than the {spec.training.total_steps} "
                                                f"steps of the run: validation would never run")


def _vocab_of(resolve: Callable[[str], Any], address: str) -> int | None:
    try:
        tok = resolve(address)
    except GenesisError:
        return None
    v = getattr(tok, "vocab_size", None)
    return int(v) if isinstance(v, int) else None


def _describe(view: SpecView) -> list[tuple[str, str]]:
    from stages.training.planner import launch_rows, plan

    spec: ModelSpec = view.spec
    parallel = view.resolve(spec.parallel)
    return plan(spec, parallel, _vocab_of(view.resolve, spec.tokenizer)) + launch_rows(parallel, _job_name(view.name))


def _job_name(name: str) -> str:
    """The SLURM job name of ``pretrain:<name>``."""
    return f"genesis-pretrain-{name}"


def _probe_arguments(p: Any) -> None:
    p.description = "Measure training throughput of NODE's config for the planner's ETA."
    p.add_argument("node")
    p.add_argument("--steps", type=int, default=5)


@command("probe", help="measure training throughput (tokens/s) of a pretrain node for the planner",
         configure=_probe_arguments)
def probe(args: Any, session: Any) -> int:
    """``genesis-build probe pretrain:<model> [--steps N]``: tokens/s of this config, for the planner.

    A few real training steps of the model on its parallel layout (same launcher and trainer) on
    random tokens in a scratch dir; see ``stages.training.probe``.
    """
    node = session.node(args.node)
    if node.stage != "pretrain":
        raise GenesisError(f"{args.node}: stage {node.stage} has no probe")
    from stages.training.probe import probe_pretrain

    session.print(probe_pretrain(node.view.spec, node.view.resolve, steps=args.steps, workspace=session.workspace,
                                 node=node.id, lookup=session.lookup))
    return 0


@stage("pretrain", version=3, kind="model", fields=KEY_FIELDS, inputs=_inputs, check=_check, describe=_describe,
       heavy=True, resumable=True, trajectory_exclude=tuple(f"training.{f}" for f in TRAINING_EXTENSION_FIELDS))
def pretrain(ctx: Context) -> None:
    """Pretrain the model with FSDP2 on torchrun ranks (resumable; DCP checkpoints in the run dir)."""
    from stages.training.config import TrainJob
    from stages.training.data import load_meta
    from stages.training.launch import run_torchrun
    from stages.training.model import llama_config

    spec: ModelSpec = ctx.spec
    if ctx.run_dir is None:
        raise GenesisError(f"{ctx.node}: pretrain needs a run directory (resumable stage)")
    run = Path(ctx.run_dir)
    tokens = ctx.inputs["tokens"].path
    meta = load_meta(tokens)
    parallel = ctx.resolve(spec.parallel)
    check_batch(spec, parallel, ref_name(spec.parallel))
    special = {"bos_id": meta.get("bos_id"), "eos_id": meta.get("eos_id"), "pad_id": meta.get("pad_id")}
    reset = bool(ctx.options.get("reset_optimizer"))
    progress = run / "progress.jsonl"
    progress.unlink(missing_ok=True)
    job = TrainJob(architecture=spec.architecture, training=spec.training, parallel=parallel, data_dir=str(tokens),
                   run_dir=str(run), vocab_size=int(meta["vocab_size"]), special_ids=special, reset_optimizer=reset,
                   progress_file=str(progress))
    job_path = run / "job.json"
    job.write(job_path)
    ctx.log(f"pretrain {ctx.node}: {parallel.world_size} rank(s), run dir {run}")

    def relay(msg: dict[str, Any]) -> None:
        extra = {k: v for k, v in msg.items() if k not in ("done", "total", "desc")}
        ctx.progress(msg.get("done", 0), msg.get("total"), desc=msg.get("desc") or "pretrain", **extra)

    rc = run_torchrun(job_path, parallel, progress_file=progress, on_progress=relay, log=ctx.log,
                      job_name=_job_name(ctx.spec_name))
    result_path = run / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    status = result.get("status")
    if status == "error":
        raise GenesisError(f"{ctx.node}: {result.get('message')}")
    if status == "stopped":
        raise GenesisError(f"{ctx.node}: stopped by signal {result.get('signal')} at step {result.get('step')}; the "
                           f"checkpoint is in {run / 'checkpoints'}, rerun to continue")
    if rc != 0 or status != "finished":
        raise GenesisError(f"{ctx.node}: training exited with code {rc} before finishing (rank logs above in this "
                           f"node's log); rerun resumes from the last checkpoint in {run / 'checkpoints'}")

    final = run / "checkpoints" / f"step-{result['step']}"
    if result["step"] != spec.training.total_steps or not (final / ".metadata").is_file():
        raise GenesisError(f"{ctx.node}: final checkpoint {final} missing")
    # A copy, not a hard link: a damaged cache object must not share its bytes with the run dir the
    # rebuild resumes from (copy_file_range reflinks where the filesystem can).
    shutil.copytree(final, ctx.out / "checkpoint", copy_function=shutil.copyfile)
    shutil.copy2(final / "train_state.json", ctx.out / "train_state.json")
    shutil.copy2(run / "metrics.jsonl", ctx.out / "metrics.jsonl")
    if (run / "tb").is_dir():
        shutil.copytree(run / "tb", ctx.out / "tb")
    llama_config(spec.architecture, int(meta["vocab_size"]), **special).to_json_file(str(ctx.out / "config.json"))

    for w in result.get("warnings") or []:
        ctx.log(f"warning: {w}")
    if reset and result.get("resumed_from") is not None:
        ctx.log(f"--reset-optimizer: optimizer state started fresh at step {result['resumed_from']}")
    keys = ("params", "params_non_embedding", "world_size", "steps_run", "resumed_from", "resume_reason", "resume_exact",
            "reset_optimizer", "initial_val_loss", "final_loss", "final_val_loss", "tokens_per_s", "mfu", "peak_flops_source",
            "peak_memory_mb_per_rank", "time_to_first_step_s", "checkpoint_blocking_s", "warnings")
    ctx.stats(**{k: result.get(k) for k in keys}, total_steps=result["step"],
              tokens=result["step"] * spec.training.global_batch_tokens)
