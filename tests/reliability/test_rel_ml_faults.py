"""Fault injection on the real ML stages, through the CLI. Each test is skipped while its stage
module does not exist yet:

* tokenization (``stages/tokenize.py``): kill -9 at a random moment, rerun → identical output;
* pretraining (``stages/pretrain.py``): kill -9 at 5 seeded random steps, one of them while a DCP
  checkpoint is being saved, rerun → final weights bitwise equal to an uninterrupted run; and a
  corrupted checkpoint shard in the cache is quarantined and the rebuilt weights are the right ones;
* CAI generation (``stages/cai_generate.py``): kill -9 mid-generation, rerun → identical dataset,
  no finished sample generated twice.

"Kill" is a machine-crash simulation: SIGKILL of the build's process group, then of every process
still running in the workspace (stage workers and torchrun ranks live in their own sessions).

Pretraining reads ``tokenize:<tokenizer>``; while ``stages/tokenize.py`` is missing, it comes from
the synthetic plugin ``reltokens.py`` (the real pretrain stage and trainer run either way). When the
real tokenize stage exists, the model spec ``extends = "model:tiny"`` with a tiny step count instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rel_helpers import HERE, REPO, kill_group, kill_leftovers, node_objects, one_logical_line, record, rng
from spec_fuzz import make_real_workspace

pytestmark = pytest.mark.slow

STAGES = REPO / "stages"
PRETRAIN_STEPS = 24
KILLS = int(os.environ.get("GENESIS_RELIABILITY_PRETRAIN_KILLS", "5"))

SYNTH_ARCH = """
[architecture]
hidden_size = 64
num_layers = 2
num_heads = 4
num_kv_heads = 2
ffn_size = 128
context_length = 32
dtype = "float32"
"""
SYNTH_MODEL = 'tokenizer = "tokenizer:relsynth"\nparallel = "parallel:relcpu"\n' + SYNTH_ARCH + """
[training]
global_batch_tokens = 256
steps = {steps}
lr = 3e-3
warmup_steps = 2
decay_fraction = 0.25
min_lr_ratio = 0.1
eval_every = 4
checkpoint_every = 2
"""
RELCPU = 'nproc_per_node = 2\nbackend = "gloo"\nmicro_batch_size = 2\n\n[env]\nOMP_NUM_THREADS = "1"\n'


def _need(*modules: str) -> None:
    missing = [m for m in modules if not (STAGES / m).is_file()]
    if missing:
        pytest.skip(f"{', '.join('stages/' + m for m in missing)} not written yet")


def _real_tokenize() -> bool:
    return (STAGES / "tokenize.py").is_file() and (REPO / "specs" / "model" / "tiny.toml").is_file()


class MLWorkspace:
    """A temp copy of the repo's workspace plus the reliability specs, driven through the CLI."""

    def __init__(self, dest: Path, synthetic: bool, allow: list[Path] = ()) -> None:
        self.root = make_real_workspace(REPO, dest)
        conf = self.root / "genesis.toml"
        text = conf.read_text()
        if synthetic:
            shutil.copy(HERE / "reltokens.py", self.root / "reltokens.py")
            text = text.replace('plugins = ["stages"]', 'plugins = ["stages", "reltokens"]')
            self.write("tokenizer", "relsynth", "vocab_size = 257\ntrain_tokens = 40000\n")
            self.write("parallel", "relcpu", RELCPU)
        if allow:
            text = text.replace("allow_paths = [", "allow_paths = [" + "".join(json.dumps(str(a)) + ", " for a in allow))
        conf.write_text(text)

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def write(self, kind: str, name: str, text: str) -> None:
        p = self.root / "specs" / kind / f"{name}.toml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def status(self, target: str) -> dict[str, dict]:
        r = self.cli("--dry-run", "--format", "json", target)
        assert r.returncode == 0, r.stdout + r.stderr
        return {n["id"]: n for n in json.loads(r.stdout)}

    def build_inputs_of(self, target: str) -> None:
        """Build everything the target needs, but not the target."""
        others = [n for n in self.status(target) if n != target]
        if others:
            r = self.cli(*others)
            assert r.returncode == 0, r.stdout + r.stderr

    def obj(self, node: str) -> Path:
        m = node_objects(self.cache)[node]
        return self.cache / "objects" / m["key"][:2] / m["key"]


