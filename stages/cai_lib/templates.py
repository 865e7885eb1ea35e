"""Prompt templates with ``{placeholder}`` fields, validated before any generation runs.

Templates use ``str.format`` syntax: ``{response}`` is replaced, ``{{`` and ``}}`` are literal
braces. Only plain names are allowed (no ``{x.attr}``, ``{x[0]}``, ``{x!r}`` or ``{x:>10}``), so a
template can never reach into Python objects and every mistake is caught when the spec loads.
"""

from __future__ import annotations

import string

# Placeholders each template kind may use, and those it must use (a critique that never shows the
# response cannot critique it).
ALLOWED: dict[str, frozenset[str]] = {
    "critique": frozenset({"prompt", "response", "principle"}),
    "revision": frozenset({"prompt", "response", "principle", "critique"}),
    "feedback": frozenset({"prompt", "response_a", "response_b", "principle"}),
}
REQUIRED: dict[str, frozenset[str]] = {
    "critique": frozenset({"response"}),
    "revision": frozenset({"response"}),
    "feedback": frozenset({"response_a", "response_b"}),
}


def placeholders(template: str) -> list[str]:
    """Field names used by ``template`` in order; ValueError with a fix-it message when malformed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"malformed template ({e}); write {{{{ and }}}} for literal braces") from None
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise ValueError(
                f"placeholder {{{name}}} is not a plain name; use e.g. {{response}} (write {{{{ and }}}} for literal braces)"
            )
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}...}} may not have a format spec or conversion; write just {{{name}}}")
        names.append(name)
    return names


def validate(template: str, kind: str) -> str:
    """Check a template of ``kind`` (critique/revision/feedback); returns it unchanged."""
    if not template.strip():
        raise ValueError(f"the {kind} template is empty; write the request the model should answer")
    used = placeholders(template)
    allowed = ALLOWED[kind]
    unknown = [n for n in used if n not in allowed]
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in the {kind} template; allowed: "
            + ", ".join("{" + a + "}" for a in sorted(allowed))
        )
    missing = sorted(REQUIRED[kind] - set(used))
    if missing:
        raise ValueError(f"the {kind} template must contain " + ", ".join("{" + m + "}" for m in missing))
    return template


def render(template: str, **values: str) -> str:
    """Fill a validated template (extra values are ignored)."""
    return template.format_map({name: values[name] for name in placeholders(template)})
