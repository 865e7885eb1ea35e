"""One command that checks the training stack on the GPUs of this machine, in at most ~8 minutes.

    python benchmarks/gpu_check.py            # CUDA: world = every visible GPU, NCCL
    python benchmarks/gpu_check.py --cpu      # smoke mode: tiny shapes, 2 gloo ranks, a few steps (CI runs it)

Installs nothing, downloads nothing; scratch files go to a temp dir that is deleted. Prints one table:

(a) throughput: the ``model:1b`` architecture (specs/model/1b.toml) in bf16 with fp32 gradient
    reduction and activation checkpointing, the micro-batch of ``parallel:2x4090`` and the 1B context,
    for 20 steps (accumulation 2, so a step stays short) on random tokens with our FSDP2 trainer:
    tokens/s, MFU against a bf16 matmul peak measured here, peak memory per rank against the
    planner's estimate;
(b) resume: a small model for 30 steps with async DCP saves every 10 steps, killed (SIGKILL of rank 0
    at step 25) and resumed, against an uninterrupted run: the final weights must be bitwise equal;
(c) SFT and DPO steps with the CAI tasks on the same trainer, DPO's reference log-probabilities
    computed by ``stages.dpo.reference_logps_isolated`` (on CUDA in a child process that exits before
    torchrun starts), so no reference model stays on cuda:0 during training — checked: cuda:0's used
    memory (NVML) before the DPO launch equals the idle value;
(d) export: (b)'s checkpoint → HF safetensors dir → loaded on the device with transformers → one
    TruthfulQA MC1 batch (``../shared/data/evals/truthfulqa/mc_task.json``) scored by log-likelihood.

Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.model_spec import Architecture, ModelSpec, Training  # noqa: E402
from stages.parallel_spec import ParallelSpec  # noqa: E402
from stages.training.config import TrainJob  # noqa: E402
from stages.training.launch import rank_env, torchrun_command  # noqa: E402

BYTE_VOCAB = 257  # (b)-(d): a byte-level tokenizer, 256 bytes + <eos>
SMALL = {"hidden_size": 256, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4, "ffn_size": 704, "context_length": 256,
         "tie_embeddings": False, "dtype": "bfloat16"}
SMOKE = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "ffn_size": 128, "context_length": 32,
         "tie_embeddings": False, "dtype": "float32"}


class Check:
    """Collects the table rows and whether everything passed."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.ok = True

    def row(self, part: str, what: str, value: str, passed: bool | None = None) -> None:
        mark = "" if passed is None else ("ok" if passed else "FAIL")
        if passed is False:
            self.ok = False
        self.rows.append((part, what, f"{value}{'  ' + mark if mark else ''}"))

    def print(self, header: str) -> None:
        w1 = max(len(r[0]) for r in self.rows)
        w2 = max(len(r[1]) for r in self.rows)
        print(header)
        for a, b, c in self.rows:
            print(f"  {a:<{w1}}  {b:<{w2}}  {c}")


def random_tokens(out: Path, vocab: int, tokens: int) -> Path:
    """A tokenize-format dir of uniform random ids (train split only)."""
    from stages.training.probe import write_random_tokens

    return write_random_tokens(out, vocab, tokens)


def launch(tmp: Path, name: str, arch: dict[str, Any] | Architecture, training: dict[str, Any], parallel: ParallelSpec,
           data: Path, vocab: int, env_extra: dict[str, str] | None = None, **job_kw: Any) -> tuple[int, dict[str, Any], Path]:
    """One torchrun job of our trainer; (exit code, result.json, run dir)."""
    run = tmp / name
    run.mkdir(parents=True, exist_ok=True)
    tr = Training.model_validate({"lr": 1e-3, "warmup_steps": 2, "eval_batches": 1, "keep_last": 3, **training})
    a = arch if isinstance(arch, Architecture) else Architecture.model_validate(arch)
    job = TrainJob(architecture=a, training=tr, parallel=parallel, data_dir=str(data), run_dir=str(run), vocab_size=vocab,
                   special_ids={"eos_id": vocab - 1, "bos_id": vocab - 1, "pad_id": vocab - 1}, **job_kw)
    path = tmp / f"{name}.json"
    job.write(path)
    env = {**rank_env(parallel), **(env_extra or {})}
    with open(run / "log.txt", "a") as log:
        rc = subprocess.run(torchrun_command(path, parallel), env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=str(ROOT)).returncode
    res = run / "result.json"
    return rc, (json.loads(res.read_text()) if res.is_file() else {}), run