def _crash(ws: MLWorkspace, p: subprocess.Popen) -> int:
    """SIGKILL the build's group and everything still running in the workspace; returns how many
    processes had outlived the group kill."""
    kill_group(p)
    return len(kill_leftovers(ws.root, wait=0.2))


# ------------------------------------------------------------------------------------------------
# shared inputs: the tokens pretraining reads, built once and copied into each test's cache

RELPT_REAL = """extends = "model:tiny"

# tiny's pipeline (corpus, tokenizer, tokenize, parallel) with a much smaller network and run
[architecture]
hidden_size = 64
num_layers = 2
num_heads = 4
num_kv_heads = 2
ffn_size = 128
context_length = 32

[training]
{budget} = {value}
global_batch_tokens = 256
warmup_steps = 2
eval_every = 4
checkpoint_every = 2
"""


def _pretrain_workspace(dest: Path, synthetic: bool) -> MLWorkspace:
    ws = MLWorkspace(dest, synthetic=synthetic)
    if synthetic:
        ws.write("model", "relpt", SYNTH_MODEL.format(steps=PRETRAIN_STEPS))
    else:
        import tomllib

        tiny = tomllib.loads((REPO / "specs" / "model" / "tiny.toml").read_text())
        budget = "tokens" if "tokens" in tiny.get("training", {}) else "steps"
        ws.write("model", "relpt", RELPT_REAL.format(budget=budget,
                                                     value=PRETRAIN_STEPS * (256 if budget == "tokens" else 1)))
    return ws


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workspace whose cache holds the tokenize output pretraining needs (real stages when they exist)."""
    if not (STAGES / "model_spec.py").is_file():
        pytest.skip("stages/model_spec.py not written yet")
    synthetic = not _real_tokenize()
    ws = _pretrain_workspace(tmp_path_factory.mktemp("ml-base"), synthetic)
    if (STAGES / "pretrain.py").is_file():
        st = ws.status("pretrain:relpt")
        tokens = sorted(n for n, s in st.items() if s["stage"] == "tokenize")
    else:
        st = ws.status("tokenize:tiny" if not synthetic else "tokenize:relsynth")
        tokens = sorted(st)
    target = tokens[0].split("/")[0]
    ws.build_inputs_of(target)
    t0 = time.time()
    r = ws.cli(target)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"ws": ws, "synthetic": synthetic, "tokens_target": target, "tokens_nodes": tokens,
            "tokens_seconds": time.time() - t0}


def _clone(base: dict[str, Any], dest: Path, drop: list[str] = ()) -> MLWorkspace:
    """A new workspace whose cache is a copy of the base's, minus the objects of ``drop``."""
    ws = _pretrain_workspace(dest, base["synthetic"])
    shutil.copytree(base["ws"].cache, ws.cache, symlinks=True, ignore=shutil.ignore_patterns("locks", "runs", "tmp"))
    for node in drop:
        if node in node_objects(ws.cache):
            shutil.rmtree(ws.obj(node))
    return ws


# ------------------------------------------------------------------------------------------------
# tokenization


