"""Stand-in upstream stages for the eval/report engine test (a workspace plugin, loaded after
``stages`` so these registrations replace the real ones in that workspace only).

Training a model through corpus → tokenizer → pretrain → SFT → DPO takes minutes; the eval and
report stages only need what those stages publish. So ``pretrain`` and ``instruct`` publish a given
``metrics.jsonl``, ``export`` / ``export-instruct`` / ``export-aligned`` publish prebuilt tiny HF
model dirs (the instruct stand-in is the base model), and the CAI stages publish only their stats. The file inputs (env ``EVT_METRICS``, ``EVT_BASE``,
``EVT_ALIGNED``) are digested into the keys like any file input.
"""

from __future__ import annotations

import os
import shutil

from genesis_build.stage import Context, stage


def _env(name: str):
    return lambda view, part: [os.environ[name]]


@stage("pretrain", version=1, kind="model", files=_env("EVT_METRICS"))
def pretrain(ctx: Context) -> None:
    """Publish the given metrics log."""
    shutil.copy(os.environ["EVT_METRICS"], ctx.out / "metrics.jsonl")


@stage("export", version=1, kind="model", files=_env("EVT_BASE"), inputs=lambda v, p: {"pretrain": f"pretrain:{v.name}"})
def export(ctx: Context) -> None:
    """Publish the prebuilt base model."""
    shutil.copytree(os.environ["EVT_BASE"], ctx.out, dirs_exist_ok=True)


@stage("instruct", version=1, kind="model", files=_env("EVT_METRICS"),
       inputs=lambda v, p: {"pretrain": f"pretrain:{v.name}"})
def instruct(ctx: Context) -> None:
    """Publish the given metrics log as the chat-tuning curve."""
    shutil.copy(os.environ["EVT_METRICS"], ctx.out / "metrics.jsonl")


@stage("export-instruct", version=1, kind="model", files=_env("EVT_BASE"),
       inputs=lambda v, p: {"instruct": f"instruct:{v.name}"})
def export_instruct(ctx: Context) -> None:
    """Publish the prebuilt base model as the instruct model."""
    shutil.copytree(os.environ["EVT_BASE"], ctx.out, dirs_exist_ok=True)


@stage("export-aligned", version=1, kind="model", files=_env("EVT_ALIGNED"),
       inputs=lambda v, p: {"pretrain": f"pretrain:{v.name}"})
def export_aligned(ctx: Context) -> None:
    """Publish the prebuilt 'aligned' model."""
    shutil.copytree(os.environ["EVT_ALIGNED"], ctx.out, dirs_exist_ok=True)


@stage("cai-generate", version=1, kind="model")
def cai_generate(ctx: Context) -> None:
    """Only the stats the report shows."""
    (ctx.out / "meta.json").write_text("{}")
    ctx.stats(generated=2, cached=6, total=8)


@stage("cai-preferences", version=1, kind="model")
def cai_preferences(ctx: Context) -> None:
    """Only the stats the report shows."""
    (ctx.out / "meta.json").write_text("{}")
    ctx.stats(generated=1, cached=3, total=4)
