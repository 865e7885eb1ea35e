"""Helpers for the data-stage tests: synthetic text, direct stage-function runs, CLI workspaces."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from tinylm import ROOT

from stages.corpus import CorpusSpec
from stages.tokenizer import TokenizerSpec

WORDS = ("the model reads every token of the corpus and learns which byte pairs merge into words while the "
         "build system caches each stage by the content hash of exactly what it reads so that nothing runs "
         "twice and the tokenizer trains in seconds on a small corpus of synthetic sentences").split()


def sentence_doc(seed: int, sentences: int = 6) -> str:
    """A deterministic prose document."""
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return f"Document {seed}. " + " ".join(out)


def code_doc(seed: int) -> str:
    """A deterministic Python-looking document (indentation must survive cleaning)."""
    rng = random.Random(seed)
    name = f"f{seed}"
    body = "\n".join(f"    x{i} = {rng.randint(0, 999)} + x{i - 1 if i else 0}" for i in range(rng.randint(3, 8)))
    return f"def {name}(x0):\n{body}\n    return x0\n"


def noop(*_: Any, **__: Any) -> None:
    """A progress callback that ignores everything."""


def corpus_spec(sources: list[dict[str, Any]], **top: Any) -> CorpusSpec:
    """A validated CorpusSpec from plain dicts."""
    return CorpusSpec.model_validate({"sources": sources, **top})


def tokenizer_spec(**fields: Any) -> TokenizerSpec:
    """A validated TokenizerSpec (corpus reference defaults to corpus:test)."""
    return TokenizerSpec.model_validate({"corpus": "corpus:test", **fields})


def source_files(spec: CorpusSpec, name: str, workspace: Path) -> list[Path]:
    """What the engine's ``files`` hook expansion gives the source node (sorted regular files)."""
    import glob

    out: list[Path] = []
    for pattern in spec.source(name).patterns():
        p = Path(pattern) if os.path.isabs(pattern) else workspace / pattern
        matches = sorted(glob.glob(str(p), recursive=True)) if set("*?[") & set(pattern) else [str(p)]
        for m in matches:
            mp = Path(m)
            out += sorted(f for f in mp.rglob("*") if f.is_file()) if mp.is_dir() else [mp] if mp.is_file() else []
    return sorted(out)


def build_corpus(spec: CorpusSpec, workspace: Path, out: Path) -> dict[str, Any]:
    """Run corpus-source for every source and the mixture, as the engine would; returns mixture stats."""
    from stages.data_lib.ingest import build_source
    from stages.data_lib.mixture import build_mixture

    dirs = {}
    for i, src in enumerate(spec.sources):
        d = out.parent / f"{out.name}-src-{src.name}"
        d.mkdir(parents=True)
        build_source(src, i, source_files(spec, src.name, workspace), workspace, d, f"corpus-source:test/{src.name}", noop)
        dirs[src.name] = d
    out.mkdir(parents=True)
    return build_mixture(spec, dirs, out, "corpus:test", noop)


def write_docs(d: Path, docs: dict[str, str]) -> None:
    """Write ``name → text`` files under ``d``."""
    for name, text in docs.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text, encoding="utf-8")


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class CliWorkspace:
    """A temp workspace using the built-in stages, driven through the real CLI.

    ``build`` returns the nodes that ran: the manifests of objects that appeared in the cache.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "specs" / "corpus").mkdir(parents=True, exist_ok=True)
        (root / "specs" / "tokenizer").mkdir(parents=True, exist_ok=True)
        (root / "genesis.toml").write_text('[workspace]\ndefault = "tokenize:t"\nplugins = ["stages"]\n')

    def spec(self, kind: str, name: str, text: str) -> Path:
        """Write specs/<kind>/<name>.toml."""
        p = self.root / "specs" / kind / f"{name}.toml"
        p.write_text(text)
        return p

    def objects(self) -> dict[str, dict[str, Any]]:
        """key → manifest of every object in the cache."""
        out = {}
        for m in (self.root / "cache" / "objects").glob("*/*/manifest.json"):
            out[m.parent.name] = json.loads(m.read_text())
        return out

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``genesis-build ARGS`` here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
        env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def build(self, *targets: str) -> tuple[subprocess.CompletedProcess, dict[str, dict[str, Any]]]:
        """Build; returns (process, {node id: manifest} of the nodes that ran)."""
        before = set(self.objects())
        p = self.cli(*targets)
        after = self.objects()
        ran = {m["node"]: m for k, m in after.items() if k not in before}
        return p, ran

    def manifest(self, node: str) -> dict[str, Any]:
        """The manifest of the node's current output (via ``out/`` link or the newest object)."""
        found = [m for m in self.objects().values() if m["node"] == node]
        return max(found, key=lambda m: m["created"])