def test_kill_tokenization_at_a_random_moment_then_rerun_matches(base: dict[str, Any], tmp_path: Path) -> None:
    _need("tokenize.py")
    if base["synthetic"]:
        pytest.skip("the real tokenize stage is not usable yet")
    nodes, target = base["tokens_nodes"], base["tokens_target"]
    want = {n: node_objects(base["ws"].cache)[n]["output_digest"] for n in nodes}
    ws = _clone(base, tmp_path / "crash", drop=nodes)
    delay = rng("tokenize-kill").uniform(0.2, 0.9) * base["tokens_seconds"]
    p = ws.spawn(target)
    time.sleep(delay)
    left = _crash(ws, p)
    again = ws.cli(target)
    got = {n: m["output_digest"] for n, m in node_objects(ws.cache).items() if n in nodes}
    ver = ws.cli("cache", "verify")
    ok = again.returncode == 0 and got == want and ver.returncode == 0
    record("ml_fault", f"kill -9 during {target} after {delay:.1f}s", ok, leftover_processes=left, rerun_rc=again.returncode)
    assert again.returncode == 0, again.stdout + again.stderr
    assert got == want, "tokenize output differs after a crash"
    assert ver.returncode == 0, ver.stdout


# ------------------------------------------------------------------------------------------------
# pretraining


def read_weights(ckpt: Path) -> dict[str, str]:
    """sha256 of every tensor of a DCP checkpoint (consolidated offline, no process group)."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    sd: dict[str, Any] = {}
    _load_state_dict(sd, storage_reader=FileSystemReader(str(ckpt)), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    flat, _ = flatten_state_dict(sd)
    return {k: hashlib.sha256(v.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
            for k, v in flat.items() if isinstance(v, torch.Tensor)}


def _model_part(weights: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in weights.items() if k.startswith("model")}


@pytest.fixture(scope="module")
def pretrain_ref(base: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted pretraining run (the reference for bitwise comparisons)."""
    _need("pretrain.py")
    pytest.importorskip("torch")
    ws = _clone(base, tmp_path_factory.mktemp("pretrain-ref"))
    target = "pretrain:relpt"
    t0 = time.time()
    r = ws.cli(target)
    assert r.returncode == 0, r.stdout + r.stderr
    weights = read_weights(ws.obj(target) / "data" / "checkpoint")
    assert _model_part(weights), sorted(weights)[:10]
    return {"ws": ws, "target": target, "weights": weights, "seconds": time.time() - t0}


def _model_tensor_bytes(ckpt: Path) -> tuple[Path, int, str]:
    """A byte inside the stored data of a model weight: (shard file, offset, tensor name), from the
    checkpoint's DCP metadata (this tool's own .metadata, the one pickle the trust model allows)."""
    from torch.distributed.checkpoint import FileSystemReader

    md = FileSystemReader(str(ckpt)).read_metadata()
    for index, info in sorted(md.storage_data.items(), key=lambda kv: str(kv[0].fqn)):
        if str(index.fqn).startswith("model") and info.length > 16:
            return ckpt / info.relative_path, info.offset + info.length // 2, str(index.fqn)
    raise AssertionError("no model tensor in the checkpoint metadata")


def _run_dir(ws: MLWorkspace) -> Path | None:
    runs = [p for p in (ws.cache / "runs").glob("*") if (p / "job.json").is_file()]
    return runs[0] if runs else None


