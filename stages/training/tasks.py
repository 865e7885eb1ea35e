"""Tasks: what the shared training loop trains on and how it computes the loss.

A task provides ``build_model()``, ``sequences_per_step``, ``train_micro_batches(cursor)``,
``eval_micro_batches()`` and ``loss(model, batch) -> (loss_sum, n_tokens)``. The loop normalises by
the number of loss tokens in the whole global batch, so tasks with masked tokens (SFT) or pairwise
losses (DPO) plug in by returning their own sums and counts.

Contract: the loop needs the global count *before* the forward passes (to scale each micro-batch's
backward), so it counts ``labels != -100`` of every micro-batch; that count must equal the
``n_tokens`` the task's ``loss`` returns (a pairwise task puts one label per pair). Batches must be
deterministic functions of the cursor, so resumes are exact. A task whose every label counts may set
``loss_tokens_per_step``: the loop then skips the count and its collective.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .config import TrainJob
from .data import PretrainData
from .fsdp import Dist
from .model import build_model


class Task(Protocol):
    """The pluggable part of a training run."""

    sequences_per_step: int

    def build_model(self) -> torch.nn.Module: ...

    def train_micro_batches(self, cursor: int) -> list[dict[str, torch.Tensor]]: ...

    def eval_micro_batches(self) -> list[dict[str, torch.Tensor]]: ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...


def load_task(job: TrainJob, d: Dist) -> Task:
    """Instantiate ``job.task`` ("module:Class")."""
    mod, _, cls = job.task.partition(":")
    return getattr(importlib.import_module(mod), cls)(job, d)


def causal_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labels != -100, and how many tokens that is."""
    logits = model(input_ids=batch["input_ids"]).logits
    labels = batch["labels"]
    loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100, reduction="sum")
    return loss_sum, (labels != -100).sum()


class PretrainTask:
    """Next-token prediction over a tokenize output."""

    name = "pretrain"  # progress lines say what is training

    def __init__(self, job: TrainJob, d: Dist) -> None:
        self.job = job
        tr = job.training
        self.data = PretrainData(Path(job.data_dir), job.architecture.context_length, tr.global_batch_tokens,
                                 job.parallel.micro_batch_size, tr.seed, d.rank, d.world, tr.eval_batches)
        self.sequences_per_step = self.data.sequences_per_step
        # every training label counts (no padding in pretraining windows): the loop need not count them
        self.loss_tokens_per_step = self.data.sequences_per_step * job.architecture.context_length
        self._eval: list[dict[str, torch.Tensor]] | None = None

    def build_model(self) -> torch.nn.Module:
        """The spec's Llama, initialised from the training seed."""
        return build_model(self.job.architecture, self.job.vocab_size, self.job.training.seed, **self.job.special_ids)

    def train_micro_batches(self, cursor: int) -> list[dict[str, torch.Tensor]]:
        """This rank's slice of the global batch at ``cursor``."""
        return self.data.train_micro_batches(cursor)

    def eval_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        """The fixed validation set (read once)."""
        if self._eval is None:
            self._eval = self.data.eval_micro_batches()
        return self._eval

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal LM loss."""
        return causal_lm_loss(model, batch)
