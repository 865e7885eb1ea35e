"""The shared training loop (pretraining now; SFT and DPO plug in their own task).

Run on every rank, normally through torchrun::

    torchrun --standalone --nproc-per-node 2 -m stages.training.train /path/to/job.json

It resumes from the run directory when it can (see ``schedule.choose_resume``), trains with FSDP2 and
gradient accumulation, evaluates, checkpoints with DCP, and writes ``result.json`` (rank 0) that the
launching stage turns into stats. Exit codes: 0 finished, 2 a user-facing error (``result.json`` has
the message), 143 stopped by SIGTERM/SIGINT after writing a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from genesis_build import faults
from genesis_build.errors import GenesisError

from . import fsdp
from .checkpoint import Checkpointer, CheckpointError, complete_checkpoints, load_model_only, remove_incomplete
from .config import TrainJob
from .metrics import MetricsLog, Progress, ResumeMonitor, eta_seconds, peak_flops
from .model import DTYPES, count_params, flops_per_token
from .schedule import ResumeChoice, Schedule, choose_resume
from .tasks import load_task

EXIT_OK, EXIT_USER_ERROR, EXIT_STOPPED = 0, 2, 143


class StopFlag:
    """Set by SIGTERM/SIGINT; checked (and agreed on by all ranks) after every step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.signal = signum


def build_optimizer(model: torch.nn.Module, training: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on vectors (norm gains), decay on matrices and embeddings.

    The fused kernel (CPU and CUDA): one pass over each parameter instead of the six elementwise
    passes of the foreach path (lerp, mul, addcmul, sqrt, div, addcdiv) — the profile's next cost
    after the matmuls on the tiny model.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=training.lr, betas=tuple(training.betas), eps=training.eps, fused=True)


class StepProfiler:
    """``GENESIS_PROFILE=first:count`` (e.g. ``3:5``): torch.profiler over those optimizer steps.

    Rank 0 writes ``profile.txt`` into the run dir: the top ops by self CPU time and the mean wall
    time per step inside the window. How docs/pretraining-speed.md's before/after tables were made.
    """

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        spec = os.environ.get("GENESIS_PROFILE", "")
        self.first, _, count = spec.partition(":")
        self.first_step = int(self.first) if enabled and self.first.isdigit() else None
        self.count = int(count) if count.isdigit() else 5
        self.path = run_dir / "profile.txt"
        self.prof: Any = None
        self.t0 = 0.0

    def before(self, step: int) -> None:
        """Called before optimizer step ``step + 1``."""
        if self.first_step is not None and step == self.first_step and self.prof is None:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=acts)
            self.prof.__enter__()
            self.t0 = time.perf_counter()

    def after(self, step: int) -> None:
        """Called after the step's bookkeeping (metrics, stop flag, checkpoint poll)."""
        if self.prof is not None and step == self.first_step + self.count:  # type: ignore[operator]
            wall = (time.perf_counter() - self.t0) / self.count
            self.prof.__exit__(None, None, None)
            table = self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48)
            self.path.write_text(f"steps {self.first_step + 1}-{step}: {1000 * wall:.1f} ms wall per step\n{table}\n")
            self.prof, self.first_step = None, None


def _write_result(run_dir: Path, result: dict[str, Any]) -> None:
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, run_dir / "result.json")


