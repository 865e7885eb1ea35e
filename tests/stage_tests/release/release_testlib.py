"""Helpers of the release tests: compare a GGUF file's logits with the safetensors model's."""

from __future__ import annotations

from pathlib import Path

TEXT = ("The quick brown fox jumps over the lazy dog. Be honest: 12345 answers, not 7! "
        "Curious people ask follow-up questions, engage with ideas and have opinions; helpful answers "
        "come first, refusals are the exception and say exactly why. What is a prime number?")


def _logits(model_dir: Path, ids, gguf_file: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw).eval()
    with torch.no_grad():
        return m(ids).logits[0]


def compare_gguf(model_dir: Path, gguf_file: str) -> tuple[float, float]:
    """(top-1 agreement, max |logit difference|) of the GGUF vs the safetensors model on TEXT."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(TEXT, return_tensors="pt").input_ids
    ref, got = _logits(model_dir, ids), _logits(model_dir, ids, gguf_file)
    assert ref.shape == got.shape
    return (ref.argmax(-1) == got.argmax(-1)).float().mean().item(), (ref - got).abs().max().item()


# ------------------------------------------------------------------------------------------------
# The end-to-end test's workspace (the repo's specs + ``model:e2e``, see tests/test_default_target_e2e.py)
# with a [release] section and ``release:e2e`` as its default target, driven through the real CLI.

from test_default_target_e2e import ROOT, Product  # noqa: E402 — tests/ is on sys.path (tests/conftest.py)

RELEASE_SECTION = """
[release]
license = "apache-2.0"
tags = ["tiny"]
"""


class ReleaseWorkspace(Product):
    """``model:e2e`` with a release section; ``cli`` runs the real ``genesis-build`` there."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        model = root / "specs/model/e2e.toml"
        model.write_text(model.read_text() + RELEASE_SECTION)
        (root / "genesis.toml").write_text('[workspace]\ndefault = "release:e2e"\nplugins = ["stages"]\n')

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 2400):
        """Run ``genesis-build ARGS`` (GENESIS_* and HF token variables cleared, offline Hub home)."""
        import os
        import subprocess
        import sys

        drop = ("GENESIS_", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")
        full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        full.update({"PYTHONPATH": str(ROOT), "HF_HOME": str(self.root / "hf-home"), **(env or {})})
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=full,
                              capture_output=True, text=True, timeout=timeout)

    def data(self, node: str) -> Path:
        """The data dir of the newest object of ``node``."""
        ms = [m for m in self.manifests().values() if m["node"] == node]
        assert ms, f"{node} was never built"
        key = max(ms, key=lambda m: m["created"])["key"]
        return self.root / "cache/objects" / key[:2] / key / "data"

    def status(self, *targets: str) -> dict[str, dict]:
        """``--dry-run --format json`` by node id."""
        import json

        r = self.cli("--dry-run", "--format", "json", *targets)
        assert r.returncode == 0, r.stdout + r.stderr
        return {n["id"]: n for n in json.loads(r.stdout)}
