"""Helpers shared by the CAI tests: a tiny real HF causal LM built from scratch.

The tokenizer is a byte-level BPE trained with `tokenizers` on local text; the model is a randomly
initialised ``LlamaForCausalLM`` of ~0.2M parameters saved with ``save_pretrained`` — a real model
that every code path loads with ``AutoModelForCausalLM``/``AutoTokenizer``, just small.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
ROOT = Path(__file__).resolve().parents[3]


def training_text() -> list[str]:
    """Local text to train the tokenizer on (our prompts and the seed manifesto, if present)."""
    lines = [json.loads(l)["prompt"] for l in (ROOT / "stages/cai_lib/builtin_prompts.jsonl").read_text().splitlines() if l.strip()]
    manifesto = Path("/work/shared/seed/genesis-manifesto.txt")
    if manifesto.is_file():
        lines += manifesto.read_text().splitlines()
    return lines


def make_tokenizer(out: Path, vocab_size: int = 384):
    """Train a byte-level BPE and save it as a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_text(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   additional_special_tokens=SPECIALS[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def make_tiny_lm(out: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A randomly initialised LlamaForCausalLM + tokenizer saved in ``out``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    return out


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
