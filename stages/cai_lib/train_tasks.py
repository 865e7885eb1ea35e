"""SFT and DPO tasks for the shared training loop (``stages/training/``: FSDP2, DCP resume).

The stage tokenizes its data once into ``data_dir`` (JSONL of token ids, masks and, for DPO, the
frozen reference model's log-probabilities); these tasks only batch it. Like pretraining, the data
order is a seed-determined permutation of rows per epoch and global batch ``b`` is positions
``b*B … b*B+B-1``; rank ``r`` takes a contiguous slice, so the cursor is global and a run resumes on
any world size.

The loop normalises the summed loss by the number of label entries != -100 in the global batch:
SFT labels are the assistant tokens; a DPO micro-batch carries one ``labels`` entry per pair (never
read by the model), so the DPO loss is the mean over pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genesis_build.errors import GenesisError
from stages.training.config import TrainJob
from stages.training.data import GlobalOrder
from stages.training.fsdp import Dist
from stages.training.model import build_model
from stages.training.tasks import causal_lm_loss

from .dpo_loss import dpo_loss, sequence_logps
from .sft_data import IGNORE


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise GenesisError(f"{path}: training data missing (the stage writes it before launching)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class _RowTask:
    """Shared batching over rows of ``data_dir/train.jsonl``."""

    def __init__(self, job: TrainJob, d: Dist) -> None:
        self.job = job
        self.rows = _read_rows(Path(job.data_dir) / "train.jsonl")
        if not self.rows:
            raise GenesisError(f"{job.data_dir}: no training rows")
        self.B = int(job.task_options["batch_size"])
        self.micro = job.parallel.micro_batch_size
        self.rank, self.world = d.rank, d.world
        if self.B % (self.world * self.micro):
            raise GenesisError(f"batch_size {self.B} is not divisible by world size {self.world} × micro_batch_size "
                               f"{self.micro}; change batch_size in the model spec or micro_batch_size in the parallel spec")
        self.order = GlobalOrder(len(self.rows), job.training.seed)
        self.pad_id = int(job.special_ids.get("pad_id") or job.special_ids.get("eos_id") or 0)
        self.sequences_per_step = self.B

    def build_model(self) -> torch.nn.Module:
        """The spec's architecture; weights come from ``job.init_checkpoint`` (pretrain / SFT)."""
        return build_model(self.job.architecture, self.job.vocab_size, self.job.training.seed, **self.job.special_ids)

    def _rank_rows(self, cursor: int) -> list[dict[str, Any]]:
        per_rank = self.B // self.world
        first = cursor + self.rank * per_rank
        return [self.rows[self.order.sequence(first + j)] for j in range(per_rank)]

    def train_micro_batches(self, cursor: int) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of the global batch at ``cursor``."""
        rows = self._rank_rows(cursor)
        return [self.collate(rows[k : k + self.micro]) for k in range(0, len(rows), self.micro)]

    def eval_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        """No held-out set: every generated sample is used for training."""
        return []

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class SftTask(_RowTask):
    """Next-token loss on assistant tokens only."""

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded ids; ``labels[t]`` is the target of position t (the next token when that
        token is an assistant token, else -100) — the layout ``causal_lm_loss`` expects."""
        ids = _pad([r["input_ids"] for r in rows], self.pad_id)
        labels = _pad([r["labels"] for r in rows], IGNORE)
        shifted = torch.full_like(labels, IGNORE)
        shifted[:, :-1] = labels[:, 1:]
        return {"input_ids": ids, "labels": shifted}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over assistant tokens, and their count."""
        return causal_lm_loss(model, batch)


class InstructTask(SftTask):
    """SFT on conversations with a held-out set: ``data_dir/validation.jsonl`` is the eval set, so
    the run records the validation loss at step 0 and at the end (``initial_val_loss`` →
    ``final_val_loss`` in ``result.json``)."""

    name = "instruct"  # progress lines say what is training

    def __init__(self, job: TrainJob, d: Dist) -> None:
        super().__init__(job, d)
        path = Path(job.data_dir) / "validation.jsonl"
        self.validation = _read_rows(path) if path.is_file() else []
        self._eval: list[dict[str, torch.Tensor]] | None = None

    def eval_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        """This rank's share of the validation rows. Every rank runs the same number of forwards
        (FSDP collectives must match): missing rows are padding whose labels are all -100."""
        if self._eval is None:
            rows = self.validation
            if not rows:
                self._eval = []
                return self._eval
            per_rank = -(-len(rows) // self.world)
            per_rank = -(-per_rank // self.micro) * self.micro
            mine = rows[self.rank * per_rank : (self.rank + 1) * per_rank]
            pad = {"input_ids": rows[0]["input_ids"], "labels": [IGNORE] * len(rows[0]["input_ids"])}
            mine = mine + [pad] * (per_rank - len(mine))
            self._eval = [self.collate(mine[k : k + self.micro]) for k in range(0, per_rank, self.micro)]
        return self._eval


class DpoTask(_RowTask):
    """Sigmoid DPO against precomputed reference log-probabilities (the SFT model)."""

    def __init__(self, job: TrainJob, d: Dist) -> None:
        super().__init__(job, d)
        self.beta = float(job.task_options["beta"])

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``[chosen; rejected]`` stacked on the batch dim, with completion masks and reference logps."""
        seqs = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
        masks = [r["chosen_mask"] for r in rows] + [r["rejected_mask"] for r in rows]
        ids = _pad(seqs, self.pad_id)
        return {
            "input_ids": ids,
            "attention_mask": _pad([[1] * len(s) for s in seqs], 0),
            "completion_mask": _pad(masks, 0),
            "ref_chosen_logps": torch.tensor([r["ref_chosen_logps"] for r in rows], dtype=torch.float64),
            "ref_rejected_logps": torch.tensor([r["ref_rejected_logps"] for r in rows], dtype=torch.float64),
            "labels": torch.zeros(len(rows), dtype=torch.long),  # one loss unit per pair (see module doc)
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed DPO loss over the micro-batch's pairs, and the number of pairs."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logps = sequence_logps(out.logits, batch["input_ids"], batch["completion_mask"])
        chosen, rejected = logps.chunk(2, dim=0)
        losses, _, _ = dpo_loss(chosen, rejected, batch["ref_chosen_logps"].to(chosen.dtype),
                                batch["ref_rejected_logps"].to(chosen.dtype), self.beta)
        return losses.sum(), torch.tensor(len(losses), device=losses.device)
