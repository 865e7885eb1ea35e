"""The ``evals`` spec kind: ``specs/evals/<name>.toml`` lists the suites a model is evaluated on.

Each suite is an optional table; the ones present are run (``[truthfulqa]`` alone, empty, runs
TruthfulQA MC1/MC2 on the built-in set). Every table's values are in the key of that suite's
``eval-data`` node, and through its output in the key of every ``eval`` node that uses it.

Data: give ``path`` (a local file, workspace-relative; its content is part of the key) *or*
``dataset`` (a Hugging Face dataset id, loaded with ``datasets.load_dataset``; pin ``revision`` for
reproducible keys) — or neither, to use the small built-in set written for genesis-build (results
then say ``"source": "builtin"``: those numbers are smoke tests, not benchmark scores).

pydantic + stdlib only (imported when specs are validated, e.g. by ``--dry-run``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SUITES = ("truthfulqa", "harmbench", "xstest", "engagement")  # run (and part) order


def check_judge(value: str | None, field: str, allow_refusal: bool = True) -> str | None:
    """``refusal`` or ``openai:<http(s) base url>`` (None passes)."""
    if value is None:
        return None
    if allow_refusal and value == "refusal":
        return value
    if value.startswith("openai:"):
        url = value[len("openai:"):]
        if url.startswith(("http://", "https://")) and len(url) > len("http://"):
            return value
    choices = '"refusal" or ' if allow_refusal else ""
    raise ValueError(f"{field} must be {choices}\"openai:<base url>\" (an OpenAI-compatible server, e.g. "
                     f"\"openai:http://127.0.0.1:8001\"), got {value!r}")


class Runtime(BaseModel):
    """How the evaluated model runs. All three values are in the key (dtype and batching change
    the last digits of log-likelihoods)."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", "mps"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # "auto": the checkpoint's dtype (as lm-eval)
    batch_size: int = Field(default=8, gt=0)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        base = v.split(":", 1)[0]
        if base not in ("auto", "cpu", "cuda", "mps") or (":" in v and not v.split(":", 1)[1].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:<index> or mps, got {v!r}")
        return v


class Decoding(BaseModel):
    """Generation settings for suites that sample completions."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=64, gt=0)
    temperature: float = Field(default=0.0, ge=0)  # 0 = greedy (HarmBench's default)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0
    system_prompt: str | None = None  # prepended as a system message when set


class DataSource(BaseModel):
    """Where a suite's items come from: ``path`` xor ``dataset``; neither = the built-in set."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # local file, workspace-relative (content in the key)
    dataset: str | None = None  # Hugging Face dataset id (needs the network or a warm HF cache)
    dataset_config: str | None = None
    split: str | None = None
    revision: str | None = None  # pin it: only the id and revision are in the key, not the content
    limit: int | None = Field(default=None, gt=0)  # first N items, in file order (like lm-eval --limit)

    @model_validator(mode="after")
    def _one_source(self) -> "DataSource":
        if self.path and self.dataset:
            raise ValueError("give either path (a local file) or dataset (a Hugging Face dataset id), not both")
        if not self.dataset and (self.dataset_config or self.revision or self.split):
            raise ValueError("dataset_config / split / revision only apply to dataset = \"<hf id>\"")
        return self


class TruthfulQASuite(DataSource):
    """TruthfulQA multiple choice, scored by log-likelihood exactly as lm-evaluation-harness.

    ``path``: upstream ``mc_task.json`` (targets as ``{answer: 0|1}``) or JSON/JSONL rows in the HF
    ``truthful_qa``/``multiple_choice`` layout (``{"choices": [...], "labels": [...]}``).
    """

    tasks: list[Literal["mc1", "mc2"]] = ["mc1", "mc2"]
    add_bos: bool | None = None  # None: the tokenizer's default, as lm-eval's hf model (add_bos_token unset)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("tasks must list mc1 and/or mc2, each once, e.g. [\"mc1\", \"mc2\"]")
        return v


class HarmBenchSuite(DataSource):
    """HarmBench DirectRequest: each behavior is sent as is (contextual ones as ``context``,
    ``---``, ``behavior``); the completion is judged; attack success rate (ASR) overall and per
    semantic category. ``path``: a HarmBench behaviors CSV."""

    functional_categories: list[str] = ["standard", "contextual"]  # copyright needs upstream's hash files
    judge: str = "refusal"  # "refusal" (ASR = share not refused) or "openai:<url>" (classifier endpoint)
    judge_model: str | None = None  # "model" sent to the endpoint; None: the first of its /v1/models
    judge_api: Literal["completions", "chat"] = "completions"  # completions: Llama-2 [INST] classifier prompt
    judge_template: str | None = None  # file with {behavior} {generation} [{context}]: overrides our prompt
    decoding: Decoding = Decoding()

    @field_validator("judge")
    @classmethod
    def _judge(cls, v: str) -> str:
        return check_judge(v, "harmbench.judge")  # type: ignore[return-value]


class XSTestSuite(DataSource):
    """Over-refusal: XSTest-style safe prompts that look unsafe (refusal rate, lower is better) and
    their unsafe contrasts (compliance rate, lower is better). ``path``: ``xstest_prompts.csv``."""

    judge: str = "refusal"  # or "openai:<url>": a 3-way full compliance / full / partial refusal prompt
    judge_model: str | None = None
    decoding: Decoding = Decoding()

    @field_validator("judge")
    @classmethod
    def _judge(cls, v: str) -> str:
        return check_judge(v, "xstest.judge")  # type: ignore[return-value]


class EngagementSuite(DataSource):
    """Our own suite: prompts (JSONL rows ``{"id", "prompt", "kind"}``, kind one of ``open``,
    ``underspecified``, ``must_refuse``) and the metrics in :mod:`stages.evals_lib.engagement`."""

    rubric_judge: str | None = None  # "openai:<url>": 1-5 rubric score per response (optional)
    rubric_model: str | None = None
    decoding: Decoding = Decoding(max_new_tokens=96)

    @field_validator("rubric_judge")
    @classmethod
    def _judge(cls, v: str | None) -> str | None:
        return check_judge(v, "engagement.rubric_judge", allow_refusal=False)

    @model_validator(mode="after")
    def _no_dataset(self) -> "EngagementSuite":
        if self.dataset:
            raise ValueError("engagement prompts come from a local JSONL path (or the built-in set), not a dataset id")
        return self


class EvalsSpec(BaseModel):
    """``specs/evals/<name>.toml``: the suites (each optional) and the runtime."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""  # not in any key
    runtime: Runtime = Runtime()
    truthfulqa: TruthfulQASuite | None = None
    harmbench: HarmBenchSuite | None = None
    xstest: XSTestSuite | None = None
    engagement: EngagementSuite | None = None

    @model_validator(mode="after")
    def _some_suite(self) -> "EvalsSpec":
        if not self.suites():
            raise ValueError(f"enable at least one suite: add a table such as [truthfulqa] (suites: {', '.join(SUITES)})")
        return self

    def suites(self) -> list[str]:
        """Enabled suites in run order."""
        return [s for s in SUITES if getattr(self, s) is not None]

    def suite(self, name: str) -> DataSource:
        """The config of one enabled suite."""
        cfg = getattr(self, name, None)
        if cfg is None:
            raise KeyError(name)
        return cfg
