"""The ``chat`` spec kind: ``specs/chat/<name>.toml`` — conversations for instruction tuning.

Mirrors the corpus spec (``stages/corpus.py``): a list of named ``[[sources]]``, corpus-level
``[filters]`` that a source's own ``filters`` table overrides key by key, a sampling ``weight`` per
source and a ``[validation]`` split decided per conversation from its hash::

    seed = 0
    [filters]
    max_turns = 8                       # assistant turns
    [validation]
    fraction = 0.05
    [[sources]]
    name = "ours"
    type = "builtin"                    # the dialogues shipped with genesis-build
    [[sources]]
    name = "smoltalk"
    type = "hub"                        # datasets.load_dataset(dataset, config, split, revision)
    dataset = "HuggingFaceTB/smoltalk"
    config = "all"
    revision = "<commit sha>"           # required: hub content is not digested into the key
    weight = 0.5

Every row holds ``messages: [{role, content}]`` (``messages_field`` names the column); roles are
``system`` (first turn only), ``user`` and ``assistant``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stages.data_lib.sources import SourcesSpec

ChatSourceType = Literal["builtin", "jsonl", "json", "parquet", "disk", "hub"]
FILE_TYPES = ("jsonl", "json", "parquet", "disk")


class ChatFilters(BaseModel):
    """Which conversations a source keeps. Token limits depend on the model's tokenizer, so they
    live in the model spec (``[instruct] max_len`` and ``too_long``), not here."""

    model_config = ConfigDict(extra="forbid")

    min_turns: int = Field(1, ge=1)  # assistant turns at least
    max_turns: int | None = Field(None, ge=1)  # assistant turns at most (None: any)
    max_chars: int = Field(20_000, ge=1)  # characters of all turns together; longer conversations are dropped
    dedup: bool = True  # exact dedup of whole conversations (xxh3-128 of the canonical JSON)
    invalid: Literal["error", "drop"] = "error"  # a row that is not a valid conversation: stop, or count and drop

    @model_validator(mode="after")
    def _range(self) -> "ChatFilters":
        if self.max_turns is not None and self.max_turns < self.min_turns:
            raise ValueError(f"max_turns ({self.max_turns}) is below min_turns ({self.min_turns})")
        return self


class ChatSource(BaseModel):
    """One ``[[sources]]`` entry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: ChatSourceType
    path: str | None = None  # jsonl / json / parquet file, or a datasets save_to_disk dir (disk)
    dataset: str | None = None  # hub: a datasets id
    config: str | None = None  # hub: config / subset name
    split: str = "train"  # hub / disk (DatasetDict)
    revision: str | None = None  # hub: a commit sha or tag (required)
    messages_field: str = "messages"  # the column holding the conversation
    weight: float = Field(1.0, gt=0)  # sampling rate: 0.5 keeps half, 2 repeats every conversation twice
    max_conversations: int | None = Field(None, gt=0)  # read at most this many rows (before filters)
    filters: ChatFilters = ChatFilters()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"source name {v!r} must be letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _locator(self) -> "ChatSource":
        t = self.type
        if t in FILE_TYPES and not self.path:
            raise ValueError(f"source {self.name!r}: type {t!r} needs `path`")
        if t == "hub":
            if not self.dataset:
                raise ValueError(f"source {self.name!r}: type 'hub' needs `dataset` (a datasets id)")
            if not self.revision:
                raise ValueError(f"source {self.name!r}: pin the hub dataset with `revision` (a commit sha or tag): "
                                 "its content is not digested into the key, so an unpinned id could change under a cached build")
        if t != "hub" and (self.dataset, self.config, self.revision) != (None, None, None):
            raise ValueError(f"source {self.name!r}: `dataset`, `config` and `revision` are only for type 'hub'")
        if t in ("hub", "builtin") and self.path is not None:
            raise ValueError(f"source {self.name!r}: type {t!r} takes no `path`")
        return self


class ChatValidation(BaseModel):
    """The held-out split (the instruct stage reports its loss before and after training)."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.05, ge=0, lt=1)  # share of conversations (decided from each one's hash)
    min_conversations: int = Field(1, ge=0)  # at least this many (smallest draws)
    max_conversations: int | None = Field(None, ge=1)  # at most this many (the rest go to train)


class ChatSpec(SourcesSpec):
    """``specs/chat/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    seed: int = 0  # sampling and split decisions are hashes of (seed, conversation)
    filters: ChatFilters = ChatFilters()  # defaults for every source's filters
    validation: ChatValidation = ChatValidation()
    sources: list[ChatSource] = Field(min_length=1)


def source_path(src: ChatSource, workspace: Path) -> Path | None:
    """The local file or directory a source reads (relative paths are workspace-relative)."""
    if src.type == "builtin":
        from .builtin import BUILTIN_FILE

        return BUILTIN_FILE
    if src.path is None:
        return None
    p = Path(src.path).expanduser()
    return p if p.is_absolute() else workspace / p
