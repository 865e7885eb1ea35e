"""Pretraining throughput, MFU, checkpoint overhead and resume latency of the shared trainer.

    .venv/bin/python benchmarks/pretrain_mfu.py [--steps 30] [--nproc 2] [--micro 4]

Trains ``model:tiny``'s architecture (specs/model/tiny.toml) on synthetic tokens (vocab 4096, the
tiny tokenizer's size) with real torchrun ranks, FSDP2 and DCP, and prints:
- matmul FLOP/s measured with torch on this machine (same dtype, one thread per rank as the ranks run);
- achieved model FLOP/s (FLOPs/token × tokens/s) and MFU against that measured peak;
- how long each checkpoint save blocks the training loop, async (dcp.async_save) vs synchronous;
- time from process start to the first finished step, fresh vs resumed from a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.model_spec import ModelSpec  # noqa: E402
from stages.training.config import TrainJob  # noqa: E402
from stages.training.launch import rank_env, torchrun_command  # noqa: E402
from stages.training.planner import flops_per_token  # noqa: E402


def synthetic_tokens(out: Path, vocab: int, n_train: int, n_val: int) -> None:
    """Random-walk documents in the tokenize meta.json layout."""
    rng = np.random.default_rng(0)
    meta = {"dtype": "uint16", "vocab_size": vocab, "eos_id": vocab - 1, "bos_id": vocab - 1, "pad_id": vocab - 1, "splits": {}}
    for split, n in (("train", n_train), ("validation", n_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        toks = (np.cumsum(rng.integers(1, 4, n)) % (vocab - 1)).astype(np.uint16)
        toks[rng.random(n) < 0.02] = vocab - 1
        toks.tofile(out / split / "00000.bin")
        np.save(out / split / "00000.idx.npy", np.array([0], dtype=np.int64))
        meta["splits"][split] = {"tokens": n, "documents": 1,
                                 "shards": [{"file": f"{split}/00000.bin", "tokens": n, "index": f"{split}/00000.idx.npy"}]}
    (out / "meta.json").write_text(json.dumps(meta))


def matmul_flops(threads: int, procs: int, n: int = 512, seconds: float = 2.0) -> float:
    """FLOP/s per process when ``procs`` processes with ``threads`` threads each multiply fp32 matrices."""
    code = (f"import torch,time; torch.set_num_threads({threads}); a=torch.randn({n},{n}); b=torch.randn({n},{n}); a@b; "
            f"t=time.perf_counter(); i=0\nwhile time.perf_counter()-t<{seconds}: a@b; i+=1\n"
            f"print(2*{n}**3*i/(time.perf_counter()-t))")
    ps = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    return sum(float(p.communicate()[0]) for p in ps) / procs


MICRO = 4  # sequences per rank per forward/backward (--micro)


def run_job(tmp: Path, data: Path, run_dir: Path, spec: ModelSpec, nproc: int, steps: int, ckpt_every: int,
            async_ckpt: bool, name: str) -> dict:
    tr = spec.training.model_copy(update={"steps": steps, "warmup_steps": 2, "eval_every": steps,
                                          "checkpoint_every": ckpt_every, "keep_last": 2})
    job = TrainJob(architecture=spec.architecture, training=tr,
                   parallel={"nproc_per_node": nproc, "backend": "gloo", "micro_batch_size": MICRO,
                             "async_checkpoint": async_ckpt, "peak_tflops_per_device": None},
                   data_dir=str(data), run_dir=str(run_dir), vocab_size=4096,
                   special_ids={"eos_id": 4095, "bos_id": 4095, "pad_id": 4095})
    run_dir.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.json"
    job.write(path)
    env = rank_env(job.parallel)
    env["OMP_NUM_THREADS"] = "1"
    with open(run_dir / f"{name}.log", "w") as log:
        rc = subprocess.run(torchrun_command(path, job.parallel), env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{name}: trainer failed, see {run_dir / f'{name}.log'}")
    return json.loads((run_dir / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--micro", type=int, default=4, help="micro-batch size per rank (accumulation makes up the rest)")
    args = ap.parse_args()
    global MICRO
    MICRO = args.micro
    spec = ModelSpec.model_validate(tomllib.loads((ROOT / "specs/model/tiny.toml").read_text()))
    fpt = flops_per_token(spec.architecture, 4096)
    rows: list[tuple[str, str]] = []
    peak = matmul_flops(1, args.nproc)
    rows.append(("matmul fp32, 1 thread/rank, all ranks busy", f"{peak / 1e9:.1f} GFLOP/s per rank"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "tokens"
        synthetic_tokens(data, 4096, 2_000_000, 100_000)
        every = max(2, args.steps // 5)
        sync = run_job(tmp, data, tmp / "sync", spec, args.nproc, args.steps, every, False, "sync")
        asy = run_job(tmp, data, tmp / "async", spec, args.nproc, args.steps, every, True, "async")
        nock = run_job(tmp, data, tmp / "nockpt", spec, args.nproc, args.steps, 10**6, True, "nockpt")
        tok_s = nock["tokens_per_s"]
        achieved = fpt * tok_s / args.nproc
        rows.append(("model", f"tiny: {nock['params'] / 1e6:.2f}M params, {fpt / 1e6:.1f} MFLOP/token, "
                              f"{spec.training.global_batch_tokens} tokens/step, {args.nproc} ranks"))
        rows.append(("throughput (no checkpoints)", f"{tok_s:,.0f} tokens/s, {spec.training.global_batch_tokens / tok_s:.3f} s/step"))
        rows.append(("achieved model FLOP/s", f"{achieved / 1e9:.2f} GFLOP/s per rank"))
        rows.append(("MFU vs measured matmul peak", f"{achieved / peak:.1%}"))
        # the last save of a run is always synchronous (final step): compare the periodic ones
        s_blk, a_blk = sync["checkpoint_blocking_s"][:-1], asy["checkpoint_blocking_s"][:-1]
        rows.append(("checkpoint save, synchronous", f"{1000 * sum(s_blk) / len(s_blk):.1f} ms blocked per save ({len(s_blk)} saves)"))
        rows.append(("checkpoint save, async (dcp.async_save)", f"{1000 * sum(a_blk) / len(a_blk):.1f} ms blocked per save ({len(a_blk)} saves)"))
        rows.append(("tokens/s with sync / async saves", f"{sync['tokens_per_s']:,.0f} / {asy['tokens_per_s']:,.0f} "
                                                         f"(checkpoint every {every} steps)"))
        fresh = nock["time_to_first_step_s"]
        # resume: extend the finished no-checkpoint run? it has only its final checkpoint → resume from it
        resumed = run_job(tmp, data, tmp / "nockpt", spec, args.nproc, args.steps + 2, 10**6, True, "resume")
        rows.append(("time to first step, fresh start", f"{fresh:.2f} s (process start → step 1 done)"))
        rows.append(("time to first step, resumed", f"{resumed['time_to_first_step_s']:.2f} s (incl. DCP load of "
                                                    f"step-{resumed['resumed_from']})"))
        rows.append(("peak RSS per rank", ", ".join(f"{m:.0f} MB" for m in nock["peak_memory_mb_per_rank"])))
    width = max(len(a) for a, _ in rows)
    print(f"pretrain benchmark ({os.cpu_count()} CPUs, torch {__import__('torch').__version__})")
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"  (benchmark wall time {time.time() - t0:.0f} s)")
