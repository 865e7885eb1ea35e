"""Stage ``instruct``: chat fine-tuning of the pretrained model before Constitutional AI.

A model pretrained from scratch has never seen a conversation, so it cannot follow "critique this
answer" or "which answer is better?". Node ``instruct:<model>`` (when the model spec has an
``[instruct]`` section) starts from ``pretrain:<model>``'s checkpoint and trains on the
conversations of ``chat:<name>`` (``[instruct] data``) with the loss on assistant tokens only,
rendered with the base export's chat template (``export:<model>``). It runs the shared FSDP2 / DCP
trainer through ``stages.cai_lib.finetune`` (exact resume; a longer ``[instruct] steps`` continues
the run) and evaluates the chat set's validation split at step 0 and at the end::

    genesis-build instruct:tiny
    genesis-build export-instruct:tiny       # the same weights as a release-style HF dir

Outputs: ``checkpoint/`` (final DCP), ``hf/`` (transformers dir, float32), ``metrics.jsonl``,
``train_state.json``, ``data_stats.json``. The CAI roles then default to this model
(``export-instruct:<model>``), and ``sft:<model>`` starts from its checkpoint.
"""

from __future__ import annotations

from typing import Any

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import Context, SpecView, ref_name, stage

from stages.cai_lib.sections import INSTRUCT_KEY_FIELDS, check_recipe


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    name, ins = view.name, view.spec.instruct
    out = {"pretrain": f"pretrain:{name}", "base": f"export:{name}"}
    if ins is not None:
        out["chat"] = f"chat:{ref_name(ins.data)}"
    return out


def check_instruct(view: SpecView) -> None:
    """``[instruct]`` exists, its batch fits the parallel plan and ``data`` names a valid chat spec."""
    check_recipe(view.spec, "instruct", view.resolve)
    address = view.spec.instruct.data
    try:
        view.resolve(address)
    except GenesisError as e:
        from genesis_build.errors import did_you_mean

        names = sorted(p.stem for p in (view.workspace / "specs" / "chat").glob("*.toml"))
        hint = did_you_mean(ref_name(address), names)
        raise FieldError("instruct.data", f"{e}{hint} (chat specs: {', '.join(names) or 'none'} in specs/chat/)") from None


def _describe(view: SpecView) -> list[tuple[str, str]]:
    """The recipe, and an upper-bound ETA at the pretraining planner's throughput (every
    conversation padded to max_len; real conversations are shorter)."""
    ins = view.spec.instruct
    if ins is None:
        return []
    rows = [("instruct", f"{ins.data}: {ins.steps} steps × {ins.batch_size} conversations of ≤ {ins.max_len} tokens "
                         f"(lr {ins.lr:g}, {ins.schedule}); loss on assistant tokens only")]
    try:
        par = view.resolve(view.spec.parallel)
        vocab = getattr(view.resolve(view.spec.tokenizer), "vocab_size", None)
    except GenesisError:
        return rows
    from stages.training.planner import duration, flops_per_token, human

    tokens = ins.steps * ins.batch_size * ins.max_len
    world = par.nproc_per_node * par.nnodes
    tok_s = par.tokens_per_second or (par.peak_tflops_per_device * 1e12 * world * par.mfu_guess
                                      / flops_per_token(view.spec.architecture, vocab if isinstance(vocab, int) else 32000)
                                      if par.peak_tflops_per_device else None)
    if tok_s:
        rows.append(("instruct ETA", f"≤ {duration(tokens / tok_s)} for ≤ {human(tokens)} tokens at {tok_s:,.0f} tokens/s "
                                     "(the pretraining planner's throughput; padding to max_len counted)"))
    return rows


def encode_rows(tok: Any, rows: list[dict[str, Any]], max_len: int, too_long: str,
                system_prompt: str = "") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Chat rows → ``{"input_ids", "labels"}`` with the assistant-only mask of
    :func:`stages.cai_lib.sft_data.encode_chat`; conversations over ``max_len`` tokens are dropped
    (``too_long = "drop"``) or cut (``"truncate"``). Returns (rows, counts of what was dropped)."""
    from stages.cai_lib.sft_data import IGNORE, encode_chat

    out, dropped = [], {"too_long": 0, "no_assistant_token": 0}
    for r in rows:
        msgs = r["messages"]
        if system_prompt.strip() and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system_prompt}] + msgs
        enc = encode_chat(tok, msgs, 1 << 30)  # full length first: a cut is a decision, not an accident
        if enc is not None and len(enc["input_ids"]) > max_len:
            if too_long == "drop":
                dropped["too_long"] += 1
                continue
            enc = {k: v[:max_len] for k, v in enc.items()}
            if not any(t != IGNORE for t in enc["labels"]):
                enc = None
        if enc is None:
            dropped["no_assistant_token"] += 1
            continue
        out.append({"input_ids": enc["input_ids"], "labels": enc["labels"]})
    return out, dropped


@stage("instruct", version=1, kind="model", fields=INSTRUCT_KEY_FIELDS, inputs=_inputs, check=check_instruct,
       describe=_describe, heavy=True, resumable=True, trajectory_exclude=("instruct.steps",))
def instruct(ctx: Context) -> None:
    """Chat-tune the pretrained model on the chat spec's conversations (assistant-only loss)."""
    from transformers import AutoTokenizer

    from stages.cai_lib.finetune import run_training
    from stages.cai_lib.io import read_jsonl, write_json

    ins = ctx.spec.instruct
    base = ctx.inputs["base"].path
    tok = AutoTokenizer.from_pretrained(base)
    data = ctx.inputs["chat"].path
    rows, dropped = encode_rows(tok, read_jsonl(data / "train.jsonl"), ins.max_len, ins.too_long, ins.system_prompt)
    val, val_dropped = encode_rows(tok, read_jsonl(data / "validation.jsonl"), ins.max_len, ins.too_long, ins.system_prompt)
    if not rows:
        raise GenesisError(f"{ctx.node}: no usable conversation in {ins.data} ({dropped['too_long']} longer than "
                           f"[instruct] max_len = {ins.max_len} tokens; set too_long = \"truncate\" or raise max_len)")
    n_tok = sum(sum(1 for t in r["labels"] if t != -100) for r in rows)
    stats = {"rows": len(rows), "validation_rows": len(val), "dropped": dropped, "validation_dropped": val_dropped,
             "assistant_tokens": n_tok, "tokens": sum(len(r["input_ids"]) for r in rows),
             "epochs": round(ins.steps * ins.batch_size / len(rows), 3)}
    write_json(ctx.out / "data_stats.json", stats)
    ctx.log(f"instruct: {len(rows)} conversations ({sum(dropped.values())} dropped), {n_tok} assistant tokens, "
            f"{len(val)} validation; {stats['epochs']} epochs")
    run_training(ctx, ins, "stages.cai_lib.train_tasks:InstructTask", {"batch_size": ins.batch_size}, rows,
                 ctx.inputs["pretrain"].path / "checkpoint", base, desc="instruct", validation=val)
    ctx.stats(rows=len(rows), validation_rows=len(val), assistant_tokens=n_tok, epochs=stats["epochs"])
