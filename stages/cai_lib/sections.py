"""The ``[instruct]``, ``[cai]``, ``[sft]`` and ``[dpo]`` sections of the model spec (pydantic only).

Fields that change results are in the stage keys; ``[cai.runtime]`` holds execution details
(batching, timeouts, retries) that never do.
"""

from __future__ import annotations

from typing import Any

from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GENERATOR_HELP = "use \"self\", \"hf:<local model dir>\" or \"openai:http://host:port\""
# Models of this build a CAI role may name (besides hf:/openai:). "self" is the model's own chat
# model: the instruct export when the spec has [instruct], else the pretrained base export.
LOCAL_ROLES = ("base", "instruct")


def check_generator(v: str, extra: tuple[str, ...] = ()) -> str:
    """Validate a generator address (syntax only; reachability is probed when the stage runs)."""
    names = ("self", *extra)
    if v in names:
        return v
    if v.startswith("hf:"):
        if not v[3:].strip():
            raise ValueError(f"'hf:' needs a model directory, e.g. hf:/models/my-lm; {GENERATOR_HELP}")
        return v
    if v.startswith("openai:"):
        url = urlparse(v[len("openai:"):])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"'{v}' is not an http(s) URL; write e.g. openai:http://127.0.0.1:8000")
        try:
            url.port
        except ValueError:
            raise ValueError(f"'{v}' has an invalid port") from None
        return v
    hint = GENERATOR_HELP if not extra else GENERATOR_HELP.replace('"self"', ", ".join(f'"{n}"' for n in names))
    raise ValueError(f"unknown generator '{v}'; {hint}")


class Decoding(BaseModel):
    """Sampling parameters (all in sample keys)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.8, ge=0.0, le=5.0)  # 0 = greedy
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    seed: int = 0  # per-sample RNG streams derive from this and the sample key


class Runtime(BaseModel):
    """Execution details: never part of a key."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=16, ge=1)  # local generators: sequences per generate() call
    concurrency: int = Field(default=8, ge=1)  # openai: parallel requests
    timeout_s: float = Field(default=120.0, gt=0)  # openai: per-request timeout
    retries: int = Field(default=4, ge=0)  # openai: retries with exponential backoff
    device: str = "auto"  # local generators: auto | cpu | cuda | cuda:N


class Preferences(BaseModel):
    """AI-feedback preference pairs (``cai-preferences``)."""

    model_config = ConfigDict(extra="forbid")

    policy: str = "sft"  # who writes the two responses: sft (the SFT model) | hf:<dir> | openai:<url>
    policy_model: str | None = None  # model name for an openai: policy
    feedback: str = "self"  # who judges: self (instruct if [instruct], else base) | base | instruct | sft | hf:<dir> | openai:<url>
    feedback_model: str | None = None  # model name for an openai: feedback model
    num_prompts: int | None = Field(default=None, ge=1)  # None: all prompts of the set
    decoding: Decoding = Decoding(temperature=1.0)
    debias: bool = True  # judge both (A,B) orders and average, cancelling position bias
    min_margin: float = Field(default=0.0, ge=0.0)  # drop pairs whose |margin| is not above this

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        return check_generator(v, ("sft", *LOCAL_ROLES)) if v != "self" else "sft"

    @field_validator("feedback")
    @classmethod
    def _feedback(cls, v: str) -> str:
        return check_generator(v, ("sft", *LOCAL_ROLES))


class CaiSection(BaseModel):
    """``[cai]``: critique → revision data generation."""

    model_config = ConfigDict(extra="forbid")

    generator: str = "self"  # self (instruct if [instruct], else base) | base | instruct | hf:<dir> | openai:<base_url>
    model: str | None = None  # model name for an openai: generator (default: the server's first)
    critic: str | None = None  # who writes critiques and revisions; None: the generator (same names)
    critic_model: str | None = None  # model name for an openai: critic
    decoding: Decoding = Decoding()
    revision_rounds: int = Field(default=1, ge=1, le=8)  # critique→revision passes per sample
    principles_per_prompt: int = Field(default=1, ge=1)  # rendezvous-assigned principles per prompt
    num_prompts: int | None = Field(default=None, ge=1)  # None: all prompts of the set
    runtime: Runtime = Runtime()
    preferences: Preferences = Preferences()

    @field_validator("generator")
    @classmethod
    def _generator(cls, v: str) -> str:
        return check_generator(v, LOCAL_ROLES)

    @field_validator("critic")
    @classmethod
    def _critic(cls, v: str | None) -> str | None:
        return None if v is None else check_generator(v, LOCAL_ROLES)


