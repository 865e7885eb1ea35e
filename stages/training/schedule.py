"""Learning-rate schedules and which checkpoint a (possibly extended) run may resume from.

WSD (warmup → stable → linear decay) is the default because the LR before the decay does not depend
on the run length: a run whose ``steps`` grew can continue from a checkpoint taken before the old
decay began and reach exactly the state a fresh run of the new length would (bitwise, same world
size). Cosine schedules depend on the length everywhere, so extending one changes history; we say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Schedule:
    """The LR multiplier as a function of the optimizer step (0-based update index)."""

    kind: str  # "wsd" | "cosine"
    total_steps: int
    warmup_steps: int
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.0

    @classmethod
    def from_training(cls, training: Any, total_steps: int | None = None) -> "Schedule":
        """Build from a ``Training`` section (optionally overriding the length)."""
        return cls(training.schedule, total_steps or training.total_steps, training.warmup_steps,
                   training.decay_fraction, training.min_lr_ratio)

    @property
    def decay_steps(self) -> int:
        """WSD: number of decaying updates at the end (0 for cosine)."""
        if self.kind != "wsd":
            return 0
        return min(int(round(self.total_steps * self.decay_fraction)), self.total_steps - self.warmup_steps)

    @property
    def decay_start(self) -> int:
        """WSD: steps completed when the decay begins (the checkpoint kept for extensions)."""
        return self.total_steps - self.decay_steps if self.kind == "wsd" else self.warmup_steps

    def factor(self, t: int) -> float:
        """LR multiplier for update ``t`` (0-based)."""
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        if self.kind == "wsd":
            if t < self.decay_start or self.decay_steps == 0:
                return 1.0
            progress = (t - self.decay_start + 1) / self.decay_steps
            return 1.0 - (1.0 - self.min_lr_ratio) * min(progress, 1.0)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (t - self.warmup_steps + 1) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def lambda_(self) -> Callable[[int], float]:
        """For ``torch.optim.lr_scheduler.LambdaLR`` (whose counter is the number of updates done)."""
        return self.factor

    def agrees_until(self, other: "Schedule") -> int:
        """Largest step s such that both schedules give the same LR for every update before s."""
        if self == other:
            return self.total_steps
        if self.kind == other.kind == "wsd" and (self.warmup_steps, self.min_lr_ratio) == (other.warmup_steps, other.min_lr_ratio):
            return min(self.decay_start, other.decay_start)
        # cosine (or differing shapes): the curves may coincide during warmup only
        return min(self.warmup_steps, other.warmup_steps)

    def as_dict(self) -> dict[str, Any]:
        """JSON form stored with each checkpoint."""
        return {"kind": self.kind, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay_fraction": self.decay_fraction, "min_lr_ratio": self.min_lr_ratio}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        """Inverse of :meth:`as_dict`."""
        return cls(d["kind"], int(d["total_steps"]), int(d["warmup_steps"]), float(d["decay_fraction"]), float(d["min_lr_ratio"]))


@dataclass
class ResumeChoice:
    """Which checkpoint to continue from and why (``step`` None: start fresh)."""

    step: int | None
    reason: str
    exact: bool = True  # False: the continued run differs from a fresh run of the new length
    warning: str | None = None


def choose_resume(checkpoints: dict[int, dict[str, Any]], current: Schedule) -> ResumeChoice:
    """Pick the checkpoint to resume from.

    ``checkpoints`` maps step → the schedule dict it was written under. A checkpoint at step s is
    exact for ``current`` when its schedule and ``current`` agree on every update before s. WSD
    extensions therefore resume from the last stable-phase checkpoint; a changed cosine length has no
    exact checkpoint except during warmup, so we continue from the newest one and warn.
    """
    exact = [s for s, sched in checkpoints.items()
             if s <= current.total_steps and s <= Schedule.from_dict(sched).agrees_until(current)]
    newest = max(checkpoints) if checkpoints else None
    if exact and max(exact) > 0:
        s = max(exact)
        old = Schedule.from_dict(checkpoints[s])
        if old.total_steps == current.total_steps:
            return ResumeChoice(s, f"resuming from step {s}")
        return ResumeChoice(s, f"steps changed {old.total_steps} → {current.total_steps}: resuming from step {s} "
                               f"(before the decay of both schedules; only the rest is re-run)")
    if current.kind == "cosine" and newest is not None:
        candidates = [s for s in checkpoints if s <= current.total_steps]
        if candidates:
            s = max(candidates)
            old = Schedule.from_dict(checkpoints[s])
            lr_old, lr_new = old.factor(s), current.factor(s)
            msg = (f"cosine schedule: steps changed {old.total_steps} → {current.total_steps}; continuing from step {s} "
                   f"with the LR curve recomputed for {current.total_steps} steps (LR multiplier at step {s} jumps "
                   f"{lr_old:.4f} → {lr_new:.4f}). The first {s} steps followed the old curve, so the result differs from "
                   f"a fresh {current.total_steps}-step run; use schedule = \"wsd\" for exact extensions")
            return ResumeChoice(s, msg, exact=False, warning=msg)
    if newest is not None:
        return ResumeChoice(None, f"no checkpoint matches the current schedule (have steps {sorted(checkpoints)}); starting fresh")
    return ResumeChoice(None, "no checkpoint: starting fresh")
