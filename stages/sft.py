"""Stage ``sft``: supervised fine-tuning on the CAI revisions (Bai et al. 2022, SL-CAI).

Node ``sft:<model>`` starts from the instruct checkpoint (``instruct:<model>``) when the model spec has
an ``[instruct]`` section — the model that wrote the CAI data, so SFT refines it rather than
teaching a base model the chat format from scratch — else from the pretrained checkpoint
(``pretrain:<model>``). It trains with the
shared FSDP2 trainer on ``cai-generate:<model>``'s conversations with the loss on assistant tokens
only (chat template of the base model ``export:<model>``), and resumes from its run directory
after a crash or when ``[sft] steps`` grows::

    genesis-build sft:tiny

Outputs: ``checkpoint/`` (final DCP), ``hf/`` (transformers dir), ``metrics.jsonl``,
``train_state.json``, ``data_stats.json``.
"""

from __future__ import annotations


from genesis_build.stage import Context, SpecView, stage

from stages.cai_lib.sections import SFT_KEY_FIELDS, check_recipe


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    name = view.name
    # the input's name says where training starts; without [instruct] the node keeps the inputs
    # (and so the key) it had before the instruct stage existed
    init = {"instruct": f"instruct:{name}"} if view.spec.instruct is not None else {"pretrain": f"pretrain:{name}"}
    return {"data": f"cai-generate:{name}", **init, "base": f"export:{name}"}


def _check(view: SpecView) -> None:
    check_recipe(view.spec, "sft", view.resolve)


@stage("sft", version=2, kind="model", fields=SFT_KEY_FIELDS, inputs=_inputs, check=_check, heavy=True,
       resumable=True, trajectory_exclude=("sft.steps",))
def sft(ctx: Context) -> None:
    """Fine-tune the base model on the constitution's revisions (assistant-only loss)."""
    import json

    from transformers import AutoTokenizer

    from stages.cai_lib.finetune import run_training
    from stages.cai_lib.io import read_jsonl, write_json
    from stages.cai_lib.sft_data import encode_chat

    spec = ctx.spec
    base = ctx.inputs["base"].path
    tok = AutoTokenizer.from_pretrained(base)
    data = ctx.inputs["data"].path
    system = json.loads((data / "meta.json").read_text()).get("system_prompt", "") if spec.sft.system_prompt else ""
    rows, dropped = [], 0
    for r in read_jsonl(data / "sft.jsonl"):
        msgs = ([{"role": "system", "content": system}] if system.strip() else []) + r["messages"]
        enc = encode_chat(tok, msgs, spec.sft.max_len)
        if enc is None:
            dropped += 1
            continue
        rows.append({"input_ids": enc["input_ids"], "labels": enc["labels"]})
    if not rows:
        from genesis_build.errors import GenesisError

        raise GenesisError(f"{ctx.node}: no usable SFT rows in cai-generate:{ctx.spec_name} (all empty or truncated)")
    n_tok = sum(sum(1 for t in r["labels"] if t != -100) for r in rows)
    write_json(ctx.out / "data_stats.json", {"rows": len(rows), "dropped": dropped, "assistant_tokens": n_tok})
    ctx.log(f"sft: {len(rows)} conversations ({dropped} dropped), {n_tok} assistant tokens")
    init = ctx.inputs["instruct"] if "instruct" in ctx.inputs else ctx.inputs["pretrain"]
    run_training(ctx, spec.sft, "stages.cai_lib.train_tasks:SftTask", {"batch_size": spec.sft.batch_size}, rows,
                 init.path / "checkpoint", base, desc="sft")
    ctx.stats(rows=len(rows), assistant_tokens=n_tok)
