"""Corpus: ``specs/corpus/<name>.toml`` → cleaned, deduplicated, mixed train/validation datasets.

    genesis-build corpus:tiny                  # both stages below
    genesis-build corpus-source:tiny/python-docs

This file registers the ``corpus`` kind and the mixture stage; ``stages/corpus_source.py`` the
per-source stage. Two stages read the ``corpus`` kind:

- ``corpus-source:<name>/<source>`` (one node per source): read the source's documents (text files,
  JSONL, Parquet, a ``datasets`` ``save_to_disk`` dir, a hub dataset, or the running Python's
  bundled ``pydoc`` topics), clean them (Unicode NFC, whitespace), filter (length, language tag) and
  drop exact duplicates (xxh3-128 of the cleaned text). Its key holds only that source's entry and
  the content of its files, so editing one source or adding one file reruns only that node.
- ``corpus:<name>`` (the mixture): cross-source exact dedup (earlier sources win), seeded per-document
  sampling by weight, a seeded train/validation split, written with ``datasets.save_to_disk``.

Paths may start with ``{stdlib}``: the running Python's standard-library directory
(``sysconfig.get_paths()["stdlib"]``), so ``corpus:tiny`` needs no download on any machine.
"""

from __future__ import annotations

import glob as globmod
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genesis_build.errors import FieldError
from genesis_build.stage import Context, SpecView, register_kind, stage

from stages.data_lib.paths import STDLIB, resolve_path
from stages.data_lib.sources import SourcesSpec
from stages.parallel_spec import SbatchOptions

SourceType = Literal["text", "jsonl", "parquet", "disk", "hub", "pydoc-topics"]
FILE_TYPES = ("text", "jsonl", "parquet")  # read from path/glob files


class Filters(BaseModel):
    """Cleaning and filtering of one source. The corpus-level ``[filters]`` table gives defaults;
    a source's ``filters`` table overrides only the keys it sets."""

    model_config = ConfigDict(extra="forbid")

    normalize: Literal["NFC", "NFKC", "none"] = "NFC"  # Unicode normalization form
    whitespace: Literal["lines", "collapse", "none"] = "lines"  # lines: safe for code; collapse: prose
    min_chars: int = Field(1, ge=0)  # after cleaning
    max_chars: int = Field(1_000_000, ge=1)  # after cleaning; longer documents are dropped
    languages: list[str] | None = None  # keep only documents whose language tag is listed
    dedup: bool = True  # exact dedup inside the source (xxh3-128 of the cleaned text)

    @model_validator(mode="after")
    def _range(self) -> "Filters":
        if self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        return self


