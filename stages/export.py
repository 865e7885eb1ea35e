"""Export the pretrained base model: ``export:<model>`` turns the sharded DCP checkpoint of
``pretrain:<model>`` into a Hugging Face directory, offline (no process group, no GPU)::

    genesis-build export:tiny        # == genesis-build model:tiny (the model kind's default stage)

Output: ``model.safetensors`` (+ index when sharded), ``config.json``, ``generation_config.json`` and
the tokenizer files — loadable with ``AutoModelForCausalLM.from_pretrained`` /
``AutoTokenizer.from_pretrained``. Weights are saved in ``architecture.dtype``.

The commands that use an exported model (``export:<model>``, ``export-instruct:<model>`` or
``export-aligned:<model>``) are registered here: ``genesis-build serve TARGET`` (OpenAI-compatible HTTP, :mod:`stages.serving`) and
``genesis-build chat TARGET`` (terminal chat).
"""

from __future__ import annotations

import os
from typing import Any

from genesis_build.commands import positive_int
from genesis_build.stage import Context, SpecView, command, ref_name, stage

from stages.model_spec import ModelSpec


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    spec: ModelSpec = view.spec
    return {"pretrain": f"pretrain:{view.name}", "tokens": f"tokenize:{ref_name(spec.tokenizer)}"}


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


def _serve_arguments(p: Any) -> None:
    p.description = "Serve an exported model (e.g. export:tiny, export-instruct:tiny or export-aligned:tiny)."
    p.add_argument("target")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("GENESIS_API_KEY"), metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (default: $GENESIS_API_KEY); needed beyond loopback")
    p.add_argument("--max-queue", type=positive_int, default=8, metavar="N",
                   help="model requests admitted at once (running + waiting); one more is answered 503")


@command("serve", help="OpenAI-compatible server for an exported model", configure=_serve_arguments)
def serve(args: Any, session: Any) -> int:
    """OpenAI-compatible HTTP server for an exported model (torch is imported only here)."""
    model_dir = session.built(args.target).path
    from stages.serving.openai_server import serve as run_server

    session.print(f"serving {args.target} ({model_dir}) on http://{args.host}:{args.port}/v1")
    run_server(str(model_dir), host=args.host, port=args.port, model_name=args.target, max_queue=args.max_queue,
               api_key=args.api_key)
    return 0


def _chat_arguments(p: Any) -> None:
    p.description = "Chat with an exported model (e.g. export:tiny, export-instruct:tiny or export-aligned:tiny)."
    p.add_argument("target")
    p.add_argument("--max-new-tokens", type=int, default=256)


@command("chat", help="terminal chat with an exported model", configure=_chat_arguments)
def chat(args: Any, session: Any) -> int:
    """Terminal chat with an exported model."""
    model_dir = session.built(args.target).path
    from stages.serving.chat import chat as run_chat

    run_chat(str(model_dir), max_new_tokens=args.max_new_tokens, name=args.target)
    return 0
