"""Training metrics: JSONL + TensorBoard on rank 0, progress lines, MFU, and the resume monitor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

# Dense bf16 peaks (TFLOP/s) of common accelerators, used for MFU when the parallel spec gives none.
KNOWN_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.2, "3090": 71.0, "A6000": 154.8}


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 512, seconds: float = 0.3) -> float:
    """Achieved FLOP/s of square matmuls on this device in ``dtype`` (the MFU denominator on CPU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    iters, t0 = 0, time.perf_counter()
    while True:
        a @ b
        iters += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return 2.0 * n**3 * iters / dt


def peak_flops(device: torch.device, dtype: torch.dtype, given_tflops: float | None) -> tuple[float, str]:
    """Per-device peak FLOP/s for MFU and where the number came from."""
    if given_tflops:
        return given_tflops * 1e12, "parallel spec"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in KNOWN_PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12, f"datasheet ({name})"
    return measure_matmul_flops(device, dtype), "measured matmul"


class MetricsLog:
    """Appends one JSON object per event to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    On resume the log is truncated to the resumed step so it always describes one trajectory.
    """

    def __init__(self, run_dir: Path, resume_step: int, session: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.session = session
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        self.history = kept
        self._f = open(self.path, "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict[str, Any]) -> None:
        """Log one record (``kind``: train / eval / event)."""
        record = {"session": self.session, "time": round(time.time(), 3), **record}
        self._f.write(json.dumps(record) + "\n")
        step = record.get("step", 0)
        prefix = record.get("kind", "train")
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "session", "time"):
                self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        """Flush and close both sinks."""
        self._f.close()
        self.tb.flush()
        self.tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (a torn last line from a kill is skipped)."""
    from genesis_build.stage import read_json_lines

    return read_json_lines(path)


class Progress:
    """Rank 0 appends progress lines to a file the launching stage relays to ``ctx.progress``."""

    MIN_INTERVAL_S = 0.5  # the relay reads the file twice a second: more lines would only be skipped work

    def __init__(self, path: str | None) -> None:
        self._f = open(path, "a", buffering=1) if path else None
        self._last = 0.0

    def __call__(self, done: int, total: int, **extra: Any) -> None:
        """Append a line: the last step, a validation result and the first line always, others ≤ 2/s."""
        if self._f is None:
            return
        now = time.monotonic()
        if done != total and "val_loss" not in extra and now - self._last < self.MIN_INTERVAL_S:
            return
        self._last = now
        self._f.write(json.dumps({"done": done, "total": total, **extra}) + "\n")


class ResumeMonitor:
    """Flags the silent-reset signature right after a resume: loss jumps while grad norm drops.

    That is what a restore that quietly lost the optimizer state (or loaded fresh weights) looks like;
    a correct resume continues both curves.
    """

    def __init__(self, before: list[dict[str, Any]], window: int = 3, loss_jump: float = 0.25, gnorm_drop: float = 0.5) -> None:
        train = [r for r in before if r.get("kind") == "train" and "loss" in r and "grad_norm" in r]
        tail = train[-window:]
        self.ref = None
        if tail:
            self.ref = (sum(r["loss"] for r in tail) / len(tail), sum(r["grad_norm"] for r in tail) / len(tail))
        self.window, self.loss_jump, self.gnorm_drop = window, loss_jump, gnorm_drop
        self.seen: list[tuple[float, float]] = []
        self.warning: str | None = None

    def observe(self, step: int, loss: float, grad_norm: float) -> str | None:
        """Feed the first steps after resume; returns a warning once if the signature shows."""
        if self.ref is None or len(self.seen) >= self.window:
            return None
        self.seen.append((loss, grad_norm))
        if len(self.seen) < self.window:
            return None
        loss_after = sum(x for x, _ in self.seen) / len(self.seen)
        g_after = sum(g for _, g in self.seen) / len(self.seen)
        loss_ref, g_ref = self.ref
        if loss_after > loss_ref * (1 + self.loss_jump) and g_after < g_ref * self.gnorm_drop:
            self.warning = (f"possible silent reset after resume: loss rose {loss_ref:.3f} → {loss_after:.3f} while grad norm "
                            f"fell {g_ref:.3f} → {g_after:.3f} over the first {self.window} steps (up to step {step}); "
                            f"check that the checkpoint restored weights and optimizer state")
            return self.warning
        return None


def eta_seconds(done: int, total: int, seconds_per_step: float) -> float:
    """Remaining wall time at the current pace."""
    return max(0, total - done) * seconds_per_step


# what a published metrics.jsonl record keeps: the math of the trajectory, nothing about the run
CURVE_FIELDS = ("kind", "step", "loss", "grad_norm", "lr", "val_loss")


def publish_curves(src: Path, dst: Path) -> None:
    """The deterministic part of the run's ``metrics.jsonl``, as a stage publishes it: the train/eval
    curves, one record per (kind, step).

    Timings, throughput, MFU, session numbers and start/resume events describe the run, not the model;
    they would make two identical trainings (one of them killed and resumed, say) publish different
    bytes, so they stay in the run dir, the log and the manifest's stats.
    """
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for r in read_metrics(src):
        if r.get("kind") in ("train", "eval") and isinstance(r.get("step"), int):
            by_key[(r["kind"], r["step"])] = {k: r[k] for k in CURVE_FIELDS if k in r}
    with open(dst, "w") as f:
        for k in sorted(by_key, key=lambda k: (k[1], k[0] != "eval")):
            f.write(json.dumps(by_key[k]) + "\n")
