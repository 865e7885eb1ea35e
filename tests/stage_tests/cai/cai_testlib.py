"""Helpers shared by the CAI tests: the repo's constitution and prompts, a small [cai] section,
generation with a local model, and a CLI workspace. The tiny LM comes from ``tests/tinylm.py``."""

from __future__ import annotations

import json
from pathlib import Path

from genesis_testlib import RepoWorkspace
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


class CaiWorkspace(RepoWorkspace):
    """A temp genesis-build workspace with the repo's specs plus ``model:caitest`` (CAI sections
    given by the test), driven through the real CLI."""

    def __init__(self, root: Path, tables: str, allow: list[Path] = ()) -> None:
        super().__init__(root, default="model:caitest", allow=allow)
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

    def objects(self) -> set[str]:
        """Keys of all published objects."""
        return {p.parent.name for p in (self.root / "cache" / "objects").glob("*/*/manifest.json")}

    def samples(self) -> set[str]:
        """Sample files in the CAI sample store."""
        return {p.name for p in (self.root / "cache" / "samples" / "cai").glob("*/*.json")}