class _Recipe(BaseModel):
    """Optimisation recipe shared by SFT and DPO (mapped onto the shared trainer's ``Training``).

    Micro-batching, world size and sharding come from the model's ``parallel`` spec and are not
    part of any key; ``checkpoint_every``/``keep_last`` neither.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=100, ge=1)  # optimizer steps (extending them resumes the run)
    lr: float = Field(default=2e-5, gt=0)
    warmup_steps: int = Field(default=5, ge=0)
    schedule: Literal["wsd", "cosine"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)  # 0 disables clipping
    batch_size: int = Field(default=16, ge=1)  # global sequences (SFT) / pairs (DPO) per optimizer step
    max_len: int = Field(default=1024, ge=16)  # tokens per conversation; longer ones are truncated
    seed: int = 0  # data order
    checkpoint_every: int = Field(default=50, ge=1)  # not in the key
    keep_last: int = Field(default=2, ge=1)  # not in the key

    @model_validator(mode="after")
    def _warmup(self) -> "_Recipe":
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        return self


RECIPE_KEY_FIELDS = ("steps", "lr", "warmup_steps", "schedule", "min_lr_ratio", "weight_decay", "grad_clip",
                     "batch_size", "max_len", "seed")


class SftSection(_Recipe):
    """``[sft]``: supervised fine-tuning on the final revisions (loss on assistant tokens only)."""

    system_prompt: bool = False  # train (and sample preference pairs) with the constitution's system prompt


class DpoSection(_Recipe):
    """``[dpo]``: direct preference optimisation on the AI-feedback pairs, reference = the SFT model."""

    lr: float = Field(default=5e-7, gt=0)
    batch_size: int = Field(default=8, ge=1)
    beta: float = Field(default=0.1, gt=0)  # strength of the KL anchor to the reference model


class InstructSection(_Recipe):
    """``[instruct]``: chat fine-tuning of the pretrained model on a ``chat`` spec before CAI (loss on
    assistant tokens only). Its presence makes ``self`` (the CAI roles' default) mean the instruct model."""

    data: str  # "chat:<name>" (specs/chat/<name>.toml): the conversations
    system_prompt: str = ""  # prepended as a system turn to conversations that have none ("" = none)
    too_long: Literal["truncate", "drop"] = "drop"  # conversations over max_len tokens: cut or leave out

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        if not isinstance(v, str) or not v.startswith("chat:") or len(v) <= len("chat:"):
            raise ValueError(f"data must reference a chat spec as \"chat:<name>\" (specs/chat/<name>.toml), got {v!r}")
        return v


SFT_KEY_FIELDS = tuple(f"sft.{f}" for f in (*RECIPE_KEY_FIELDS, "system_prompt"))
DPO_KEY_FIELDS = tuple(f"dpo.{f}" for f in (*RECIPE_KEY_FIELDS, "beta"))
# `instruct.data` is not here: the chat node's output digest is an input of the instruct stage
INSTRUCT_KEY_FIELDS = tuple(f"instruct.{f}" for f in (*RECIPE_KEY_FIELDS, "system_prompt", "too_long"))


def check_recipe(spec: Any, section: str, resolve: Any) -> None:
    """Spec-time checks of an ``[sft]``/``[dpo]`` recipe against the model and its parallel plan,
    so a batch the ranks cannot split fails on --dry-run, not after the stages before it ran."""
    from genesis_build.errors import FieldError

    recipe = getattr(spec, section)
    if recipe is None:
        raise FieldError(section, f"the model spec has no [{section}] section; add one (docs/instruct.md)")
    if recipe.max_len > spec.architecture.context_length:
        raise FieldError(f"{section}.max_len", f"{recipe.max_len} is longer than the model's context "
                                               f"({spec.architecture.context_length}); lower it")
    from stages.training.layout import finetune_parallel

    parallel = finetune_parallel(resolve(spec.parallel), recipe.batch_size)
    world, micro = parallel.world_size, parallel.micro_batch_size
    if recipe.batch_size % (world * micro):
        step = world * micro
        lo, hi = max(step, recipe.batch_size // step * step), (recipe.batch_size // step + 1) * step
        near = f"{lo} or {hi}" if lo != hi and lo != recipe.batch_size else f"{hi}"
        raise FieldError(f"{section}.batch_size", f"{recipe.batch_size} sequences per step cannot be split over world "
                                                  f"size {world} × micro_batch_size {micro}; use {near}, or change "
                                                  f"micro_batch_size / nproc_per_node in the parallel spec")
