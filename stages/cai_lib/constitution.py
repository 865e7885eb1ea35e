"""The ``constitution`` spec kind: principles with critique/revision templates.

``specs/constitution/<name>.toml`` holds a table of principles keyed by id, so a constitution that
``extends`` another overrides one principle with a few lines (the engine deep-merges tables and
replaces lists)::

    extends = "constitution:genesis"
    [principles.curious]
    text = "Be curious, but ask at most one follow-up question."

A principle is switched off with ``enabled = false`` (deep merge cannot delete a key).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import templates

ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

DEFAULT_FEEDBACK = (
    "Consider the following conversation between a human and an assistant:\n\n"
    "Human: {prompt}\n\n"
    "{principle}\n\n"
    "Options:\n(A) {response_a}\n(B) {response_b}\n\n"
    "The answer is: ("
)


class Principle(BaseModel):
    """One principle: its statement and the critique/revision requests that apply it."""

    model_config = ConfigDict(extra="forbid")

    text: str  # the principle itself, shown to the model as {principle}
    critique: str  # critique request; placeholders {prompt} {response} {principle}
    revision: str  # revision request; placeholders {prompt} {response} {principle} {critique}
    preference: str | None = None  # multiple-choice question for AI feedback; default: built from text
    enabled: bool = True  # false drops it (an `extends` child cannot delete a table key)

    @field_validator("text")
    @classmethod
    def _text_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the principle text is empty; state the principle, e.g. \"Be honest. Never fabricate.\"")
        return v

    @field_validator("critique")
    @classmethod
    def _critique(cls, v: str) -> str:
        return templates.validate(v, "critique")

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str) -> str:
        return templates.validate(v, "revision")

    @field_validator("preference")
    @classmethod
    def _preference(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("the preference question is empty; remove it to use the default or write the question")
        return v

    def question(self) -> str:
        """The multiple-choice question the feedback model answers for this principle."""
        return self.preference or f"Which of these assistant responses better follows this principle: {self.text.strip()}"


class ConstitutionSpec(BaseModel):
    """``specs/constitution/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""  # free text; not part of any key
    system_prompt: str = ""  # given to the generator for the initial response
    feedback: str = DEFAULT_FEEDBACK  # AI-feedback prompt; {prompt} {response_a} {response_b} {principle}
    principles: dict[str, Principle] = Field(default_factory=dict)

    @field_validator("feedback")
    @classmethod
    def _feedback(cls, v: str) -> str:
        return templates.validate(v, "feedback")

    @field_validator("principles")
    @classmethod
    def _ids(cls, v: dict[str, Principle]) -> dict[str, Principle]:
        for pid in v:
            if not ID_RE.match(pid):
                raise ValueError(
                    f"principle id '{pid}' must be lowercase letters, digits, '-' or '_' and start with a letter"
                )
        return v

    @model_validator(mode="after")
    def _some_enabled(self) -> "ConstitutionSpec":
        if not self.active():
            raise ValueError("the constitution has no enabled principles; add a [principles.<id>] table")
        return self

    def active(self) -> dict[str, Principle]:
        """Enabled principles by id, in file order."""
        return {pid: p for pid, p in self.principles.items() if p.enabled}


def principle_material(pid: str, p: Principle) -> dict[str, Any]:
    """What of a principle a generated sample depends on (goes into per-sample keys)."""
    return {"id": pid, "text": p.text, "critique": p.critique, "revision": p.revision}