class Source(BaseModel):
    """One ``[[sources]]`` entry."""

    model_config = ConfigDict(extra="forbid")

    name: str  # node corpus-source:<corpus>/<name>
    type: SourceType
    path: str | None = None  # a file or directory (text/jsonl/parquet), the save_to_disk dir (disk)
    glob: str | list[str] | None = None  # file pattern(s), sorted; `**` recurses (text/jsonl/parquet)
    dataset: str | None = None  # hub: a dataset id for datasets.load_dataset (or a local dataset dir)
    config: str | None = None  # hub: the dataset's config / subset name
    data_dir: str | None = None  # hub: a sub-directory of the dataset repository (load_dataset's data_dir)
    split: str = "train"  # hub / disk (DatasetDict): which split to read
    revision: str | None = None  # hub: pin a commit, since hub content is not digested into the key
    streaming: bool = True  # hub: stream instead of downloading the whole dataset
    text_field: str = "text"  # jsonl / parquet / disk / hub: the column holding the text
    language: str = "en"  # language tag of every document (unless language_field is set)
    language_field: str | None = None  # a column holding a per-document language tag
    weight: float = Field(1.0, gt=0)  # sampling rate in the mixture: 0.5 keeps half, 2 repeats twice
    max_documents: int | None = Field(None, gt=0)  # read at most this many documents (before filters)
    filters: Filters = Filters()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"source name {v!r} must be letters, digits, '.', '_' or '-' (it names node corpus-source:<corpus>/{v})")
        return v

    @model_validator(mode="after")
    def _locator(self) -> "Source":
        t = self.type
        if t in FILE_TYPES and (self.path is None) == (self.glob is None):
            raise ValueError(f"source {self.name!r}: type {t!r} needs exactly one of `path` or `glob`")
        if t == "disk" and (self.path is None or self.glob is not None):
            raise ValueError(f"source {self.name!r}: type 'disk' needs `path` (a datasets save_to_disk directory)")
        if t == "hub" and not self.dataset:
            raise ValueError(f"source {self.name!r}: type 'hub' needs `dataset` (a hub id such as 'HuggingFaceFW/fineweb-edu')")
        if t != "hub" and (self.dataset, self.config, self.data_dir, self.revision) != (None, None, None, None):
            raise ValueError(f"source {self.name!r}: `dataset`, `config`, `data_dir` and `revision` are only for "
                             "type 'hub'; use `path` or `glob`")
        if t in ("hub", "pydoc-topics") and (self.path is not None or self.glob is not None):
            raise ValueError(f"source {self.name!r}: type {t!r} takes no `path`/`glob`")
        return self

    def patterns(self) -> list[str]:
        """File inputs (resolved) whose content goes into the source node's key."""
        if self.type == "pydoc-topics":
            return [resolve_path(f"{STDLIB}/pydoc_data/topics.py")]
        if self.path is not None:
            return [resolve_path(self.path)]
        if self.glob is not None:
            globs = [self.glob] if isinstance(self.glob, str) else self.glob
            return [resolve_path(g) for g in globs]
        return []


class Validation(BaseModel):
    """The held-out split."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.05, ge=0, lt=1)  # share of documents (decided per document from its hash)
    min_documents: int = Field(1, ge=0)  # guarantee at least this many (taken deterministically)


class DataSlurmOptions(SbatchOptions):
    """``[slurm]`` with ``launcher = "slurm"``: each source's shards run as one SLURM job array
    (task i reads the shards whose index is i mod ``array_tasks``), then one 1-node merge job.
    ``cpus_per_task``: CPUs of each array task (and of the merge job). In no key."""

    array_tasks: int = Field(4, ge=1)  # tasks of the array (machines working at once, at most)
    workers_per_task: int | None = Field(None, ge=1)  # processes per array task; default cpus_per_task or 1

    def workers(self) -> int:
        """Worker processes of one array task."""
        return self.workers_per_task or self.cpus_per_task or 1


class CorpusSpec(SourcesSpec):
    """``specs/corpus/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    seed: int = 0  # sampling and split decisions are hashes of (seed, document)
    filters: Filters = Filters()  # defaults for every source's filters
    validation: Validation = Validation()
    shard_documents: int = Field(100_000, gt=0)  # documents per output arrow file
    sources: list[Source] = Field(min_length=1)
    # Execution only, in no key (the output bytes are the same for any value): worker processes per
    # source (default: all cores; env GENESIS_DATA_WORKERS overrides) and the input size of one shard,
    # the unit of parallel work and of resume after a kill.
    workers: int | None = Field(None, ge=1)
    shard_mb: float = Field(64.0, gt=0)
    # Where the shard work runs, in no key either: "local" (this machine's `workers`) or "slurm"
    # (a job array on many machines, see docs/corpus-scale.md "On SLURM"; options in [slurm]).
    launcher: Literal["local", "slurm"] = "local"
    slurm: DataSlurmOptions = DataSlurmOptions()

    def source(self, name: str) -> Source:
        """The source called ``name``."""
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


register_kind("corpus", CorpusSpec, default_stage="corpus")


# --------------------------------------------------------------------------------------------
# Hooks


