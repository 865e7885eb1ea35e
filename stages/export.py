"""Export the pretrained base model: ``export:<model>`` turns the sharded DCP checkpoint of
``pretrain:<model>`` into a Hugging Face directory, offline (no process group, no GPU)::

    genesis-build export:tiny        # == genesis-build model:tiny (the model kind's default stage)

Output: ``model.safetensors`` (+ index when sharded), ``config.json``, ``generation_config.json`` and
the tokenizer files — loadable with ``AutoModelForCausalLM.from_pretrained`` /
``AutoTokenizer.from_pretrained``. Weights are saved in ``architecture.dtype``.
"""

from __future__ import annotations

from genesis_build.stage import Context, ref_name, spec_name, stage

from stages.model_spec import ModelSpec


def _inputs(spec: ModelSpec, part: str | None) -> dict[str, str]:
    return {"pretrain": f"pretrain:{spec_name(spec)}", "tokens": f"tokenize:{ref_name(spec.tokenizer)}"}


@stage("export", version=1, kind="model", fields=(), inputs=_inputs, heavy=True)
def export(ctx: Context) -> None:
    """Consolidate the pretrain checkpoint into an HF model dir (safetensors + config + tokenizer)."""
    from stages.training.export_hf import export_hf, load_hf_config

    src = ctx.inputs["pretrain"].path
    config = load_hf_config(src / "config.json")
    facts = export_hf(src / "checkpoint", config, ctx.out, tokenizer_dir=ctx.inputs["tokens"].path / "tokenizer")
    if not facts["tokenizer_files"]:
        ctx.log(f"warning: no tokenizer files in {ctx.inputs['tokens'].path / 'tokenizer'}; the export has none")
    ctx.stats(**facts)