class Trainer:
    """One training session on one rank."""

    def __init__(self, job: TrainJob, d: fsdp.Dist, stop: StopFlag) -> None:
        self.t_start = time.perf_counter()
        self.job, self.d, self.stop = job, d, stop
        self.run_dir = Path(job.run_dir)
        self.tr, self.arch = job.training, job.architecture
        self.rank0 = d.rank == 0
        self.task = load_task(job, d)
        model = self.task.build_model()
        self.n_params, self.n_nonemb = count_params(model)
        self.model = fsdp.shard_model(model, d, self.arch, job.parallel)
        self.optimizer = build_optimizer(self.model, self.tr)
        self.schedule = Schedule.from_training(self.tr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule.factor)
        self.ck = Checkpointer(self.run_dir / "checkpoints", d.rank, d.ckpt_group, self.tr.keep_last,
                               job.parallel.async_checkpoint)
        if self.schedule.kind == "wsd" and self.schedule.decay_steps:
            self.ck.protect = {self.schedule.decay_start}  # the extension point: keep it through rotation
        self.step = 0
        self.cursor = 0
        self.warnings: list[str] = []
        self.result: dict[str, Any] = {}

    # ---- state
    def train_state(self) -> dict[str, Any]:
        """What besides model/optimizer/scheduler a resume needs (global: any world size)."""
        return {"step": self.step, "cursor": self.cursor, "tokens_seen": self.step * self.tr.global_batch_tokens,
                "seed": self.tr.seed, "world_size": self.d.world, "schedule": self.schedule.as_dict(),
                # RNG: nothing in the loop draws random numbers after init (no dropout; the data order is
                # a pure function of (seed, epoch)), so no generator state has to be restored.
                "rng": "stateless"}

    def _broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.d.cpu_group)
        return box[0]

    def restore(self) -> ResumeChoice:
        """Choose and load a checkpoint (or an init checkpoint for a fresh run)."""
        root = self.ck.root
        choice = None
        if self.rank0:
            removed = remove_incomplete(root)
            available = complete_checkpoints(root)
            choice = choose_resume({s: ts["schedule"] for s, ts in available.items()}, self.schedule)
            if removed:
                choice.reason += f" (removed incomplete {', '.join(sorted(removed))})"
            # the run dir holds one trajectory: checkpoints past the resume point belong to another length
            for s in available:
                if s > (choice.step or 0):
                    import shutil

                    shutil.rmtree(root / f"step-{s}", ignore_errors=True)
        choice = self._broadcast(choice)
        if choice.warning:
            self.warnings.append(choice.warning)
        if choice.step is not None:
            ts = self.ck.load(choice.step, self.model, self.optimizer, self.scheduler, self.train_state(),
                              reset_optimizer=self.job.reset_optimizer)
            self.step, self.cursor = int(ts["step"]), int(ts["cursor"])
            if self.step != choice.step:
                raise CheckpointError(f"{root}/step-{choice.step}: train_state says step {self.step}")
        elif self.job.init_checkpoint:
            load_model_only(Path(self.job.init_checkpoint), self.model, self.d.ckpt_group)
        # the LR of the next update follows the *current* schedule (matters when a cosine run was extended)
        self.scheduler.last_epoch = self.step
        for g, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            g["lr"] = base * self.schedule.factor(self.step)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # noqa: SLF001 — keep get_last_lr() right
        return choice

    # ---- steps
    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step over this rank's micro-batches.

        Returns (global mean loss, grad norm before clipping, whether any rank was asked to stop).
        One collective and one host sync per step (beyond FSDP's own): loss sum, token count, the
        squared grad norm and the stop flag travel in one all-reduce; clipping scales the local
        gradient shards on the device. Before, each micro-step synced (``int(...)`` of the token
        count) and a step ran four collectives (count, DTensor norm, loss, stop flag).
        """
        micro = self.task.train_micro_batches(self.cursor)
        dev = self.d.device
        known = getattr(self.task, "loss_tokens_per_step", None)
        if known:
            n_global = float(known)  # every label counts (pretraining): no count, no collective
        else:
            # counted on the host tensors, before the copy to the device: no device sync
            n_local = sum(int((b["labels"] != -100).sum()) for b in micro) if micro and "labels" in micro[0] else 0
            box = torch.tensor([float(n_local)], dtype=torch.float64, device=dev)
            dist.all_reduce(box)
            n_global = float(box)
        # FSDP averages gradients over ranks; scaling by world/N makes the result sum(loss)/N over the
        # whole global batch, whatever the split into ranks and micro-batches
        scale = self.d.world / max(1.0, n_global)
        loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
        tok_acc = torch.zeros((), dtype=torch.float64, device=dev)
        last = len(micro) - 1
        sharded = hasattr(self.model, "set_requires_gradient_sync")  # not at one rank (fsdp.shard_model)
        for i, b in enumerate(micro):
            b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
            if sharded:
                self.model.set_requires_gradient_sync(i == last)
            loss_sum, n_tok = self.task.loss(self.model, b)
            (loss_sum * scale).backward()
            loss_acc += loss_sum.detach()
            tok_acc += n_tok
        grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                 for p in self.model.parameters() if p.grad is not None]
        sq = torch.stack([n.double() for n in torch._foreach_norm(grads)]).square().sum() if grads else tok_acc * 0
        stop = 1.0 if self.stop.signal is not None else 0.0
        red = torch.stack([loss_acc, tok_acc, sq, torch.tensor(stop, dtype=torch.float64, device=dev)])
        dist.all_reduce(red)  # the local shards' squares sum to the full norm²
        gnorm = red[2].sqrt()
        if self.tr.grad_clip > 0 and grads:
            # clip_grad_norm_'s rule (coef = max_norm / (norm + 1e-6), clamped to 1), without DTensor dispatch
            coef = (self.tr.grad_clip / (gnorm + 1e-6)).clamp(max=1.0).to(grads[0].dtype)
            torch._foreach_mul_(grads, coef)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.cursor += self.task.sequences_per_step
        loss_sum_g, tok_g, _, stop_g = red.tolist()  # the step's one host sync
        return loss_sum_g / max(tok_g, 1.0), float(gnorm), stop_g > 0

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over the fixed validation set (all ranks)."""
        batches = self.task.eval_micro_batches()
        if not batches:
            return None
        self.model.eval()
        tot = torch.zeros(2, dtype=torch.float64, device=self.d.device)
        for b in batches:
            b = {k: v.to(self.d.device) for k, v in b.items()}
            s, n = self.task.loss(self.model, b)
            tot[0] += s.double()
            tot[1] += n.double() if torch.is_tensor(n) else float(n)
        self.model.train()
        dist.all_reduce(tot)
        return float(tot[0] / tot[1].clamp(min=1))

    def save(self, blocking: bool) -> None:
        """Checkpoint the current step."""
        from .checkpoint import app_state

        ts = self.train_state()
        self.ck.save(self.step, app_state(self.model, self.optimizer, self.scheduler, ts), ts, blocking=blocking)

    # ---- the loop
    def run(self) -> int:
        """Train to ``training.total_steps`` (or until stopped); returns the exit code."""
        total = self.schedule.total_steps
        choice = self.restore()
        resumed_from = choice.step
        metrics = None
        if self.rank0:
            from .metrics import read_metrics

            history = read_metrics(self.run_dir / "metrics.jsonl")
            session = 1 + sum(1 for r in history if r.get("kind") == "event" and r.get("event") == "start")
            metrics = MetricsLog(self.run_dir, self.step, session)
            metrics.write({"kind": "event", "event": "start", "step": self.step, "reason": choice.reason,
                           "world_size": self.d.world, "reset_optimizer": self.job.reset_optimizer})
            monitor = ResumeMonitor(metrics.history) if resumed_from else None
        progress = Progress(self.job.progress_file if self.rank0 else None)
        desc = getattr(self.task, "name", "train")
        tokens_per_step = self.tr.global_batch_tokens
        fpt = flops_per_token(self.arch, self.job.vocab_size)
        compute_dtype = DTYPES[self.arch.dtype if self.job.parallel.mixed_precision.param_dtype == "model"
                               else self.job.parallel.mixed_precision.param_dtype]
        peak, peak_src = peak_flops(self.d.device, compute_dtype, self.job.parallel.peak_tflops_per_device)
        step_times: list[float] = []
        first_step_s = None
        steps_run = 0
        last_loss = last_val = None
        stopped = False
        if self.step >= total and self.rank0:
            progress(self.step, total, desc=f"{desc} (already trained)")
        initial_val = None
        if self.step == 0 and total > 0:
            # the starting point of the validation curve (≈ ln(vocab) for a fresh init)
            v0 = initial_val = self.evaluate()
            if self.rank0 and v0 is not None:
                assert metrics is not None
                metrics.write({"kind": "eval", "step": 0, "val_loss": v0})
                progress(0, total, desc=desc, val_loss=round(v0, 4))
        profiler = StepProfiler(self.run_dir, self.rank0)
        t_iter = time.perf_counter()
        while self.step < total:
            profiler.before(self.step)
            loss, gnorm, stopped = self.train_step()
            # a step's time is the whole loop iteration (metrics, progress, checkpoint poll included),
            # from the end of the previous one: what a user waits for, comparable with a plain loop
            now = time.perf_counter()
            dt, t_iter = now - t_iter, now
            steps_run += 1
            if first_step_s is None:
                first_step_s = now - self.t_start
            step_times.append(dt)
            last_loss = loss
            pace = sum(step_times[-20:]) / len(step_times[-20:])
            tok_s = tokens_per_step / dt
            mfu = fpt * tok_s / (peak * self.d.world)
            rec: dict[str, Any] = {"kind": "train", "step": self.step, "loss": loss, "grad_norm": gnorm,
                                   "lr": self.scheduler.base_lrs[0] * self.schedule.factor(self.step - 1),
                                   "tokens_per_s": tok_s, "mfu": mfu, "step_time_s": dt}
            if self.step % self.tr.eval_every == 0 or self.step == total:
                last_val = self.evaluate()
                if last_val is not None:
                    rec["val_loss"] = last_val
            if self.rank0:
                assert metrics is not None
                if not math.isfinite(loss):
                    self.warnings.append(f"non-finite loss at step {self.step}")
                if monitor is not None:
                    w = monitor.observe(self.step, loss, gnorm)
                    if w:
                        self.warnings.append(w)
                        metrics.write({"kind": "event", "event": "warning", "step": self.step, "message": w})
                metrics.write(rec)
                progress(self.step, total, desc=desc, loss=round(loss, 4), grad_norm=round(gnorm, 4),
                         lr=rec["lr"], tok_s=round(tok_s, 1), mfu=round(mfu, 4),
                         eta_s=round(eta_seconds(self.step, total, pace), 1),
                         **({"val_loss": round(last_val, 4)} if "val_loss" in rec else {}))
            final = self.step == total
            stable_point = self.schedule.kind == "wsd" and self.schedule.decay_steps and self.step == self.schedule.decay_start
            if not self.job.save_checkpoints:
                pass  # a throughput probe: nothing to resume from
            elif final or stopped:
                self.save(blocking=True)
            elif self.step % self.tr.checkpoint_every == 0 or stable_point:
                self.save(blocking=False)
            else:
                self.ck.poll()
            profiler.after(self.step)
            faults.point("train.after_step")  # GENESIS_FAULT="train.after_step:kill@N": a crash at step N (gpu_check)
            if stopped:
                break
        self.ck.wait()
        if self.rank0:
            self.ck.rotate()
        peaks = [None] * self.d.world
        dist.all_gather_object(peaks, round(fsdp.peak_memory_mb(self.d.device), 1), group=self.d.cpu_group)
        status = "stopped" if stopped else "finished"
        steady = step_times[1:] or step_times
        pace = sum(steady) / len(steady) if steady else None
        self.result = {
            "status": status, "step": self.step, "total_steps": total, "steps_run": steps_run,
            "resumed_from": resumed_from, "resume_reason": choice.reason, "resume_exact": choice.exact,
            "reset_optimizer": self.job.reset_optimizer and resumed_from is not None,
            "world_size": self.d.world, "params": self.n_params, "params_non_embedding": self.n_nonemb,
            "initial_val_loss": initial_val, "final_loss": last_loss, "final_val_loss": last_val,
            "tokens_per_s": tokens_per_step / pace if pace else None,
            "mfu": (fpt * tokens_per_step / pace / (peak * self.d.world)) if pace else None,
            "peak_flops_per_device": peak, "peak_flops_source": peak_src,
            "flops_per_token": fpt, "peak_memory_mb_per_rank": peaks,
            "time_to_first_step_s": first_step_s, "checkpoint_blocking_s": [round(x, 4) for x in self.ck.save_seconds],
            "warnings": self.warnings, "signal": self.stop.signal,
        }
        if self.rank0:
            assert metrics is not None
            metrics.write({"kind": "event", "event": status, "step": self.step})
            metrics.close()
            _write_result(self.run_dir, self.result)
        dist.barrier(group=self.d.cpu_group)
        return EXIT_STOPPED if stopped else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of every rank: ``python -m stages.training.train job.json``."""
    argv = sys.argv[1:] if argv is None else argv
    job = TrainJob.read(Path(argv[0]))
    stop = StopFlag()
    d = fsdp.init(job.parallel.backend)
    run_dir = Path(job.run_dir)
    try:
        if d.rank == 0:
            (run_dir / "result.json").unlink(missing_ok=True)
        return Trainer(job, d, stop).run()
    except (CheckpointError, GenesisError) as e:
        if d.rank == 0:
            _write_result(run_dir, {"status": "error", "message": str(e)})
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
