"""Stage ``export-instruct``: the instruction-tuned model as a transformers model dir.

Node ``export-instruct:<model>`` reads ``instruct:<model>``'s ``hf/`` copy and writes it like the
other exports: ``model.safetensors`` in the architecture's dtype, ``config.json``, tokenizer files
(with the chat template) and ``generation_config.json``, loadable with ``AutoModelForCausalLM``.
It is the model the CAI roles use by default, and ``eval:<model>/instruct`` evaluates it::

    genesis-build export-instruct:tiny
"""

from __future__ import annotations

from genesis_build.stage import Context, SpecView, stage

from stages.instruct import check_instruct


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    return {"instruct": f"instruct:{view.name}"}


@stage("export-instruct", version=1, kind="model", fields=("architecture.dtype",), inputs=_inputs,
       check=check_instruct, heavy=True)
def export_instruct(ctx: Context) -> None:
    """Write the instruct model as an HF model dir (safetensors, tokenizer, chat template)."""
    from stages.cai_lib.finetune import export_model_dir

    n = export_model_dir(ctx.inputs["instruct"].path / "hf", ctx.out, ctx.spec.architecture.dtype)
    ctx.stats(params=n, dtype=ctx.spec.architecture.dtype)
    ctx.log(f"export-instruct: {n} parameters in {ctx.spec.architecture.dtype} → {ctx.out}")
