"""Pretraining throughput of our trainer against the plain PyTorch loop a user would write.

    python benchmarks/pretrain_mfu.py [--steps 20] [--repeat 2] [--layout RANKSxTHREADSxMICRO] [--profile]

Both sides train ``model:tiny``'s architecture (specs/model/tiny.toml: HF ``LlamaForCausalLM``, fp32,
context 128, 2,048 tokens/step, AdamW, grad clip 1.0) on the same synthetic tokens (vocab 4096, the
tiny tokenizer's size), in the same invocation, back to back (ours, then the peer), ``--repeat`` times:

- **ours**: ``stages.training.train`` under torchrun with FSDP2 and DCP, on the layout the default
  target ships (``specs/parallel/cpu-2.toml``: ``layout = "auto"`` → the layout ``probe`` measured
  fastest, see docs/pretraining-speed.md) or ``--layout``;
- **peer**: one process, ``torch.set_num_threads(<the same total threads>)``, the whole 16-sequence
  batch in one forward, ``torch.optim.AdamW`` with its defaults for CPU tensors, ``clip_grad_norm_``,
  ``loss.item()`` each step — the loop from any tutorial;
- and both again at an equal layout: 1 process × 1 thread, the same micro-batch.

tokens/s is the mean over steps 2…N of the wall time of whole loop iterations (step 1 warms up).
It also prints MFU against matmul FLOP/s measured here, how long a checkpoint save blocks training
(sync vs ``dcp.async_save``) and time to the first step (fresh vs resumed). ``--profile`` writes the
torch.profiler tables of ours and the peer (steps 4–8) next to the output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

VOCAB = 4096


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


def parse_layout(text: str) -> tuple[int, int, int]:
    """``"1x2x16"`` → (ranks, threads per rank, micro-batch)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"--layout {text!r}: expected RANKSxTHREADSxMICRO, e.g. 1x2x16")
    return int(parts[0]), int(parts[1]), int(parts[2])


def shipped_layout(spec: ModelSpec) -> tuple[int, int, int, str]:
    """The layout ``model:tiny`` trains with: parallel:cpu-2 as the planner resolves it."""
    from stages.parallel_spec import ParallelSpec
    from stages.training.layout import resolve_layout

    par = ParallelSpec.model_validate(tomllib.loads((ROOT / "specs/parallel/cpu-2.toml").read_text()))
    lay, source = resolve_layout(spec, par, VOCAB, workspace=ROOT)
    return lay.nproc_per_node, lay.threads_per_rank, lay.micro_batch_size, source


# ---------------------------------------------------------------------------------------------
# ours


