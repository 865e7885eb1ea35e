"""Pretraining: ``pretrain:<model>`` trains the spec's Llama on ``tokenize:<tokenizer>`` with FSDP2.

    genesis-build pretrain:tiny            # 2 CPU ranks (parallel:cpu-2), a few minutes
    genesis-build --dry-run pretrain:1b    # the planner: params, memory per rank, steps, ETA

The key covers ``[architecture]`` and the math of ``[training]``; the parallel spec (world size,
micro-batch, sharding, checkpointing) is not part of it. ``training.steps`` / ``training.tokens`` are
excluded from the trajectory, so a longer run reuses the run directory: with WSD it continues from
the checkpoint at the old decay start and only re-does the decay. Output: ``checkpoint/`` (final DCP
checkpoint), ``config.json`` (HF config), ``metrics.jsonl`` (the loss / grad-norm / LR / validation
curves), ``train_state.json``.

The output is deterministic: the same key trained again on the same layout gives the same bytes, so a
``--force`` rebuild that reproduces the weights leaves every dependent cached (early cutoff). Run
metadata stays out of it: timings, throughput, MFU, sessions and resume events are in the run
directory's ``metrics.jsonl`` and ``tb/`` (TensorBoard) and in the manifest's stats; checkpoints are
saved without DCP's run path and per-save uuid (``stages.training.checkpoint.reproducible_writer``).

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


def concrete_parallel(spec: ModelSpec, parallel: Any, vocab: int | None, workspace: Any) -> tuple[Any, str]:
    """(the parallel spec with its layout filled in, where the layout came from); see ``stages.training.layout``."""
    from stages.training import layout as lay

    if not lay.is_auto(parallel):
        return parallel, "given in the parallel spec"
    chosen, source = lay.resolve_layout(spec, parallel, vocab, Path(workspace) if workspace else None)
    return lay.apply(parallel, chosen), source


def _check(view: SpecView) -> None:
    spec: ModelSpec = view.spec
    try:
        parallel = view.resolve(spec.parallel)
    except GenesisError as e:
        raise FieldError("parallel", str(e)) from e
    parallel, _ = concrete_parallel(spec, parallel, None, None)
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

    from stages.training.layout import Layout, is_auto

    spec: ModelSpec = view.spec
    parallel = view.resolve(spec.parallel)
    vocab = _vocab_of(view.resolve, spec.tokenizer)
    rows = []
    if is_auto(parallel):
        parallel, source = concrete_parallel(spec, parallel, vocab, view.workspace)
        chosen = Layout(parallel.nproc_per_node, parallel.threads_per_rank, parallel.micro_batch_size)
        rows.append(("layout", f"{chosen.label(spec.training.global_batch_tokens // spec.architecture.context_length)} "
                               f"({source})"))
    return rows + plan(spec, parallel, vocab) + launch_rows(parallel, _job_name(view.name))


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
    from stages.training.probe import probe_layouts, probe_pretrain

    spec, resolve = node.view.spec, node.view.resolve
    run_probe = probe_layouts if getattr(resolve(spec.parallel), "layout", "given") == "auto" else probe_pretrain
    session.print(run_probe(spec, resolve, steps=args.steps, workspace=session.workspace, node=node.id, lookup=session.lookup))
    return 0


@stage("pretrain", version=3, kind="model", fields=KEY_FIELDS, inputs=_inputs, check=_check, describe=_describe,
       heavy=True, resumable=True, trajectory_exclude=tuple(f"training.{f}" for f in TRAINING_EXTENSION_FIELDS))
def pretrain(ctx: Context) -> None:
    """Pretrain the model with FSDP2 on torchrun ranks (resumable; DCP checkpoints in the run dir)."""
    from stages.training.config import TrainJob
    from stages.training.data import load_meta
    from stages.training.launch import run_torchrun, start_fresh
    from stages.training.metrics import publish_curves
    from stages.training.model import llama_config

    spec: ModelSpec = ctx.spec
    if ctx.run_dir is None:
        raise GenesisError(f"{ctx.node}: pretrain needs a run directory (resumable stage)")
    run = Path(ctx.run_dir)
    tokens = ctx.inputs["tokens"].path
    meta = load_meta(tokens)
    parallel, layout_source = concrete_parallel(spec, ctx.resolve(spec.parallel), int(meta["vocab_size"]), ctx.workspace)
    check_batch(spec, parallel, ref_name(spec.parallel))
    if ctx.options.get("fresh_run"):
        start_fresh(run, parallel)
    special = {"bos_id": meta.get("bos_id"), "eos_id": meta.get("eos_id"), "pad_id": meta.get("pad_id")}
    reset = bool(ctx.options.get("reset_optimizer"))
    progress = run / "progress.jsonl"
    progress.unlink(missing_ok=True)
    job = TrainJob(architecture=spec.architecture, training=spec.training, parallel=parallel, data_dir=str(tokens),
                   run_dir=str(run), vocab_size=int(meta["vocab_size"]), special_ids=special, reset_optimizer=reset,
                   progress_file=str(progress))
    job_path = run / "job.json"
    job.write(job_path)
    ctx.log(f"pretrain {ctx.node}: {parallel.world_size} rank(s), micro-batch {parallel.micro_batch_size} "
            f"(layout {layout_source}), run dir {run}")

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
    shutil.copyfile(final / "train_state.json", ctx.out / "train_state.json")
    publish_curves(run / "metrics.jsonl", ctx.out / "metrics.jsonl")
    llama_config(spec.architecture, int(meta["vocab_size"]), **special).to_json_file(str(ctx.out / "config.json"))

    for w in result.get("warnings") or []:
        ctx.log(f"warning: {w}")
    if reset and result.get("resumed_from") is not None:
        ctx.log(f"--reset-optimizer: optimizer state started fresh at step {result['resumed_from']}")
    keys = ("params", "params_non_embedding", "world_size", "steps_run", "resumed_from", "resume_reason", "resume_exact",
            "reset_optimizer", "initial_val_loss", "final_loss", "final_val_loss", "tokens_per_s", "mfu", "peak_flops_source",
            "peak_memory_mb_per_rank", "time_to_first_step_s", "checkpoint_blocking_s", "warnings", "layout")
    layout = {"nproc_per_node": parallel.nproc_per_node, "nnodes": parallel.nnodes,
              "threads_per_rank": parallel.threads_per_rank, "micro_batch_size": parallel.micro_batch_size,
              "source": layout_source}
    ctx.stats(**{k: result.get(k) for k in keys if k != "layout"}, layout=layout, total_steps=result["step"],
              tokens=result["step"] * spec.training.global_batch_tokens, run_dir=str(run))
