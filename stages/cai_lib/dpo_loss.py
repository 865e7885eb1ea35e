"""The DPO loss (Rafailov et al. 2023) and the log-probabilities it needs.

    loss = -log σ(β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])

Sequence log-probabilities are sums over the completion tokens only (prompt and padding masked),
as in TRL's ``DPOTrainer`` — tests check equality with TRL on the same tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token_t | tokens_<t) over positions where ``completion_mask`` is 1.

    ``logits`` [B, T, V] come from a forward pass over ``input_ids`` [B, T]; the first token has
    no prediction, so the mask is shifted by one like the logits.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    token_logp = torch.gather(logp, 2, target.unsqueeze(-1)).squeeze(-1)
    mask = completion_mask[:, 1:].to(token_logp.dtype)
    return (token_logp * mask).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair sigmoid DPO losses and the implicit rewards β·(log π − log π_ref) of both sides."""
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def concatenated_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over ``[chosen; rejected]`` (stacked on the batch dim) → their sequence logps."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logps = sequence_logps(out.logits, batch["input_ids"], batch["completion_mask"])
    return logps.chunk(2, dim=0)


def dpo_batch_loss(model: Any, ref_model: Any, batch: dict[str, torch.Tensor], beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean DPO loss of a ``[chosen; rejected]`` batch, plus metrics (reward accuracy and margin).

    ``batch`` may carry precomputed ``ref_chosen_logps``/``ref_rejected_logps``; otherwise the
    frozen reference model is run under ``no_grad``.
    """
    chosen, rejected = concatenated_logps(model, batch)
    if "ref_chosen_logps" in batch:
        ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    else:
        with torch.no_grad():
            ref_chosen, ref_rejected = concatenated_logps(ref_model, batch)
    losses, r_chosen, r_rejected = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    metrics = {
        "reward_accuracy": float((r_chosen > r_rejected).float().mean()),
        "reward_margin": float((r_chosen - r_rejected).mean()),
        "logps_chosen": float(chosen.detach().mean()),
        "logps_rejected": float(rejected.detach().mean()),
    }
    return losses.mean(), metrics