def measured_peak(cpu: bool) -> float:
    """Matmul FLOP/s of one device in the compute dtype, in a child process (this one never touches CUDA)."""
    code = ("import torch,sys; sys.path.insert(0, %r); from stages.training.metrics import measure_matmul_flops;"
            "d=torch.device(%r); print(measure_matmul_flops(d, %s, n=%d, seconds=1.0))"
            % (str(ROOT), "cpu" if cpu else "cuda", "torch.float32" if cpu else "torch.bfloat16", 512 if cpu else 8192))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def gpu_used_mib(index: int = 0) -> float | None:
    """Used memory of GPU ``index`` as the driver sees it (all processes), via NVML; None without it."""
    try:
        import pynvml  # shipped with torch's CUDA wheels as nvidia-ml-py

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used / 2**20
    except Exception:  # noqa: BLE001 — no NVML: the row says "not measured"
        return None


# ---------------------------------------------------------------------------------------------


def part_a(c: Check, tmp: Path, cpu: bool, world: int) -> None:
    from stages.training.planner import GIB, flops_per_token, memory_per_rank

    spec = ModelSpec.model_validate(tomllib.loads((ROOT / "specs/model/1b.toml").read_text()))
    par1b = ParallelSpec.model_validate(tomllib.loads((ROOT / "specs/parallel/2x4090.toml").read_text()))
    arch = spec.architecture if not cpu else Architecture.model_validate(SMOKE)
    vocab = 49152 if not cpu else BYTE_VOCAB
    micro = par1b.micro_batch_size if not cpu else 2
    steps = 20 if not cpu else 3
    T = arch.context_length
    gbt = micro * world * T * 2
    par = ParallelSpec(nproc_per_node=world, backend="gloo" if cpu else "nccl", micro_batch_size=micro,
                       activation_checkpointing=True, mixed_precision={"param_dtype": "model", "reduce_dtype": "float32"},
                       peak_tflops_per_device=None)
    data = random_tokens(tmp / "tok-a", vocab, (steps + 1) * gbt + T + 1)
    rc, res, run = launch(tmp, "a", arch, {"global_batch_tokens": gbt, "steps": steps, "eval_every": steps,
                                            "checkpoint_every": steps}, par, data, vocab, save_checkpoints=False)
    label = "(a) 1B throughput" if not cpu else "(a) throughput (smoke)"
    if rc != 0 or res.get("status") != "finished":
        c.row(label, "training", f"exit {rc}, see {run / 'log.txt'}: " + (run / "log.txt").read_text()[-400:], False)
        return
    tok_s = res["tokens_per_s"]
    peak = measured_peak(cpu)
    fpt = flops_per_token(arch, vocab)
    c.row(label, "layout", f"{world} × {'CPU/gloo' if cpu else 'GPU/NCCL'}, {arch.dtype} compute, fp32 reduce, activation "
                          f"checkpointing, micro {micro} × accum 2 × context {T}, {steps} steps")
    c.row(label, "tokens/s", f"{tok_s:,.0f} ({tok_s / world:,.0f} per rank)", tok_s > 0)
    c.row(label, "MFU", f"{fpt * tok_s / (peak * world):.1%} of a measured {'fp32' if cpu else 'bf16'} matmul peak "
                        f"{peak / 1e9:,.1f} GFLOP/s per device")
    est = memory_per_rank(arch, vocab, world, micro, True, arch.dtype)
    est_gib = (est["weights"] + est["grads"] + est["optimizer"] + est["gathered"] + est["activations"]) / GIB
    got = max(res["peak_memory_mb_per_rank"]) / 1024
    what = "peak RSS" if cpu else "peak allocated"
    c.row(label, "memory/rank", f"{what} {got * 1024:,.0f} MiB vs planner {est_gib * 1024:,.0f} MiB ({got / est_gib:.2f}×"
                                f"{'; RSS includes the Python/torch runtime' if cpu else ''})",
          None if cpu else got <= 1.25 * est_gib)


