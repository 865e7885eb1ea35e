"""Tokenizer: ``specs/tokenizer/<name>.toml`` → a byte-level BPE that ``AutoTokenizer`` loads.

    genesis-build tokenizer:tiny

Trained with Hugging Face ``tokenizers`` (``BpeTrainer`` over a ``ByteLevel`` pre-tokenizer, so any
byte sequence is encodable and nothing is ever unknown) on the train split of the referenced corpus,
then saved through ``transformers`` (``tokenizer.json``, ``tokenizer_config.json`` with the chat
template, ``special_tokens_map.json``). Same corpus + spec → same bytes.

The ``[tokenize]`` table of the same spec configures ``tokenize:<name>`` (stages/tokenize.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genesis_build.errors import FieldError
from genesis_build.stage import Context, SpecView, register_kind, ref_name, stage

# Fixed names (the trainer, SFT/DPO and export rely on them), defined below the stage in data_lib
from stages.data_lib.special_tokens import BOS, CHAT_TOKENS, EOS, PAD

BYTE_ALPHABET = 256  # ByteLevel's initial alphabet: every byte is a token

# Prefix-stable (rendering the first turns is a prefix of rendering all of them), as SFT needs.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _ref(value: str, kind: str, field: str) -> str:
    if not isinstance(value, str) or not value.startswith(f"{kind}:") or len(value) <= len(kind) + 1:
        raise ValueError(f"{field} must reference a {kind} spec, like '{kind}:tiny' (got {value!r})")
    return value


class Training(BaseModel):
    """What the BPE trainer sees."""

    model_config = ConfigDict(extra="forbid")

    # Train on a seeded-by-content sample of the train split: a document is in when a hash of its
    # text falls below the fraction, so the sample is spread over all sources and stays the same
    # documents when data is appended.
    sample_fraction: float = Field(1.0, gt=0, le=1)
    batch_documents: int = Field(1000, gt=0)  # documents per batch handed to the trainer (speed only)


class TokenizeSection(BaseModel):
    """``[tokenize]``: how ``tokenize:<name>`` writes token shards."""

    model_config = ConfigDict(extra="forbid")

    corpus: str | None = None  # corpus to tokenize; default: the tokenizer's training corpus
    dtype: Literal["auto", "uint16", "uint32"] = "auto"  # auto: uint16 when every id fits
    group_documents: int = Field(4096, gt=0)  # mean documents per shard group (content-defined)
    batch_documents: int = Field(512, gt=0)  # documents per encode_batch call (speed only, not in the key)

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, v: str | None) -> str | None:
        return None if v is None else _ref(v, "corpus", "tokenize.corpus")


class TokenizerSpec(BaseModel):
    """``specs/tokenizer/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    corpus: str  # "corpus:<name>": trained on its train split
    vocab_size: int = Field(4096, gt=0)  # including the special tokens
    min_frequency: int = Field(2, ge=1)  # a pair must occur this often to be merged
    max_token_length: int | None = Field(None, gt=0)  # longest merged token, in characters
    split_digits: bool = False  # pre-split numbers into single digits (Llama 3 / SmolLM style)
    extra_special_tokens: list[str] = []  # more special tokens after the built-in seven
    chat_template: str = DEFAULT_CHAT_TEMPLATE  # Jinja, saved in tokenizer_config.json
    model_max_length: int = Field(2048, gt=0)
    training: Training = Training()
    tokenize: TokenizeSection = TokenizeSection()

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, v: str) -> str:
        return _ref(v, "corpus", "corpus")

    @field_validator("extra_special_tokens")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        builtin = {BOS, EOS, PAD, *CHAT_TOKENS}
        for t in v:
            if not t or t in builtin:
                raise ValueError(f"{t!r} is empty or already a built-in special token ({', '.join(sorted(builtin))})")
        if len(set(v)) != len(v):
            raise ValueError("extra_special_tokens lists a token twice")
        return v

    def special_tokens(self) -> list[str]:
        """All special tokens in id order (ids 0…n-1)."""
        return [BOS, EOS, PAD, *CHAT_TOKENS, *self.extra_special_tokens]


register_kind("tokenizer", TokenizerSpec, default_stage="tokenizer")


def min_vocab_size(spec: TokenizerSpec) -> int:
    """Smallest usable vocabulary: the byte alphabet, the special tokens and at least one merge."""
    return BYTE_ALPHABET + len(spec.special_tokens()) + 1


def check_tokenizer(spec: TokenizerSpec, resolve: Any) -> None:
    """Vocabulary size vs special tokens and token dtype (found before anything runs)."""
    need = min_vocab_size(spec)
    if spec.vocab_size < need:
        raise FieldError("vocab_size", f"must be at least {need}: {BYTE_ALPHABET} byte tokens + "
                         f"{len(spec.special_tokens())} special tokens + 1 merge (got {spec.vocab_size})")
    if spec.tokenize.dtype == "uint16" and spec.vocab_size > 65536:
        raise FieldError("tokenize.dtype", f"uint16 holds ids below 65,536 but vocab_size is {spec.vocab_size:,}; "
                         "use \"uint32\" or \"auto\"")


TRAINER_FIELDS = ("vocab_size", "min_frequency", "max_token_length", "split_digits", "extra_special_tokens",
                  "chat_template", "model_max_length", "training.sample_fraction")


def _check(view: SpecView) -> None:
    check_tokenizer(view.spec, view.resolve)


@stage("tokenizer", version=1, kind="tokenizer", fields=TRAINER_FIELDS, check=_check, heavy=True,
       inputs=lambda v, p: {"corpus": f"corpus:{ref_name(v.spec.corpus)}"})
def tokenizer(ctx: Context) -> None:
    """Train a byte-level BPE tokenizer on the corpus train split."""
    from stages.data_lib.bpe import train_tokenizer

    stats = train_tokenizer(ctx.spec, ctx.inputs["corpus"].path, ctx.out, ctx.node, ctx.progress)
    ctx.stats(**stats)
