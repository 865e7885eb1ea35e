"""Small, real stages used to test the engine (no ML): registered from tests via `plugins`.

Kind ``text`` (specs/text/<name>.toml): files to read, a transform, and a field no stage reads.
  read:<name>        concatenates the files (file inputs → content digests in the key)
  words:<name>/<p>   fan-out: one node per `parts` entry, counts words containing that letter
  count:<name>       needs read:<name> and all words parts; writes a JSON summary
  slow:<name>        a heavy (subprocess) stage that reports progress and sleeps `seconds`
Every run appends a line to $GENESIS_TEST_RUNLOG so tests can count exactly which nodes ran.
"""

from __future__ import annotations

import json
import os
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import Context, SpecView, register_kind, stage


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upper: bool = False
    repeat: int = Field(1, ge=1)


class TextSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[str] = []
    shape: Shape = Shape()
    parts: list[str] = ["a", "e"]
    note: str = ""  # read by no stage: editing it must not change any key
    seconds: float = 0.0
    fail: bool = False
    upstream: str | None = None  # another text spec (reference)

    @field_validator("upstream")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("text:"):
            raise ValueError("must reference a text spec, like 'text:other'")
        return v


register_kind("text", TextSpec, default_stage="count")


def _log_run(ctx: Context) -> None:
    path = os.environ.get("GENESIS_TEST_RUNLOG")
    if path:
        with open(path, "a") as f:
            f.write(ctx.node + "\n")


def _check(view: SpecView) -> None:
    if view.spec.shape.repeat > 100:
        raise FieldError("shape.repeat", "must be at most 100")


@stage("read", version=1, kind="text", fields=("shape",), files=lambda v, p: v.spec.files, check=_check)
def read(ctx: Context) -> None:
    """Concatenate the spec's files."""
    _log_run(ctx)
    if ctx.spec.fail:
        raise GenesisError(f"{ctx.node}: asked to fail")
    text = "".join(p.read_text() for p in sorted(ctx.files))
    if ctx.spec.shape.upper:
        text = text.upper()
    (ctx.out / "all.txt").write_text(text * ctx.spec.shape.repeat)
    ctx.stats(chars=len(text))


def _words_select(spec: dict, part: str | None) -> dict:
    return {"part": part}


@stage("words", version=1, kind="text", parts=lambda v: v.spec.parts, select=_words_select,
       inputs=lambda v, p: {"text": f"read:{v.name}"})
def words(ctx: Context) -> None:
    """Count words containing the part's letter."""
    _log_run(ctx)
    text = (ctx.inputs["text"].path / "all.txt").read_text()
    n = sum(1 for w in text.split() if ctx.part in w.lower())
    (ctx.out / "n.json").write_text(json.dumps({"letter": ctx.part, "n": n}))


def _count_inputs(v: SpecView, p: str | None) -> dict[str, str]:
    ins = {"text": f"read:{v.name}", "words": f"words:{v.name}"}
    if v.spec.upstream:
        ins["upstream"] = f"count:{v.spec.upstream.split(':', 1)[1]}"
    return ins


@stage("count", version=1, kind="text", fields=(), inputs=_count_inputs)
def count(ctx: Context) -> None:
    """Summarise the read text and the per-letter counts."""
    _log_run(ctx)
    text = (ctx.inputs["text"].path / "all.txt").read_text()
    per = {}
    for name, ref in sorted(ctx.inputs.items()):
        if name.startswith("words/"):
            per[name.split("/", 1)[1]] = json.loads((ref.path / "n.json").read_text())["n"]
    (ctx.out / "summary.json").write_text(json.dumps({"words": len(text.split()), "per_letter": per}))
    ctx.stats(summary=f"{len(text.split())} words, {len(per)} letters counted")  # shown on the build line


@stage("slow", version=1, kind="text", fields=("seconds",), inputs=lambda v, p: {"text": f"read:{v.name}"}, heavy=True)
def slow(ctx: Context) -> None:
    """Sleep in steps, reporting progress (for lock/kill tests)."""
    _log_run(ctx)
    steps = 10
    for i in range(steps):
        time.sleep(ctx.spec.seconds / steps)
        ctx.progress(i + 1, steps, desc="sleeping")
        (ctx.out / f"step{i}.txt").write_text(str(i))
    print(f"slept {ctx.spec.seconds}s")

