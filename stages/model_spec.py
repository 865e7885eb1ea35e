"""The ``model`` spec kind: ``specs/model/<name>.toml``.

A model spec names its tokenizer and parallel layout by reference and describes the network
(``[architecture]``) and the pretraining recipe (``[training]``). Later pipeline steps (CAI data,
SFT, DPO, evals) add their own sections to :class:`ModelSpec`; every section is its own small
pydantic model so a stage's key covers only the section it reads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genesis_build.stage import register_kind

from stages.cai_lib.sections import CaiSection, DpoSection, InstructSection, SftSection  # [instruct]/[cai]/[sft]/[dpo]


def _ref(value: str | None, kind: str, field: str) -> str | None:
    """Validate a ``kind:name`` reference (None passes)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(f"{kind}:") or len(value) <= len(kind) + 1:
        raise ValueError(f"{field} must reference a {kind} spec as \"{kind}:<name>\" (specs/{kind}/<name>.toml), got {value!r}")
    return value


class Architecture(BaseModel):
    """A Llama-style decoder (built as HF ``LlamaForCausalLM``); vocab comes from the tokenizer."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int | None = Field(default=None, gt=0)  # None: same as num_heads (plain MHA)
    ffn_size: int = Field(gt=0)  # SwiGLU intermediate size
    rope_theta: float = Field(default=10000.0, gt=0)
    context_length: int = Field(gt=1)
    tie_embeddings: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"  # compute dtype; master weights stay fp32
    rms_norm_eps: float = Field(default=1e-5, gt=0)
    init_std: float = Field(default=0.02, gt=0)

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, v: object) -> object:
        return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(v, v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _shapes(self) -> "Architecture":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size}); "
                             f"pick a head count such that hidden_size / num_heads is an integer head dim")
        kv = self.kv_heads
        if self.num_heads % kv:
            raise ValueError(f"num_kv_heads ({kv}) must divide num_heads ({self.num_heads}) "
                             f"(grouped-query attention shares each KV head among num_heads/num_kv_heads query heads)")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"head dim hidden_size/num_heads = {self.hidden_size // self.num_heads} must be even for RoPE")
        return self

    @property
    def kv_heads(self) -> int:
        """KV heads, defaulting to the query head count."""
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        """Per-head dimension."""
        return self.hidden_size // self.num_heads


class Training(BaseModel):
    """The pretraining recipe. Everything here changes the math (and the key) except ``steps`` /
    ``tokens`` (which only extend a run: same trajectory, see ``trajectory_exclude``) and the
    checkpoint cadence (an execution detail, not in the key)."""

    model_config = ConfigDict(extra="forbid")

    global_batch_tokens: int = Field(gt=0)  # tokens per optimizer step, all ranks together
    steps: int | None = Field(default=None, gt=0)  # give steps or tokens (token budget), not both
    tokens: int | None = Field(default=None, gt=0)  # token budget; steps = ceil(tokens / global_batch_tokens)
    lr: float = Field(gt=0)  # peak learning rate
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["wsd", "cosine"] = "wsd"  # WSD: extending steps only re-does the decay
    decay_fraction: float = Field(default=0.2, ge=0, le=1)  # WSD: last fraction of steps decays linearly
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)  # final LR = lr * min_lr_ratio
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)  # 0 disables clipping
    seed: int = 0
    eval_every: int = Field(default=100, gt=0)
    eval_batches: int = Field(default=1, gt=0)  # validation set = the first eval_batches global batches of sequences
    checkpoint_every: int = Field(default=200, gt=0)  # not in the key
    keep_last: int = Field(default=2, ge=1)  # not in the key

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. [0.9, 0.95]; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _budget(self) -> "Training":
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of training.steps or training.tokens (a token budget)")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than the number of steps ({self.total_steps})")
        return self

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run (from ``steps`` or the token budget)."""
        if self.steps is not None:
            return self.steps
        return -(-int(self.tokens or 0) // self.global_batch_tokens)


class ReleaseSection(BaseModel):
    """``[release]``: what the open-weights release (``release:<model>``) writes on its model card and
    which GGUF files it adds. Only the ``release`` stage reads this section, so editing it rebuilds
    the release alone (never evals or training)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # model name on the card, in the model-index and GGUF; default "genesis-<model>"
    license: str = "apache-2.0"  # Hub license id (front matter)
    language: list[str] = ["en"]
    tags: list[str] = []  # added to genesis-build, llama, gguf (+ constitutional-ai with a constitution)
    datasets: list[str] = []  # Hub dataset ids the card lists as training data
    repo_id: str | None = None  # "org/name" used in the card's usage snippets (pushing still needs --push)
    template: str | None = None  # Jinja file for the card body (workspace-relative; its content is in the key)
    gguf: list[Literal["f16", "q8_0"]] = ["f16", "q8_0"]  # GGUF files to write; [] writes none

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        if v is not None and (v.count("/") != 1 or not all(v.split("/"))):
            raise ValueError(f"repo_id must be \"org/name\", got {v!r}")
        return v

    @field_validator("gguf")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"gguf lists a type twice: {v}")
        return v


# Fields of [training] that only change how the run is executed, not its math: kept out of the key.
TRAINING_EXECUTION_FIELDS = ("checkpoint_every", "keep_last")
# Fields that only extend a run: the run directory (trajectory) is shared across their values.
TRAINING_EXTENSION_FIELDS = ("steps", "tokens")


class ModelSpec(BaseModel):
    """``specs/model/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str  # "tokenizer:<name>"; the pretrain input is tokenize:<name>
    parallel: str = "parallel:cpu-2"  # "parallel:<name>": execution layout, not in any key
    constitution: str | None = None
    prompts: str | None = None
    evals: str | None = None
    architecture: Architecture
    training: Training
    instruct: InstructSection | None = None  # chat fine-tuning before CAI (stages/instruct.py); None: CAI on the base
    cai: CaiSection = CaiSection()  # Constitutional AI data generation (stages/cai_generate.py)
    sft: SftSection = SftSection()  # supervised fine-tuning on the revisions (stages/sft.py)
    dpo: DpoSection = DpoSection()  # preference training on AI feedback (stages/dpo.py)
    release: ReleaseSection = ReleaseSection()  # model card + GGUF of release:<model> (stages/release.py)

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer(cls, v: str) -> str:
        return _ref(v, "tokenizer", "tokenizer")  # type: ignore[return-value]

    @field_validator("parallel")
    @classmethod
    def _parallel(cls, v: str) -> str:
        return _ref(v, "parallel", "parallel")  # type: ignore[return-value]

    @field_validator("constitution")
    @classmethod
    def _constitution(cls, v: str | None) -> str | None:
        return _ref(v, "constitution", "constitution")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: str | None) -> str | None:
        return _ref(v, "prompts", "prompts")

    @field_validator("evals")
    @classmethod
    def _evals(cls, v: str | None) -> str | None:
        return _ref(v, "evals", "evals")


register_kind("model", ModelSpec, default_stage="report")