def part_b(c: Check, tmp: Path, cpu: bool, world: int) -> Path | None:
    arch = SMOKE if cpu else SMALL
    T = arch["context_length"]
    par = ParallelSpec(nproc_per_node=world, backend="gloo" if cpu else "nccl", micro_batch_size=2, async_checkpoint=True)
    gbt = 2 * world * T * 2
    data = random_tokens(tmp / "tok-b", BYTE_VOCAB, 31 * gbt + T + 1)
    training = {"global_batch_tokens": gbt, "steps": 30, "eval_every": 30, "checkpoint_every": 10}
    rc_ref, ref, ref_run = launch(tmp, "b-ref", arch, training, par, data, BYTE_VOCAB)
    rc_kill, _, run = launch(tmp, "b-run", arch, training, par, data, BYTE_VOCAB,
                             env_extra={"GENESIS_FAULT": "train.after_step:kill@25"})
    rc_res, res, run = launch(tmp, "b-run", arch, training, par, data, BYTE_VOCAB)
    label = "(b) kill + resume"
    if rc_ref != 0 or rc_res != 0 or res.get("status") != "finished":
        c.row(label, "training", f"exit codes {rc_ref}/{rc_res}, see {run / 'log.txt'}", False)
        return None
    c.row(label, "crash", f"SIGKILL of rank 0 at step 25 → exit {rc_kill}; resumed from step {res.get('resumed_from')} "
                          f"(async DCP saves every 10 + the WSD decay start 24)",
          rc_kill != 0 and res.get("resumed_from") is not None and 10 <= res["resumed_from"] <= 25)
    import torch

    sys.path[:0] = [str(ROOT / "tests/stage_tests/training"), str(ROOT / "tests")]  # read_dcp; it imports tinylm
    from training_testlib import read_dcp

    a, b = read_dcp(ref_run / "checkpoints" / "step-30"), read_dcp(run / "checkpoints" / "step-30")
    keys = [k for k in a if k.startswith("model.")]
    same = bool(keys) and all(k in b and torch.equal(a[k], b[k]) for k in keys)
    c.row(label, "final weights", f"{len(keys)} tensors {'bitwise equal' if same else 'DIFFER'} to the uninterrupted run", same)
    return run / "checkpoints" / "step-30"


def byte_tokenizer(out: Path) -> Path:
    """A byte-level tokenizer (256 bytes + <eos>) as an HF tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|eos|>"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|eos|>").save_pretrained(str(out))
    return out


def export(tmp: Path, cpu: bool, ckpt: Path) -> Path:
    """(d), first half: the DCP checkpoint → an HF dir (on the CPU: this process stays off the GPU until (c) ran)."""
    from stages.training.export_hf import export_hf
    from stages.training.model import llama_config

    arch = Architecture.model_validate(SMOKE if cpu else SMALL)
    tok_dir = byte_tokenizer(tmp / "tokenizer")
    hf = tmp / "hf"
    export_hf(ckpt, llama_config(arch, BYTE_VOCAB, bos_id=256, eos_id=256, pad_id=256), hf, tok_dir)
    return hf


def part_d(c: Check, cpu: bool, hf: Path) -> None:
    """(d), second half: load the export on the device with transformers, score one TruthfulQA MC1 batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = Architecture.model_validate(SMOKE if cpu else SMALL)
    dev = "cpu" if cpu else "cuda"
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32 if cpu else torch.bfloat16).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(str(hf))
    path = ROOT.parent / "shared/data/evals/truthfulqa/mc_task.json"
    if not path.is_file():
        c.row("(d) export + TruthfulQA", "data", f"{path} not found: not measured", None)
        return
    items = json.loads(path.read_text())[:8]
    correct = 0
    with torch.inference_mode():
        for it in items:
            q = tok(f"Q: {it['question']}\nA:")["input_ids"]
            scores = []
            for answer in it["mc1_targets"]:
                a = tok(" " + answer)["input_ids"]
                ids = torch.tensor([(q + a)[-arch.context_length:]], device=dev)
                logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0, :-1]
                tgt = ids[0, 1:]
                scores.append(float(logp.gather(1, tgt[:, None])[-len(a):].sum()))
            correct += int(list(it["mc1_targets"].values())[max(range(len(scores)), key=scores.__getitem__)] == 1)
    c.row("(d) export + TruthfulQA", "HF load + 1 batch", f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params "
                                                         f"on {dev}, MC1 {correct}/{len(items)} (random-init small model: "
                                                         f"chance level expected)", True)


