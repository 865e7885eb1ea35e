"""Cross-spec checks shared by the CAI stages' ``check`` hooks (pydantic + stdlib only).

They run when the graph is built (``--dry-run`` included), so every mistake is reported as
``specs/model/x.toml:LINE: model.cai.generator: …`` before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from genesis_build.errors import FieldError


def require_ref(spec: Any, field: str, kind: str, example: str) -> str:
    """The ``kind:name`` reference in ``spec.<field>``, or a FieldError saying how to set it."""
    value = getattr(spec, field, None)
    if not value:
        raise FieldError(field, f"the CAI stages need a {kind}: set {field} = \"{example}\"")
    if not str(value).startswith(f"{kind}:"):
        raise FieldError(field, f"expected a {kind} reference like \"{example}\" (got {value!r})")
    return str(value)


def check_local_generator(address: str, field: str) -> None:
    """An ``hf:<dir>`` generator must name an existing transformers model directory."""
    if address.startswith("hf:"):
        path = Path(address[3:]).expanduser()
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json (not a transformers model dir)"
            raise FieldError(field, f"{path} {what}")


def check_role(spec: Any, address: str | None, field: str) -> None:
    """A role naming ``instruct`` needs the ``[instruct]`` section; an ``hf:`` dir must exist."""
    if address == "instruct" and getattr(spec, "instruct", None) is None:
        raise FieldError(field, "\"instruct\" names the instruction-tuned model, but the model spec has no [instruct] "
                                "section; add one (data = \"chat:builtin\") or use \"self\" / \"base\"")
    if address:
        check_local_generator(address, field)


def check_cai(spec: Any, resolve: Callable[[str], Any]) -> Any:
    """Checks for cai-generate; returns the constitution spec."""
    address = require_ref(spec, "constitution", "constitution", "constitution:genesis")
    require_ref(spec, "prompts", "prompts", "prompts:builtin")
    constitution = resolve(address)
    active = constitution.active()
    cai = spec.cai
    if cai.principles_per_prompt > len(active):
        raise FieldError("cai.principles_per_prompt",
                         f"{cai.principles_per_prompt} principles per prompt, but {address} has only {len(active)} enabled")
    check_role(spec, cai.generator, "cai.generator")
    check_role(spec, cai.critic, "cai.critic")
    return constitution


def check_preferences(spec: Any, resolve: Callable[[str], Any]) -> None:
    """Checks for cai-preferences."""
    check_cai(spec, resolve)
    prefs = spec.cai.preferences
    check_role(spec, prefs.policy, "cai.preferences.policy")
    check_role(spec, prefs.feedback, "cai.preferences.feedback")
