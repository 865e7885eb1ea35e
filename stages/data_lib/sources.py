"""What the corpus spec and the chat spec share: a list of named sources under one table of default
filters (``[filters]``), which each source's own ``filters`` overrides key by key."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator, model_validator


class SourcesSpec(BaseModel):
    """Base of a spec with ``filters`` defaults and uniquely named ``sources`` (subclasses declare both)."""

    @model_validator(mode="before")
    @classmethod
    def _merge_filters(cls, data: Any) -> Any:
        # a source's `filters` overrides only the keys it sets; the rest come from the spec-level table
        if isinstance(data, dict) and isinstance(data.get("sources"), list):
            base = data.get("filters") or {}
            if isinstance(base, dict):
                data = {**data, "sources": [
                    {**s, "filters": {**base, **(s.get("filters") or {})}} if isinstance(s, dict) else s
                    for s in data["sources"]]}
        return data

    @field_validator("sources", check_fields=False)
    @classmethod
    def _unique(cls, v: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"two sources are named {s.name!r}; source names must be unique")
            seen.add(s.name)
        return v