def part_c(c: Check, tmp: Path, cpu: bool, world: int, ckpt: Path, hf: Path) -> None:
    from stages.dpo import reference_logps_isolated

    arch = SMOKE if cpu else SMALL
    T = arch["context_length"]
    par = ParallelSpec(nproc_per_node=world, backend="gloo" if cpu else "nccl", micro_batch_size=1, async_checkpoint=False)
    rng = __import__("random").Random(0)

    def seq(n: int) -> list[int]:
        return [rng.randrange(256) for _ in range(n)] + [256]

    batch = 2 * world
    sft_rows = []
    for _ in range(4 * batch):
        p, r = seq(T // 4), seq(T // 4)
        sft_rows.append({"input_ids": p + r, "labels": [-100] * len(p) + r})
    sft_dir = tmp / "sft-data"
    sft_dir.mkdir()
    (sft_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    steps = 3
    tr = {"global_batch_tokens": batch * T, "steps": steps, "eval_every": steps, "checkpoint_every": steps, "lr": 1e-4,
          "warmup_steps": 1}
    rc, res, run = launch(tmp, "sft", arch, tr, par, sft_dir, BYTE_VOCAB, task="stages.cai_lib.train_tasks:SftTask",
                          task_options={"batch_size": batch}, init_checkpoint=str(ckpt))
    c.row("(c) SFT + DPO", "SFT steps", f"{res.get('steps_run')} steps, loss {res.get('final_loss') or float('nan'):.3f}"
                                        if rc == 0 else f"exit {rc}, see {run / 'log.txt'}", rc == 0)
    pairs = []
    for _ in range(4 * batch):
        p, ch, rj = seq(T // 4), seq(T // 4), seq(T // 4)
        pairs.append({"chosen_ids": p + ch, "chosen_mask": [0] * len(p) + [1] * len(ch),
                      "rejected_ids": p + rj, "rejected_mask": [0] * len(p) + [1] * len(rj)})
    idle = None if cpu else gpu_used_mib(0)
    for r, (lc, lr) in zip(pairs, reference_logps_isolated(hf, pairs, device="cpu" if cpu else "cuda")):
        r["ref_chosen_logps"], r["ref_rejected_logps"] = lc, lr
    after = None if cpu else gpu_used_mib(0)
    if cpu:
        c.row("(c) SFT + DPO", "reference log-probs", f"{len(pairs)} pairs, in the stage process (CPU)")
    elif idle is None or after is None:
        c.row("(c) SFT + DPO", "reference log-probs", f"{len(pairs)} pairs in a child process; cuda:0 memory not measured (no NVML)")
    else:
        c.row("(c) SFT + DPO", "cuda:0 before DPO launch", f"{after:,.0f} MiB used vs {idle:,.0f} MiB before the reference "
                                                          f"pass (the child process exited)", after <= idle + 64)
    dpo_dir = tmp / "dpo-data"
    dpo_dir.mkdir()
    (dpo_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    rc, res, run = launch(tmp, "dpo", arch, tr, par, dpo_dir, BYTE_VOCAB, task="stages.cai_lib.train_tasks:DpoTask",
                          task_options={"batch_size": batch, "beta": 0.1}, init_checkpoint=str(ckpt))
    c.row("(c) SFT + DPO", "DPO steps", f"{res.get('steps_run')} steps, loss {res.get('final_loss') or float('nan'):.3f} "
                                        f"(ln 2 = 0.693 at the reference)" if rc == 0 else f"exit {rc}, see {run / 'log.txt'}",
          rc == 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="smoke mode: tiny shapes, 2 gloo ranks (what CI runs)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) and print its path")
    args = ap.parse_args()
    t0 = time.time()
    if args.cpu:
        world = 2
    else:
        import torch

        world = torch.cuda.device_count()  # NVML count: no CUDA context in this process
        if world == 0:
            print("no CUDA device visible; run with --cpu for the smoke mode", file=sys.stderr)
            return 2
    c = Check()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        part_a(c, tmp, args.cpu, world)
        ckpt = part_b(c, tmp, args.cpu, world)
        if ckpt is not None:
            hf = export(tmp, args.cpu, ckpt)
            part_c(c, tmp, args.cpu, world, ckpt, hf)  # before anything of this process touches CUDA
            part_d(c, args.cpu, hf)
        else:
            c.row("(c)/(d)", "skipped", "(b) produced no checkpoint", False)
    finally:
        if args.keep:
            print(f"scratch: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    import torch

    dev = "CPU smoke mode (gloo)" if args.cpu else f"{world} × {torch.cuda.get_device_name(0)}"
    c.print(f"gpu_check: {dev}, torch {torch.__version__}, {time.time() - t0:.0f} s — "
            f"{'all checks passed' if c.ok else 'SOME CHECKS FAILED'}")
    return 0 if c.ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
