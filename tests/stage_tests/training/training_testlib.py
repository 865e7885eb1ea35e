"""Helpers for the trainer tests: synthetic tokenize outputs, job files, torchrun runs, DCP reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinylm import ROOT

from stages.training.config import TrainJob
from stages.training.launch import rank_env, torchrun_command

TINY_ARCH = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "ffn_size": 128,
             "rope_theta": 10000.0, "context_length": 32, "tie_embeddings": False, "dtype": "float32"}


def make_tokens(out: Path, vocab: int = 257, train_tokens: int = 40_000, val_tokens: int = 4_000,
                shards: int = 2, seed: int = 0, dtype: str = "uint16") -> Path:
    """A tokenize-format dir with learnable synthetic documents (arithmetic runs mod vocab-1).

    Real memmap shards and ``.idx.npy`` document offsets, exactly the agreed meta.json layout.
    """
    rng = np.random.default_rng(seed)
    eos = vocab - 1
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"dtype": dtype, "vocab_size": vocab, "eos_id": eos, "bos_id": eos, "pad_id": eos, "splits": {}}
    for split, n_tokens in (("train", train_tokens), ("validation", val_tokens)):
        docs, total = [], 0
        while total < n_tokens:
            n = int(rng.integers(8, 60))
            start, step = int(rng.integers(0, eos)), int(rng.integers(1, 4))
            doc = (start + step * np.arange(n)) % eos
            docs.append(np.append(doc, eos).astype(dtype))
            total += n + 1
        per = -(-len(docs) // (shards if split == "train" else 1))
        (out / split).mkdir(exist_ok=True)
        shard_meta, n_total, n_docs = [], 0, 0
        for i in range(0, len(docs), per):
            chunk = docs[i : i + per]
            arr = np.concatenate(chunk)
            f = f"{split}/{i // per:05d}.bin"
            arr.tofile(out / f)
            starts = np.concatenate([[0], np.cumsum([len(d) for d in chunk])[:-1]]).astype(np.int64)
            np.save(out / f"{split}/{i // per:05d}.idx.npy", starts)
            shard_meta.append({"file": f, "tokens": int(len(arr)), "index": f"{split}/{i // per:05d}.idx.npy"})
            n_total += len(arr)
            n_docs += len(chunk)
        meta["splits"][split] = {"tokens": n_total, "documents": n_docs, "shards": shard_meta}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def make_job(tmp: Path, data_dir: Path, run_dir: Path, *, steps: int = 12, nproc: int = 2, vocab: int = 257,
             arch: dict[str, Any] | None = None, training: dict[str, Any] | None = None,
             parallel: dict[str, Any] | None = None, reset_optimizer: bool = False, name: str = "job") -> Path:
    """Write a job.json for the tiny model; returns its path."""
    tr = {"global_batch_tokens": 32 * 8, "steps": steps, "lr": 3e-3, "warmup_steps": 2, "schedule": "wsd",
          "decay_fraction": 0.25, "min_lr_ratio": 0.1, "seed": 1, "eval_every": 4, "eval_batches": 1,
          "checkpoint_every": 3, "keep_last": 2, "weight_decay": 0.1, "grad_clip": 1.0}
    tr.update(training or {})
    par = {"nproc_per_node": nproc, "backend": "gloo", "micro_batch_size": 2, "async_checkpoint": True}
    par.update(parallel or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    job = TrainJob.model_validate({
        "architecture": {**TINY_ARCH, **(arch or {})}, "training": tr, "parallel": par,
        "data_dir": str(data_dir), "run_dir": str(run_dir), "vocab_size": vocab,
        "special_ids": {"eos_id": vocab - 1, "bos_id": vocab - 1, "pad_id": vocab - 1},
        "reset_optimizer": reset_optimizer, "progress_file": str(run_dir / "progress.jsonl"),
    })
    path = tmp / f"{name}.json"
    job.write(path)
    return path


def start(job_path: Path) -> subprocess.Popen:
    """Launch torchrun for a job (own session, so the whole job can be killed)."""
    job = TrainJob.read(job_path)
    env = rank_env(job.parallel)
    env["OMP_NUM_THREADS"] = "1"
    log = open(Path(job.run_dir) / f"log-{time.time_ns()}.txt", "w")
    return subprocess.Popen(torchrun_command(job_path, job.parallel), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(ROOT))


def run(job_path: Path, timeout: float = 240) -> tuple[int, dict[str, Any]]:
    """Run a job to the end; returns (exit code, result.json or {})."""
    p = start(job_path)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    return rc, result(job_path)


def result(job_path: Path) -> dict[str, Any]:
    """The job's result.json."""
    f = Path(TrainJob.read(job_path).run_dir) / "result.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def log_text(job_path: Path) -> str:
    """All torchrun logs of a job's run dir (for assertion messages)."""
    return "\n".join(p.read_text()[-4000:] for p in sorted(Path(TrainJob.read(job_path).run_dir).glob("log-*.txt")))


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Parsed metrics.jsonl."""
    from stages.training.metrics import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until metrics.jsonl reports ``step`` (or the process ends)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(r.get("kind") == "train" and r.get("step", 0) >= step for r in metrics(run_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before step {step}")
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until some checkpoint of the run is complete (as the trainer's resume judges it)."""
    from stages.training.checkpoint import complete_checkpoints

    t0 = time.time()
    while time.time() - t0 < timeout:
        if complete_checkpoints(run_dir / "checkpoints"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before any checkpoint was complete")
        time.sleep(0.05)
    raise AssertionError(f"no complete checkpoint in {timeout}s")


def kill_tree(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to torchrun and every rank (ranks run in their own sessions)."""
    import psutil

    parent = psutil.Process(proc.pid)
    procs = [parent, *parent.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def final_checkpoint(run_dir: Path) -> Path:
    """The newest complete step-N dir."""
    from stages.training.checkpoint import complete_checkpoints

    steps = complete_checkpoints(run_dir / "checkpoints")
    assert steps, f"no complete checkpoint in {run_dir}"
    return run_dir / "checkpoints" / f"step-{max(steps)}"


def read_dcp(ckpt: Path) -> dict[str, Any]:
    """Every tensor of a DCP checkpoint, consolidated offline (no process group)."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    sd: dict[str, Any] = {}
    _load_state_dict(sd, storage_reader=FileSystemReader(str(ckpt)), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    flat, _ = flatten_state_dict(sd)
    return {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}


# the pretraining tests' model: a ~0.1M-parameter Llama, context 32, trained in seconds on CPU
MINI_ARCHITECTURE = """[architecture]
hidden_size = 64
num_layers = 2
num_heads = 4
num_kv_heads = 2
ffn_size = 128
context_length = 32
dtype = "float32"
"""


def mini_model(tokenizer: str, parallel: str, training: str) -> str:
    """A model spec (TOML) with ``MINI_ARCHITECTURE`` and the given ``[training]`` body."""
    return f'tokenizer = "{tokenizer}"\nparallel = "{parallel}"\n\n{MINI_ARCHITECTURE}\n[training]\n{training}'
