"""Helpers shared by the CAI tests: the repo's constitution and prompts, a small [cai] section,
generation with a local model, and a CLI workspace. The tiny LM comes from ``tests/tinylm.py``."""

from __future__ import annotations

import json
from pathlib import Path

from tinylm import ROOT, make_tiny_lm, make_tokenizer  # noqa: F401 — re-exported for the tests


def genesis_constitution():
    """The project's constitution spec, validated."""
    import tomllib

    from stages.cai_lib.constitution import ConstitutionSpec

    return ConstitutionSpec.model_validate(tomllib.loads((ROOT / "specs/constitution/genesis.toml").read_text()))


def builtin_prompts(n: int | None = None) -> list[dict]:
    """Built-in prompts as the ``prompts`` stage writes them ({id, prompt, category})."""
    import xxhash

    rows = [json.loads(l) for l in (ROOT / "stages/cai_lib/builtin_prompts.jsonl").read_text().splitlines() if l.strip()]
    out = [{"id": xxhash.xxh3_64_hexdigest(r["prompt"].encode()), "prompt": r["prompt"], "category": r["category"]} for r in rows]
    return out[:n] if n else out


def generate(model_dir: Path, store_dir: Path, constitution, prompts: list[dict], cai) -> tuple[int, list]:
    """Plan and run CAI generation with a local model; returns (generated, jobs)."""
    from stages.cai_lib import critique
    from stages.cai_lib.generators import HFGenerator, model_dir_identity
    from stages.cai_lib.samples import SampleStore

    store = SampleStore(store_dir)
    gen = HFGenerator(model_dir, model_dir_identity(model_dir), "cpu", cai.runtime.batch_size)
    jobs = critique.plan(prompts, constitution, cai, gen.identity)
    return critique.run(gen, jobs, store, cai, constitution.system_prompt, chunk=cai.runtime.batch_size), jobs


def cai_section(**overrides):
    """A small, fast [cai] section."""
    from stages.cai_lib.sections import CaiSection

    base = {"decoding": {"temperature": 0.8, "max_new_tokens": 4, "seed": 0}, "runtime": {"batch_size": 35, "device": "cpu"}}
    for k, v in overrides.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return CaiSection.model_validate(base)


if __name__ == "__main__":
    # used by the kill-midway test: python cai_testlib.py MODEL_DIR STORE_DIR N_PROMPTS
    import sys

    generate(Path(sys.argv[1]), Path(sys.argv[2]), genesis_constitution(), builtin_prompts(int(sys.argv[3])),
             cai_section(decoding={"max_new_tokens": 32}, runtime={"batch_size": 1}))


class CaiWorkspace:
    """A temp genesis-build workspace with the repo's specs plus ``model:caitest`` (CAI sections
    given by the test), driven through the real CLI."""

    def __init__(self, root: Path, tables: str, allow: list[Path] = ()) -> None:
        import shutil

        self.root = root
        shutil.copytree(ROOT / "specs", root / "specs")
        allow_line = f"allow_paths = {json.dumps([str(p) for p in allow])}\n" if allow else ""
        (root / "genesis.toml").write_text('[workspace]\ndefault = "model:caitest"\n' + allow_line)
        self.write_model(tables)

    def write_model(self, tables: str, top: str = 'constitution = "constitution:genesis"\nprompts = "prompts:builtin"\n') -> None:
        """specs/model/caitest.toml = ``top`` keys + ``tables``; extends the repo's model:tiny when it
        exists (so every referenced spec is real), else a standalone model spec."""
        if (ROOT / "specs/model/tiny.toml").is_file():
            text = 'extends = "model:tiny"\n' + top + tables
        else:
            text = ('tokenizer = "tokenizer:tiny"\n' + top + tables +
                    "\n[architecture]\nhidden_size = 32\nnum_layers = 2\nnum_heads = 4\nffn_size = 64\ncontext_length = 256\n"
                    "[training]\nglobal_batch_tokens = 1024\nsteps = 2\nlr = 1e-3\n")
        (self.root / "specs/model/caitest.toml").write_text(text)

    def cli(self, *args: str, timeout: float = 600):
        """Run the real CLI; returns the CompletedProcess."""
        import os
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
        env["PYTHONPATH"] = str(ROOT)
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def status(self, *targets: str) -> dict[str, dict]:
        """``--dry-run --format json`` as {node: record}."""
        r = self.cli("--dry-run", "--format", "json", *targets)
        assert r.returncode == 0, r.stdout + r.stderr
        return {n["id"]: n for n in json.loads(r.stdout)}

    def manifest(self, node: str) -> dict:
        """Manifest of the cached object of ``node`` (looked up by its current key)."""
        st = self.status(node)
        rec = st[node]
        key = rec["key"]
        assert key, {n: (r["state"], r["reason"]) for n, r in st.items()}
        return json.loads((self.root / "cache" / "objects" / key[:2] / key / "manifest.json").read_text())

    def data(self, node: str) -> Path:
        """Data dir of the cached object of ``node``."""
        key = self.status(node)[node]["key"]
        return self.root / "cache" / "objects" / key[:2] / key / "data"

    def objects(self) -> set[str]:
        """Keys of all published objects."""
        return {p.parent.name for p in (self.root / "cache" / "objects").glob("*/*/manifest.json")}

    def samples(self) -> set[str]:
        """Sample files in the CAI sample store."""
        return {p.name for p in (self.root / "cache" / "samples" / "cai").glob("*/*.json")}