def _new_train_steps(run: Path, offset: int) -> int:
    f = run / "metrics.jsonl"
    try:
        with open(f, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return -1
    steps = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if rec.get("kind") == "train":
            steps.append(int(rec.get("step", -1)))
    return max(steps, default=-1)


def _kill_at(ws: MLWorkspace, target: str, step: int, mid_save: bool, timeout: float = 300) -> dict[str, Any]:
    """Start the build, SIGKILL everything when training reaches ``step`` (or, with ``mid_save``, while
    a checkpoint directory exists without its DCP ``.metadata``)."""
    run = _run_dir(ws)
    offset = (run / "metrics.jsonl").stat().st_size if run and (run / "metrics.jsonl").is_file() else 0
    p = ws.spawn(target)
    info: dict[str, Any] = {"target_step": step, "mid_save": False, "killed_at": None, "finished_first": False}
    t0 = time.time()
    while time.time() - t0 < timeout:
        if p.poll() is not None:
            info["finished_first"] = True
            break
        run = run or _run_dir(ws)
        if run is not None:
            now = _new_train_steps(run, offset)
            inflight = [d for d in (run / "checkpoints").glob("step-*") if not (d / ".metadata").exists()] \
                if mid_save and (run / "checkpoints").is_dir() else []
            if mid_save and inflight and now >= step - 1:
                info.update(mid_save=True, killed_at=now, checkpoint=inflight[0].name)
                break
            if now >= step + (3 if mid_save else 0):
                info["killed_at"] = now
                break
        time.sleep(0.005)
    info["leftover_processes"] = _crash(ws, p)
    return info


def test_kill_pretraining_at_random_steps_then_final_weights_are_bitwise_equal(
        base: dict[str, Any], pretrain_ref: dict[str, Any], tmp_path: Path) -> None:
    ws, target = _clone(base, tmp_path / "crash"), pretrain_ref["target"]
    r = rng("pretrain-kills")
    steps = sorted(r.sample(range(3, PRETRAIN_STEPS - 2), KILLS))
    save_kill = r.randrange(KILLS)
    kills = [_kill_at(ws, target, s, mid_save=(i == save_kill)) for i, s in enumerate(steps)]
    final = ws.cli(target)
    assert final.returncode == 0, final.stdout + final.stderr
    got = read_weights(ws.obj(target) / "data" / "checkpoint")
    same = _model_part(got) == _model_part(pretrain_ref["weights"])
    m = json.loads((ws.obj(target) / "manifest.json").read_text())
    landed = [k for k in kills if k["killed_at"] is not None]
    ver = ws.cli("cache", "verify")
    for k in kills:
        record("ml_fault", f"kill -9 pretraining at step {k['killed_at']} (aimed at {k['target_step']}"
                           f"{', mid checkpoint save' if k['mid_save'] else ''})", same and ver.returncode == 0, **k)
    assert landed, f"no kill landed during training: {kills}"
    assert same, (f"final weights differ from the uninterrupted run after kills {kills}: "
                  f"{sorted(k for k in _model_part(got) if got[k] != pretrain_ref['weights'].get(k))[:5]}")
    assert got == pretrain_ref["weights"], "model weights equal but optimizer/scheduler state differs"
    assert m["stats"]["resumed_from"] is not None, m["stats"]
    assert ver.returncode == 0, ver.stdout


def test_corrupt_checkpoint_shard_is_quarantined_and_rebuilt_right(pretrain_ref: dict[str, Any]) -> None:
    """A flipped byte in a published checkpoint shard: ``cache verify`` quarantines the object, and the
    rebuild must produce the reference weights again (not re-publish the damaged bytes)."""
    ws, target = pretrain_ref["ws"], pretrain_ref["target"]
    ckpt = ws.obj(target) / "data" / "checkpoint"
    victim, offset, tensor = _model_tensor_bytes(ckpt)
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    corrupted = _model_part(read_weights(ckpt))
    assert corrupted != _model_part(pretrain_ref["weights"]), f"flip missed {tensor}"
    ver = ws.cli("cache", "verify")
    assert ver.returncode == 1 and "content digest mismatch" in one_logical_line(ver.stdout), ver.stdout
    again = ws.cli(target)
    assert again.returncode == 0, again.stdout + again.stderr
    rebuilt = read_weights(ws.obj(target) / "data" / "checkpoint")
    ok = _model_part(rebuilt) == _model_part(pretrain_ref["weights"])
    record("corruption", "checkpoint shard byte flip → quarantine → rebuild", ok)
    laundered = _model_part(rebuilt) == corrupted and ws.cli("cache", "verify").returncode == 0
    assert ok, ("the rebuilt pretrain object holds different weights"
                + (" — exactly the corrupted ones, and `cache verify` now passes" if laundered else ""))


# ------------------------------------------------------------------------------------------------
# CAI generation

CAI_MODEL = 'tokenizer = "tokenizer:relsynth"\nparallel = "parallel:relcpu"\nconstitution = "constitution:genesis"\n' \
            'prompts = "prompts:builtin"\n' + SYNTH_ARCH + """
[training]
global_batch_tokens = 256
steps = 4
lr = 1e-3
warmup_steps = 1
eval_every = 2

[cai]
generator = "hf:{model}"
num_prompts = 8

[cai.decoding]
max_new_tokens = 8
temperature = 0.8
seed = 0

[cai.runtime]
batch_size = 2
device = "cpu"
"""


def make_tiny_lm(out: Path) -> Path:
    """A randomly initialised LlamaForCausalLM with a small trained byte-level BPE and a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    text = [json.loads(ln)["prompt"] for ln in (STAGES / "cai_lib" / "builtin_prompts.jsonl").read_text().splitlines()
            if ln.strip()] if (STAGES / "cai_lib" / "builtin_prompts.jsonl").is_file() else ["hello world"] * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=384, special_tokens=specials, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   additional_special_tokens=specials[3:])
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                                               pad_token_id=fast.pad_token_id)
    model.save_pretrained(out)
    return out


def _samples(ws: MLWorkspace) -> set[str]:
    return {p.name for p in (ws.cache / "samples" / "cai").glob("*/*.json")}


def test_kill_cai_generation_then_rerun_matches_and_keeps_finished_samples(tmp_path: Path) -> None:
    _need("cai_generate.py", "prompts.py")
    pytest.importorskip("transformers")
    model = make_tiny_lm(tmp_path / "tiny-lm")
    target = "cai-generate:relcai"

    ref = MLWorkspace(tmp_path / "ref", synthetic=True, allow=[model])
    ref.write("model", "relcai", CAI_MODEL.format(model=model))
    ref.build_inputs_of(target)
    r = ref.cli(target)
    assert r.returncode == 0, r.stdout + r.stderr
    want = {f: (ref.obj(target) / "data" / f).read_bytes() for f in ("samples.jsonl", "sft.jsonl")}
    total = json.loads((ref.obj(target) / "manifest.json").read_text())["stats"]["total"]

    ws = MLWorkspace(tmp_path / "crash", synthetic=True, allow=[model])
    ws.write("model", "relcai", CAI_MODEL.format(model=model))
    ws.build_inputs_of(target)
    p = ws.spawn(target)
    deadline = time.time() + 300
    while not _samples(ws) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(rng("cai-kill").uniform(0.0, 1.5))
    finished_first = p.poll() is not None
    left = _crash(ws, p)
    done_before = _samples(ws)
    again = ws.cli(target)
    assert again.returncode == 0, again.stdout + again.stderr
    got = {f: (ws.obj(target) / "data" / f).read_bytes() for f in want}
    stats = json.loads((ws.obj(target) / "manifest.json").read_text())["stats"]
    # temp files of writers that are gone (a writer init has not reaped yet still looks alive)
    leftover_tmp = [t for t in (ws.cache / "samples" / "cai").glob("*/.*.tmp")
                    if not Path(f"/proc/{t.name.split('.')[-3]}").exists()]
    ver = ws.cli("cache", "verify")
    ok = got == want and stats["generated"] <= total - len(done_before) and not leftover_tmp and ver.returncode == 0
    record("ml_fault", f"kill -9 during CAI generation ({len(done_before)}/{total} samples done)", ok,
           finished_first=finished_first, leftover_processes=left, generated_after=stats["generated"])
    assert not finished_first or done_before, "generation finished before the kill; nothing was tested"
    assert got == want, "CAI dataset differs from the uninterrupted run"
    assert stats["generated"] <= total - len(done_before), (stats, len(done_before))
    assert not leftover_tmp and ver.returncode == 0, (leftover_tmp, ver.stdout)