def run_ours(tmp: Path, data: Path, run_dir: Path, spec: ModelSpec, layout: tuple[int, int, int], steps: int,
             ckpt_every: int, async_ckpt: bool, name: str, save: bool = True, profile: bool = False) -> dict:
    """One torchrun job of our trainer; returns its result.json."""
    nproc, threads, micro = layout
    tr = spec.training.model_copy(update={"steps": steps, "warmup_steps": 2, "eval_every": steps,
                                          "checkpoint_every": ckpt_every, "keep_last": 2})
    job = TrainJob(architecture=spec.architecture, training=tr,
                   parallel={"nproc_per_node": nproc, "backend": "gloo", "micro_batch_size": micro,
                             "async_checkpoint": async_ckpt, "env": {"OMP_NUM_THREADS": str(threads)}},
                   data_dir=str(data), run_dir=str(run_dir), vocab_size=VOCAB,
                   special_ids={"eos_id": VOCAB - 1, "bos_id": VOCAB - 1, "pad_id": VOCAB - 1}, save_checkpoints=save)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.json"
    job.write(path)
    env = rank_env(job.parallel)
    if profile:
        env["GENESIS_PROFILE"] = "3:5"
    with open(run_dir / f"{name}.log", "w") as log:
        rc = subprocess.run(torchrun_command(path, job.parallel), env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{name}: trainer failed, see {run_dir / f'{name}.log'}")
    return json.loads((run_dir / "result.json").read_text())


# ---------------------------------------------------------------------------------------------
# the peer: the loop a user would write


def peer_main(args: argparse.Namespace) -> None:
    """Run in a subprocess: plain single-process training; prints one JSON line."""
    t_start = time.perf_counter()
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    from stages.training.model import llama_config

    torch.set_num_threads(args.threads)
    spec = ModelSpec.model_validate(tomllib.loads((ROOT / "specs/model/tiny.toml").read_text()))
    a, tr = spec.architecture, spec.training
    cfg = llama_config(a, VOCAB)  # the same architecture (one config builder, so the shapes cannot drift)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tr.lr, betas=tuple(tr.betas), weight_decay=tr.weight_decay)
    T, B = a.context_length, tr.global_batch_tokens // a.context_length
    toks = np.memmap(Path(args.data) / "train" / "00000.bin", dtype=np.uint16, mode="r")
    rng = np.random.default_rng(0)
    n_seq = (len(toks) - 1) // T
    times, first = [], None
    prof = None
    for step in range(args.steps):
        if args.profile_out and step == 3:
            from torch.profiler import ProfilerActivity, profile

            prof = profile(activities=[ProfilerActivity.CPU])
            prof.__enter__()
            tp = time.perf_counter()
        t0 = time.perf_counter()
        ids = rng.integers(0, n_seq, B)
        batch = torch.from_numpy(np.stack([toks[i * T : i * T + T + 1] for i in ids]).astype(np.int64))
        x, y = batch[:, :-1], batch[:, 1:]
        for k in range(0, B, args.micro):
            logits = model(input_ids=x[k : k + args.micro]).logits
            loss = F.cross_entropy(logits.view(-1, VOCAB), y[k : k + args.micro].reshape(-1)) * (args.micro / B)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # a user prints the loss
        times.append(time.perf_counter() - t0)
        if first is None:
            first = time.perf_counter() - t_start
        if prof is not None and step == 7:
            wall = (time.perf_counter() - tp) / 5
            prof.__exit__(None, None, None)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48)
            Path(args.profile_out).write_text(f"steps 4-8: {1000 * wall:.1f} ms wall per step\n{table}\n")
            prof = None
    steady = times[1:]
    print(json.dumps({"tokens_per_s": tr.global_batch_tokens / (sum(steady) / len(steady)), "time_to_first_step_s": first}))


def run_peer(data: Path, threads: int, micro: int, steps: int, profile_out: Path | None = None) -> dict:
    """The peer loop in a fresh process (its own thread pool, nothing shared with ours)."""
    cmd = [sys.executable, __file__, "--peer-worker", "--data", str(data), "--threads", str(threads), "--micro", str(micro),
           "--steps", str(steps)] + (["--profile-out", str(profile_out)] if profile_out else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"peer failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def _pair(tmp: Path, data: Path, spec: ModelSpec, layout: tuple[int, int, int], peer_micro: int, steps: int,
          repeat: int, tag: str, profile: bool) -> tuple[list[float], list[float]]:
    ours, peer = [], []
    for i in range(repeat):
        prof = profile and i == 0
        r = run_ours(tmp, data, tmp / f"{tag}-{i}", spec, layout, steps, 10**6, True, f"{tag}-{i}", save=False, profile=prof)
        if prof and (tmp / f"{tag}-{i}" / "profile.txt").is_file():
            (Path.cwd() / f"profile-ours-{tag}.txt").write_text((tmp / f"{tag}-{i}" / "profile.txt").read_text())
        p = run_peer(data, layout[0] * layout[1], peer_micro, steps, Path.cwd() / f"profile-peer-{tag}.txt" if prof else None)
        ours.append(r["tokens_per_s"])
        peer.append(p["tokens_per_s"])
    return ours, peer


