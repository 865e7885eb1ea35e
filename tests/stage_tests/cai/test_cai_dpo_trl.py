"""Our DPO loss equals TRL's DPOTrainer loss on the same model, reference model and batch.

TRL is a test-only dependency (``pip install trl``); its sigmoid DPO loss lives inside
``DPOTrainer._compute_loss``, so we build a real DPOTrainer on the tiny model, take a batch from its
own data collator and compare its loss with ours on exactly those tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

trl = pytest.importorskip("trl")


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_trl(tiny_lm: Path, tmp_path: Path, beta: float) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.cai_lib.dpo_loss import dpo_batch_loss

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    policy = AutoModelForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32)
    with torch.no_grad():  # make policy and reference differ, so the log-ratios are not all zero
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    data = Dataset.from_list([
        {"prompt": [{"role": "user", "content": "Why is the sky blue?"}],
         "chosen": [{"role": "assistant", "content": "Rayleigh scattering favours short wavelengths."}],
         "rejected": [{"role": "assistant", "content": "No idea."}]},
        {"prompt": [{"role": "user", "content": "Name a prime number."}],
         "chosen": [{"role": "assistant", "content": "Seven."}],
         "rejected": [{"role": "assistant", "content": "Nine, which is odd so probably prime."}]},
        {"prompt": [{"role": "user", "content": "Say hi"}],
         "chosen": [{"role": "assistant", "content": "Hi! What are you up to today?"}],
         "rejected": [{"role": "assistant", "content": "As an AI I cannot greet."}]},
    ])
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=3, beta=beta, report_to="none",
                         use_cpu=True, max_length=256, bf16=False, fp16=False, logging_steps=1, seed=0)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["completion_mask"].sum() > 0
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
        ours, metrics = dpo_batch_loss(trainer.model, trainer.ref_model,
                                       {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}, beta)
    assert torch.isfinite(ours)
    assert abs(float(ours) - float(trl_loss)) < 1e-5, (float(ours), float(trl_loss))
    assert abs(float(ours) - 0.6931) > 1e-3  # the models differ: not the trivial log(2)
    assert 0.0 <= metrics["reward_accuracy"] <= 1.0


def test_dpo_loss_formula_on_hand_values() -> None:
    import math

    import torch

    from stages.cai_lib.dpo_loss import dpo_loss

    losses, rc, rr = dpo_loss(torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -2.0]), torch.tensor([-2.0, -4.0]),
                              torch.tensor([-2.0, -4.0]), beta=0.5)
    # pair 0: 0.5 * ((-1+2) - (-3+2)) = 1.0; pair 1: 0.5 * ((-5+4) - (-2+4)) = -1.5
    assert torch.allclose(losses, torch.tensor([math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.5))]))
    assert torch.allclose(rc, torch.tensor([0.5, -0.5])) and torch.allclose(rr, torch.tensor([-0.5, 1.0]))


def test_sequence_logps_masks_prompt_and_padding() -> None:
    import torch

    from stages.cai_lib.dpo_loss import sequence_logps

    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 0]])  # completion = tokens 2 and 3
    lp = logits.log_softmax(-1)
    expected = lp[0, 1, 4] + lp[0, 2, 1]  # token t is predicted at position t-1
    assert torch.allclose(sequence_logps(logits, ids, mask), expected.unsqueeze(0))
