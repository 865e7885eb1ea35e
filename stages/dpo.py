"""Stage ``dpo``: direct preference optimisation on the AI-feedback pairs (RL-CAI via DPO).

Node ``dpo:<model>`` starts from the SFT model (``sft:<model>``), which is also the frozen
reference: its log-probabilities of every chosen/rejected completion are computed once, before
training, so the trainer holds only the policy. On CUDA they are computed in a child process that
exits before torchrun starts: a reference model (and a CUDA context) left on cuda:0 in the stage
process would sit next to rank 0's policy for the whole run — enough to run a 24 GB card out of memory. Trains with the shared FSDP2 trainer and the DPO
loss (β = ``[dpo] beta``), resumable like pretraining::

    genesis-build dpo:tiny

Outputs: ``checkpoint/``, ``hf/``, ``metrics.jsonl``, ``train_state.json``, ``data_stats.json``.
"""

from __future__ import annotations

from typing import Any

from genesis_build.stage import Context, SpecView, stage

from stages.cai_lib.sections import DPO_KEY_FIELDS, check_recipe


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    name = view.name
    return {"pairs": f"cai-preferences:{name}", "sft": f"sft:{name}"}


def _check(view: SpecView) -> None:
    check_recipe(view.spec, "dpo", view.resolve)


def reference_logps(model_dir: Any, pairs: list[dict[str, Any]], batch_size: int = 8, device: str = "auto") -> list[tuple[float, float]]:
    """(chosen, rejected) sequence log-probabilities of every pair under the reference model."""
    import torch
    from transformers import AutoModelForCausalLM

    from stages.cai_lib.dpo_loss import sequence_logps
    from stages.cai_lib.generators import resolve_device
    from stages.cai_lib.sft_data import pad_batch

    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    out: list[tuple[float, float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [{"input_ids": p["chosen_ids"], "labels": p["chosen_ids"], "loss_mask": p["chosen_mask"]} for p in chunk] + \
               [{"input_ids": p["rejected_ids"], "labels": p["rejected_ids"], "loss_mask": p["rejected_mask"]} for p in chunk]
        b = pad_batch(rows, 0)
        with torch.inference_mode():
            logits = model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
        lp = sequence_logps(logits, b["input_ids"].to(dev), b["loss_mask"].to(dev)).double().cpu().tolist()
        out += list(zip(lp[: len(chunk)], lp[len(chunk) :]))
    return out


def reference_logps_isolated(model_dir: Any, pairs: list[dict[str, Any]], device: str = "auto") -> list[tuple[float, float]]:
    """:func:`reference_logps`, on CUDA in a spawned process whose exit frees every byte it held on the GPU."""
    from stages.cai_lib.generators import resolve_device

    dev = resolve_device(device)
    if not dev.startswith("cuda"):
        return reference_logps(model_dir, pairs, device=dev)  # CPU: freed when the model goes out of scope
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:  # spawn: a forked child cannot use CUDA
        return pool.apply(reference_logps, (str(model_dir), pairs), {"device": dev})


@stage("dpo", version=2, kind="model", fields=DPO_KEY_FIELDS, inputs=_inputs, check=_check, heavy=True,
       resumable=True, trajectory_exclude=("dpo.steps",))
def dpo(ctx: Context) -> None:
    """Preference-train the SFT model on AI-feedback pairs with the DPO loss."""
    from transformers import AutoTokenizer

    from genesis_build.errors import GenesisError
    from stages.cai_lib.finetune import run_training
    from stages.cai_lib.io import read_jsonl, write_json
    from stages.cai_lib.sft_data import encode_pair

    spec = ctx.spec
    sft_hf = ctx.inputs["sft"].path / "hf"
    tok = AutoTokenizer.from_pretrained(sft_hf)
    rows, dropped = [], 0
    for p in read_jsonl(ctx.inputs["pairs"].path / "pairs.jsonl"):
        enc = encode_pair(tok, p["prompt"], p["chosen"], p["rejected"], spec.dpo.max_len)
        if enc is None:
            dropped += 1
            continue
        rows.append({"chosen_ids": enc["chosen"]["input_ids"], "chosen_mask": enc["chosen"]["loss_mask"],
                     "rejected_ids": enc["rejected"]["input_ids"], "rejected_mask": enc["rejected"]["loss_mask"]})
    if not rows:
        raise GenesisError(f"{ctx.node}: no usable preference pairs in cai-preferences:{ctx.spec_name}")
    ctx.log(f"dpo: {len(rows)} pairs ({dropped} dropped); computing reference log-probabilities")
    for r, (c, j) in zip(rows, reference_logps_isolated(sft_hf, rows, device=spec.cai.runtime.device)):
        r["ref_chosen_logps"], r["ref_rejected_logps"] = c, j
    write_json(ctx.out / "data_stats.json", {"pairs": len(rows), "dropped": dropped})
    run_training(ctx, spec.dpo, "stages.cai_lib.train_tasks:DpoTask",
                 {"batch_size": spec.dpo.batch_size, "beta": spec.dpo.beta}, rows,
                 ctx.inputs["sft"].path / "checkpoint", sft_hf, desc="dpo")
    ctx.stats(pairs=len(rows))
