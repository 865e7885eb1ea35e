"""An ESTIMATE of CAI generation time for ``--dry-run`` (stdlib only): HF ``generate`` on a local GPU
versus an OpenAI-compatible vLLM server. It is a roofline sketch, not a measurement.

Decoding one token for a batch of ``b`` sequences reads every weight once and each sequence's KV
cache, so a decoding step costs

    t_step(b) = (W + b · ctx · kv_per_token) / (η · bandwidth) + overhead

with W the weight bytes (bf16: 2 bytes per parameter), ``ctx`` the average context while decoding,
``kv_per_token = 2 · layers · kv_heads · head_dim · 2`` bytes, and η the share of peak bandwidth
reached. Throughput is ``b / t_step`` tokens/s and the time is generated tokens / throughput.

Assumptions (stated on the row, change them here):

* every generation runs to ``max_new_tokens`` (an upper bound: real answers stop earlier);
* prompts average ``PROMPT_TOKENS`` tokens (critique and revision requests quote the answer);
  prefill is compute-bound and small next to decoding at these lengths, so it is left out;
* HF ``generate`` (this project's local generator): static batches of ``[cai.runtime] batch_size``,
  one GPU (it does not spread requests over GPUs), η = 0.5, and eager PyTorch overhead of
  ``HF_OVERHEAD_PER_LAYER_S`` per layer per step (kernel launches and Python);
* vLLM: continuous batching with ``[cai.runtime] concurrency`` requests in flight on one GPU,
  η = 0.8, CUDA-graph overhead ``VLLM_OVERHEAD_PER_LAYER_S`` per layer plus ``VLLM_OVERHEAD_S``
  per step (scheduler). Two GPUs = two servers would halve it (the generator takes one URL).
"""

from __future__ import annotations

from typing import Any

PROMPT_TOKENS = 300
DEFAULT_BANDWIDTH_GB_S = 1000.0  # when the parallel spec gives none (an RTX 4090 has 1008)
HF_EFFICIENCY, VLLM_EFFICIENCY = 0.5, 0.8
HF_OVERHEAD_PER_LAYER_S = 1.0e-3
VLLM_OVERHEAD_PER_LAYER_S, VLLM_OVERHEAD_S = 0.1e-3, 1.0e-3


def step_seconds(weight_bytes: float, batch: int, ctx: float, kv_per_token: float, bandwidth: float,
                 efficiency: float, overhead: float) -> float:
    """Seconds per decoding step of ``batch`` sequences (the roofline formula above)."""
    return (weight_bytes + batch * ctx * kv_per_token) / (efficiency * bandwidth) + overhead


def generation_estimate(arch: Any, params: int, tokens: int, max_new: int, batch: int, concurrency: int,
                        bandwidth_gb_s: float | None) -> dict[str, float]:
    """``{"hf_s", "vllm_s", "hf_tok_s", "vllm_tok_s"}`` for generating ``tokens`` tokens."""
    bw = (bandwidth_gb_s or DEFAULT_BANDWIDTH_GB_S) * 1e9
    w = 2.0 * params  # bf16 weights
    kv = 2 * arch.num_layers * (arch.num_kv_heads or arch.num_heads) * (arch.hidden_size // arch.num_heads) * 2
    ctx = PROMPT_TOKENS + max_new / 2
    t_hf = step_seconds(w, batch, ctx, kv, bw, HF_EFFICIENCY, HF_OVERHEAD_PER_LAYER_S * arch.num_layers)
    t_v = step_seconds(w, concurrency, ctx, kv, bw, VLLM_EFFICIENCY,
                       VLLM_OVERHEAD_PER_LAYER_S * arch.num_layers + VLLM_OVERHEAD_S)
    hf_rate, v_rate = batch / t_hf, concurrency / t_v
    return {"hf_s": tokens / hf_rate, "vllm_s": tokens / v_rate, "hf_tok_s": hf_rate, "vllm_tok_s": v_rate}


def cai_generation_rows(spec: Any, parallel: Any, vocab: int | None) -> list[tuple[str, str]]:
    """``--dry-run`` rows for ``cai-generate``: generated tokens and the HF vs vLLM time ESTIMATE
    (GPU parallel specs only; on CPU see the measured times in docs/instruct.md)."""
    from stages.training.planner import duration, param_counts

    cai = spec.cai
    if cai.num_prompts is None or getattr(parallel, "backend", "auto") == "gloo":
        return []
    samples = cai.num_prompts * cai.principles_per_prompt
    calls = samples * (1 + 2 * cai.revision_rounds)  # answer, then critique + revision per round
    tokens = calls * cai.decoding.max_new_tokens
    params = param_counts(spec.architecture, vocab or 32000)["total"]
    e = generation_estimate(spec.architecture, params, tokens, cai.decoding.max_new_tokens, cai.runtime.batch_size,
                            cai.runtime.concurrency, getattr(parallel, "memory_bandwidth_gb_s", None))
    bw = getattr(parallel, "memory_bandwidth_gb_s", None) or DEFAULT_BANDWIDTH_GB_S
    return [
        ("cai generation", f"{samples} samples × {1 + 2 * cai.revision_rounds} calls × ≤ {cai.decoding.max_new_tokens} "
                           f"new tokens = ≤ {tokens / 1e6:.2f}M tokens"),
        ("cai time (ESTIMATE)", f"HF generate, 1 GPU, batch {cai.runtime.batch_size}: ~{duration(e['hf_s'])} "
                                f"({e['hf_tok_s']:.0f} tok/s); vLLM endpoint, 1 GPU, {cai.runtime.concurrency} in flight: "
                                f"~{duration(e['vllm_s'])} ({e['vllm_tok_s']:.0f} tok/s) — bandwidth-roofline formula, "
                                f"{bw:g} GB/s, every answer at max length, {PROMPT_TOKENS}-token prompts "
                                "(stages/cai_lib/estimate.py)"),
    ]
