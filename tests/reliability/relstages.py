"""Small real stages for the reliability tests (registered through a workspace's ``plugins``).

Kind ``blob`` (specs/blob/<name>.toml):
  blob:<name>      heavy (subprocess): writes ``files`` files of ``size`` bytes each, reporting progress
                   and sleeping ``seconds`` in total between them (disk-full and kill tests)
  blob-light:<name> the same in the engine's process
  linker:<name>    leaves a symlink to a directory outside the cache in its output (path safety)
Every run appends the node id to $GENESIS_TEST_RUNLOG, like the engine's test stages.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict, Field

from genesis_build.stage import Context, register_kind, stage


class BlobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(ge=0)  # required (the fuzzer deletes it)
    files: int = Field(1, ge=1, le=1000)
    seconds: float = Field(0.0, ge=0)
    seed: int = 0
    link_to: str = "/"  # linker: where the symlink points


register_kind("blob", BlobSpec, default_stage="blob")


def _log_run(ctx: Context) -> None:
    path = os.environ.get("GENESIS_TEST_RUNLOG")
    if path:
        with open(path, "a") as f:
            f.write(ctx.node + "\n")


def _write_blobs(ctx: Context) -> None:
    _log_run(ctx)
    spec = ctx.spec
    chunk = bytes((spec.seed + i) % 251 for i in range(65536))
    for i in range(spec.files):
        with open(ctx.out / f"blob{i:03d}.bin", "wb") as f:
            left = spec.size
            while left > 0:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
        ctx.progress(i + 1, spec.files, desc="blobs")
        if spec.seconds:
            time.sleep(spec.seconds / spec.files)


@stage("blob", version=1, kind="blob", fields=("size", "files", "seed"), heavy=True)
def blob(ctx: Context) -> None:
    """Write deterministic files in a subprocess."""
    _write_blobs(ctx)


@stage("blob-light", version=1, kind="blob", fields=("size", "files", "seed"))
def blob_light(ctx: Context) -> None:
    """Write deterministic files in the engine's process."""
    _write_blobs(ctx)


@stage("linker", version=1, kind="blob", fields=("link_to",))
def linker(ctx: Context) -> None:
    """An output holding a regular file and a symlink to a directory outside the cache."""
    _log_run(ctx)
    (ctx.out / "real.txt").write_text("real\n")
    os.symlink(ctx.spec.link_to, ctx.out / "escape")
