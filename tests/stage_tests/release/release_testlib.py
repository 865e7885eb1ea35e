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

from test_default_target_e2e import Product  # noqa: E402 — tests/ is on sys.path (tests/conftest.py)

RELEASE_SECTION = """
[release]
license = "apache-2.0"
tags = ["tiny"]
"""


class ReleaseWorkspace(Product):
    """``model:e2e`` with a release section and ``release:e2e`` as the default target."""

    drop_env = ("GENESIS_", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")
    timeout = 2400

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        model = root / "specs/model/e2e.toml"
        model.write_text(model.read_text() + RELEASE_SECTION)
        self.write_config("release:e2e")

    def extra_env(self) -> dict[str, str]:
        """An offline, empty Hub home: no token or cache of the machine leaks in."""
        return {"HF_HOME": str(self.root / "hf-home")}

    def data(self, node: str) -> Path:
        """The data dir of the newest object of ``node``."""
        ms = [m for m in self.manifests().values() if m["node"] == node]
        assert ms, f"{node} was never built"
        key = max(ms, key=lambda m: m["created"])["key"]
        return self.root / "cache/objects" / key[:2] / key / "data"
