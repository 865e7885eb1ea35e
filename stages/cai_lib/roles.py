"""Which model plays each CAI role (pydantic-free, stdlib only: the stages' hooks call it).

Roles: the *generator* writes initial answers, the *critic* writes critiques and revisions (default:
the generator), the *policy* writes the two responses of a preference pair (default: the SFT model)
and the *feedback* model judges them. Each role is an address:

* ``self`` — this model's own chat model: ``instruct`` when the spec has an ``[instruct]`` section,
  else ``base``. A model pretrained from scratch cannot follow "critique this answer"; its
  instruction-tuned version can, so that is the default whenever it exists;
* ``base`` / ``instruct`` / ``sft`` — a model this build makes (``export:<m>``,
  ``export-instruct:<m>``, ``sft:<m>``'s ``hf/`` copy);
* ``hf:<dir>`` / ``openai:<url>`` — a local transformers dir or an OpenAI-compatible server.

The identity each role reports (content digest of the weights, or the server's model name) goes
into the per-sample keys, so changing one role regenerates only what that role produced.
"""

from __future__ import annotations

from typing import Any

# a local role → (node stage that builds it, subdirectory holding the HF model in its output)
LOCAL = {"base": ("export", ""), "instruct": ("export-instruct", ""), "sft": ("sft", "hf")}


def resolve_role(spec: Any, address: str | None) -> str | None:
    """``self`` → ``instruct`` or ``base`` depending on the spec; other addresses unchanged."""
    if address == "self":
        return "instruct" if getattr(spec, "instruct", None) is not None else "base"
    return address


def role_inputs(spec: Any, name: str, *addresses: str | None) -> dict[str, str]:
    """``{input name: node}`` for the roles built by this pipeline (``base``, ``instruct``, ``sft``)."""
    out = {}
    for a in addresses:
        role = resolve_role(spec, a)
        if role in LOCAL:
            out[role] = f"{LOCAL[role][0]}:{name}"
    return out


def role_files(spec: Any, *addresses: str | None) -> list[str]:
    """The ``hf:<dir>`` directories among the roles (their contents are in the key)."""
    return [a[3:] for a in addresses if a and a.startswith("hf:")]


def local_dirs(ctx: Any) -> dict[str, Any]:
    """``{role: (HF dir, output digest)}`` for the role inputs this node has."""
    from .io import local_model

    return {role: local_model(ctx, role, sub) for role, (_, sub) in LOCAL.items() if role in ctx.inputs}