def check_corpus(view: SpecView) -> None:
    """Every path exists and every glob matches a file (found at plan time, naming the field);
    relative paths are read from the workspace root."""
    spec: CorpusSpec = view.spec
    for i, src in enumerate(spec.sources):
        if src.type == "pydoc-topics":
            if not Path(src.patterns()[0]).is_file():
                raise FieldError(f"sources.{i}.type", f"source {src.name!r}: this Python has no pydoc_data/topics.py "
                                 "(it was built without its documentation); use another source type")
            continue
        if src.path is not None:
            p = Path(resolve_path(src.path))
            shown = src.path
            if not p.is_absolute():
                p = view.workspace / p
            if not p.exists():
                raise FieldError(f"sources.{i}.path", f"source {src.name!r}: {shown} does not exist")
            if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):  # found now, not hours into a build
                raise FieldError(f"sources.{i}.path", f"source {src.name!r}: {shown} is not readable (permissions)")
            if src.type == "disk" and not p.is_dir():
                raise FieldError(f"sources.{i}.path", f"source {src.name!r}: {shown} is not a directory "
                                 "(type 'disk' reads a datasets save_to_disk directory)")
        elif src.glob is not None:
            globs = [src.glob] if isinstance(src.glob, str) else src.glob
            for g in globs:
                pattern = resolve_path(g)
                if not os.path.isabs(pattern):
                    pattern = str(view.workspace / pattern)
                if not any(os.path.isfile(m) or os.path.isdir(m) for m in globmod.iglob(pattern, recursive=True)):
                    raise FieldError(f"sources.{i}.glob", f"source {src.name!r}: {g} matches no file")


def _mixture_select(dump: dict[str, Any], part: str | None) -> dict[str, Any]:
    # Mixture settings only; each source's cleaning reaches this node through its input digest.
    return {
        "seed": dump["seed"],
        "validation": dump["validation"],
        "shard_documents": dump["shard_documents"],  # changes the output files, so it is identity
        "order": [s["name"] for s in dump["sources"]],
        "weights": {s["name"]: s["weight"] for s in dump["sources"]},
    }


def _describe(view: SpecView) -> list[tuple[str, str]]:
    """``--dry-run`` rows: the mixture at a glance."""
    spec: CorpusSpec = view.spec
    mix = ", ".join(f"{s.name} ({s.type}, {s.language}) ×{s.weight:g}" for s in spec.sources)
    v = spec.validation
    return [("sources", mix), ("validation", f"{v.fraction:.2%} of documents, at least {v.min_documents}"),
            ("seed", str(spec.seed)), *_total_rows(view)]


def _total_rows(view: SpecView) -> list[tuple[str, str]]:
    """The sources' summed size (those whose size is known) and reading time at their measured rates
    (one source after another: ``-j N`` divides it by up to N)."""
    from stages.data_lib import hub
    from stages.data_lib.plan import estimate, fmt_bytes
    from stages.training.planner import duration, human

    spec: CorpusSpec = view.spec
    infos = hub.resolve(spec.sources, view.workspace)
    ests = [estimate(view, s, infos.get(s.name)) for s in spec.sources]
    known = [e for e in ests if e.bytes is not None]
    if not known:
        return [("size", "unknown (no source size known yet)")]
    total = sum(e.bytes or 0 for e in known)
    size = f"{fmt_bytes(total)}, ≈{human(total / 4)} tokens (sum of {len(known)} of {len(ests)} sources)"
    etas = [e.eta_s for e in ests]
    eta = (f"{duration(sum(etas))} one source after another (measured rates)"  # type: ignore[arg-type]
           if all(t is not None for t in etas) else f"unknown until every source was built once "
           f"({sum(t is not None for t in etas)} of {len(ests)} measured)")
    return [("size", size), ("ETA", eta)]


@stage("corpus", version=1, kind="corpus", select=_mixture_select, check=check_corpus, describe=_describe, heavy=True,
       inputs=lambda v, p: {"source": f"corpus-source:{v.name}"})
def corpus(ctx: Context) -> None:
    """Mix the sources: cross-source dedup, weighted sampling, train/validation split."""
    from stages.data_lib.mixture import build_mixture

    dirs = {}
    for s in ctx.spec.sources:
        ref = ctx.inputs.get(f"source/{s.name}")
        if ref is None:  # a single-source corpus: the fan-out input is not suffixed
            ref = ctx.inputs["source"]
        dirs[s.name] = ref.path
    stats = build_mixture(ctx.spec, dirs, ctx.out, ctx.node, ctx.progress)
    ctx.stats(**stats)
