"""The ``prompts`` spec kind: a set of user prompts for CAI generation.

One source, or the built-ins plus one other (the built-ins come first)::

    builtin = true                        # our own prompts (stages/cai_lib/builtin_prompts.jsonl)
    path = "data/prompts.jsonl"           # local JSONL / JSON / Parquet, workspace-relative
    dataset = "org/name"                  # a `datasets` id (hub or local dir), with split/revision

Each row gives the prompt text in ``column`` (a string, or a list of chat messages whose first user
turn is taken). Prompts are identified by the digest of their text, so reordering a file or
adding rows never changes which samples the existing prompts map to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUILTIN_FILE = Path(__file__).with_name("builtin_prompts.jsonl")
SUFFIXES = (".jsonl", ".json", ".parquet")


class PromptsSpec(BaseModel):
    """``specs/prompts/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    builtin: bool = False  # use the prompts shipped with genesis-build
    path: str | None = None  # local .jsonl/.json/.parquet file
    dataset: str | None = None  # `datasets.load_dataset` id or local dataset dir
    split: str = "train"  # dataset split
    revision: str | None = None  # dataset revision (pin it: a hub dataset is not content-addressed)
    column: str = "prompt"  # column with the prompt text (or chat messages)
    category_column: str | None = "category"  # optional column copied through (for reports)
    categories: list[str] | None = None  # keep only these categories (None: all)
    limit: int | None = Field(default=None, ge=1)  # keep the first N prompts after dedup

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.endswith(SUFFIXES):
            raise ValueError(f"path must end in {', '.join(SUFFIXES)} (got {v!r}); convert the file or use dataset=")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "PromptsSpec":
        others = [n for n, v in (("path", self.path), ("dataset", self.dataset)) if v]
        if len(others) > 1 or not (others or self.builtin):
            raise ValueError(
                "give one prompt source: builtin = true, path = \"file.jsonl\" or dataset = \"org/name\" "
                "(builtin = true may be combined with one of the others)"
                + (f" (got {', '.join(others)})" if others else "")
            )
        return self

    def source_file(self, workspace: Path) -> Path | None:
        """The local file this set reads (None for a dataset id)."""
        if self.builtin:
            return BUILTIN_FILE
        if self.path:
            p = Path(self.path).expanduser()
            return p if p.is_absolute() else workspace / p
        return None


def prompt_text(row: dict[str, Any], column: str) -> str | None:
    """The prompt in one row: a string, or the first user turn of a chat-messages list."""
    value = row.get(column)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for m in value:
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    return None
