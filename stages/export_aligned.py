"""Stage ``export-aligned``: the aligned (SFT → DPO) model as a transformers model dir.

Node ``export-aligned:<model>`` reads ``dpo:<model>``'s ``hf/`` copy and writes it like the base
export: ``model.safetensors`` in the architecture's dtype, ``config.json``, tokenizer files (with
the chat template) and ``generation_config.json``, loadable with ``AutoModelForCausalLM``::

    genesis-build export-aligned:tiny
"""

from __future__ import annotations


from genesis_build.stage import Context, SpecView, stage


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    return {"dpo": f"dpo:{view.name}"}


@stage("export-aligned", version=1, kind="model", fields=("architecture.dtype",), inputs=_inputs, heavy=True)
def export_aligned(ctx: Context) -> None:
    """Write the DPO-trained model as an HF model dir (safetensors, tokenizer, chat template)."""
    from stages.cai_lib.finetune import export_model_dir

    n = export_model_dir(ctx.inputs["dpo"].path / "hf", ctx.out, ctx.spec.architecture.dtype)
    ctx.stats(params=n, dtype=ctx.spec.architecture.dtype)
    ctx.log(f"export-aligned: {n} parameters in {ctx.spec.architecture.dtype} → {ctx.out}")