def _ratio_row(ours: list[float], peer: list[float]) -> str:
    ratios = [o / p for o, p in zip(ours, peer)]
    spread = f", runs {' / '.join(f'{r:.2f}' for r in ratios)}" if len(ratios) > 1 else ""
    return (f"ours {statistics.mean(ours):,.0f} vs peer {statistics.mean(peer):,.0f} tokens/s → "
            f"{statistics.mean(ratios):.2f}×{spread}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2, help="back-to-back ours/peer pairs per layout")
    ap.add_argument("--layout", help="ours: RANKSxTHREADSxMICRO (default: what parallel:cpu-2 resolves to)")
    ap.add_argument("--profile", action="store_true", help="write torch.profiler tables (profile-*.txt in the cwd)")
    ap.add_argument("--skip-extras", action="store_true", help="only the two throughput comparisons")
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--micro", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_worker:
        return peer_main(args)
    spec = ModelSpec.model_validate(tomllib.loads((ROOT / "specs/model/tiny.toml").read_text()))
    B = spec.training.global_batch_tokens // spec.architecture.context_length
    fpt = flops_per_token(spec.architecture, VOCAB)
    if args.layout:
        layout, source = parse_layout(args.layout), "--layout"
    else:
        *lay, source = shipped_layout(spec)
        layout = tuple(lay)  # type: ignore[assignment]
    ranks, threads, micro = layout
    rows: list[tuple[str, str]] = []
    rows.append(("model", f"tiny: {fpt / 1e6:.1f} MFLOP/token, {spec.training.global_batch_tokens} tokens/step "
                          f"({B} × {spec.architecture.context_length}), fp32, AdamW"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "tokens"
        synthetic_tokens(data, VOCAB, 2_000_000, 100_000)
        ours, peer = _pair(tmp, data, spec, layout, B, args.steps, args.repeat, "shipped", args.profile)
        rows.append((f"shipped layout: {ranks} rank × {threads} thread, micro {micro} ({source})",
                     _ratio_row(ours, peer) + f"  [peer: 1 process × {ranks * threads} threads, batch {B}]"))
        eq_ours, eq_peer = _pair(tmp, data, spec, (1, 1, micro), micro, args.steps, args.repeat, "equal", False)
        rows.append((f"equal layout: 1 process × 1 thread, micro {micro}", _ratio_row(eq_ours, eq_peer)))
        if not args.skip_extras:
            peak = matmul_flops(threads, ranks)
            tok_s = statistics.mean(ours)
            achieved = fpt * tok_s / ranks
            rows.append((f"matmul fp32, {threads} thread/rank", f"{peak / 1e9:.1f} GFLOP/s per rank (measured now)"))
            rows.append(("MFU of ours vs measured matmul peak", f"{achieved / peak:.1%} ({achieved / 1e9:.2f} GFLOP/s per rank)"))
            every = max(2, args.steps // 4)
            sync = run_ours(tmp, data, tmp / "sync", spec, layout, args.steps, every, False, "sync")
            asy = run_ours(tmp, data, tmp / "async", spec, layout, args.steps, every, True, "async")
            s_blk, a_blk = sync["checkpoint_blocking_s"][:-1], asy["checkpoint_blocking_s"][:-1]
            rows.append(("checkpoint save, synchronous", f"{1000 * sum(s_blk) / len(s_blk):.1f} ms blocked per save ({len(s_blk)} saves)"))
            rows.append(("checkpoint save, async (dcp.async_save)", f"{1000 * sum(a_blk) / len(a_blk):.1f} ms blocked per save ({len(a_blk)} saves)"))
            rows.append(("tokens/s with sync / async saves", f"{sync['tokens_per_s']:,.0f} / {asy['tokens_per_s']:,.0f} "
                                                             f"(checkpoint every {every} steps)"))
            resumed = run_ours(tmp, data, tmp / "async", spec, layout, args.steps + 2, 10**6, True, "resume")
            rows.append(("time to first step, fresh / peer", f"{asy['time_to_first_step_s']:.2f} s / "
                                                            f"{run_peer(data, ranks * threads, B, 3)['time_to_first_step_s']:.2f} s"))
            rows.append(("time to first step, resumed", f"{resumed['time_to_first_step_s']:.2f} s (incl. DCP load of "
                                                        f"step-{resumed['resumed_from']})"))
            rows.append(("peak RSS per rank", ", ".join(f"{m:.0f} MB" for m in asy["peak_memory_mb_per_rank"])))
    width = max(len(a) for a, _ in rows)
    print(f"pretrain benchmark: ours vs plain PyTorch loop ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"torch {__import__('torch').__version__}, {args.steps} steps × {args.repeat} back-to-back pairs)")
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")


if __name__ == "__main__":
    t0 = time.time()
    main()
    if "--peer-worker" not in sys.argv:
        print(f"  (benchmark wall time {time.time() - t0:.0f} s)")
