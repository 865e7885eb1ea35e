"""Text generators for CAI data: a local HF model (``self`` / ``hf:<dir>``) or an
OpenAI-compatible server (``openai:<base_url>``: vLLM, llama.cpp server, our own server).

Both offer the same two operations:

* ``generate(requests, decoding)`` — one chat completion per request. Every request carries its own
  seed; the local generator samples each row from its own RNG stream (Gumbel-max over the
  temperature/top-p distribution), so a sample does not depend on which batch it was generated in.
* ``choice_logprobs(prompts, choices)`` — log-probability of each choice continuing each raw-text
  prompt, for multiple-choice AI feedback as in Bai et al. (2022).

``identity`` is what sample keys record about the generator: the content digest of a local model,
or the model name an OpenAI server reports.
"""

from __future__ import annotations

import json
import math
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from genesis_build.errors import GenesisError

from .sections import Decoding


@dataclass(frozen=True)
class Request:
    """One chat completion to produce."""

    messages: list[dict[str, str]]
    seed: int


class Generator(Protocol):
    """What the CAI pipeline needs from a model."""

    identity: dict[str, Any]

    def generate(self, requests: list[Request], decoding: Decoding) -> list[str]: ...

    def choice_logprobs(self, prompts: list[str], choices: list[str]) -> list[list[float]]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Local transformers model


def _row_sampler(seeds: list[int], temperature: float, top_p: float) -> Any:
    """A LogitsProcessor that turns greedy decoding into per-row seeded sampling.

    Adding Gumbel noise to the (temperature-scaled, top-p-filtered) log-probabilities and taking
    the argmax draws exactly from that distribution; each row draws its noise from its own
    generator, so its tokens do not depend on the other rows of the batch.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.gens = [torch.Generator().manual_seed(s) for s in seeds]

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            logits = scores.float() / temperature
            if top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
                probs = sorted_logits.softmax(-1)
                # drop a token when the tokens strictly before it already cover top_p
                drop_sorted = probs.cumsum(-1) - probs > top_p
                drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
                logits = logits.masked_fill(drop, float("-inf"))
            u = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in self.gens]).to(logits.device)
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
            return logits + gumbel

    return RowSampler()


def resolve_device(device: str) -> str:
    """``auto`` → cuda when available, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFGenerator:
    """A causal LM loaded with transformers from a local directory."""

    def __init__(self, path: Path | str, identity: dict[str, Any], device: str = "auto", batch_size: int = 16) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise GenesisError(f"generator {self.path}: not a transformers model dir (no config.json)")
        self.identity = identity
        self.batch_size = batch_size
        self.device_request = device
        self.model: Any = None  # loaded on first use: a fully cached build never loads it

    def load(self) -> None:
        """Load tokenizer and model (idempotent)."""
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(self.device_request)
        self.tok = AutoTokenizer.from_pretrained(self.path)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        stop = {self.tok.eos_token_id}
        for t in ("<|end|>", "<|eot_id|>", "<|im_end|>"):
            tid = self.tok.convert_tokens_to_ids(t) if t in self.tok.get_vocab() else None
            if tid is not None:
                stop.add(tid)
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        stop.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self.stop_ids = sorted(i for i in stop if i is not None)

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for a conversation, ending where the assistant starts."""
        self.load()
        if self.tok.chat_template:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # base models without a template: a plain transcript
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nAssistant:"

    def _encode(self, texts: list[str], max_len: int) -> Any:
        bos = self.tok.bos_token
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        self.tok.padding_side = "left"
        self.tok.truncation_side = "left"  # keep the end of an over-long prompt: the request
        return self.tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                        add_special_tokens=add_special).to(self.device)

    def generate(self, requests: list[Request], decoding: Decoding) -> list[str]:
        """One completion per request, in order (batched, KV-cached)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        self.load()
        max_new = min(decoding.max_new_tokens, max(1, self.context // 2))
        out: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            enc = self._encode([self.chat_text(r.messages) for r in chunk], self.context - max_new)
            config = GenerationConfig(
                do_sample=False,  # sampling, if any, is done by the seeded per-row processor
                max_new_tokens=max_new,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tok.pad_token_id,
                use_cache=True,
            )
            procs = LogitsProcessorList()
            if decoding.temperature > 0:
                procs.append(_row_sampler([r.seed for r in chunk], decoding.temperature, decoding.top_p))
            with torch.inference_mode():
                ids = self.model.generate(**enc, generation_config=config, logits_processor=procs)
            new = ids[:, enc["input_ids"].shape[1] :]
            for row in new.tolist():
                cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
                out.append(self.tok.decode(row[:cut], skip_special_tokens=True).strip())
        return out

    def choice_logprobs(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        """Sum log-probability of each choice's tokens after each raw-text prompt."""
        import torch

        self.load()
        cont = [self.tok(c, add_special_tokens=False)["input_ids"] for c in choices]
        pairs: list[tuple[list[int], list[int]]] = []
        for p in prompts:
            ctx = self.tok(p)["input_ids"]
            for c in cont:
                keep = self.context - len(c)
                pairs.append((ctx[-keep:], c))
        scores: list[float] = []
        pad = self.tok.pad_token_id
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            seqs = [a + b for a, b in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):  # right padding: positions stay 0..n-1 for every row
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
            logp = logits.log_softmax(-1).cpu()
            for i, (a, b) in enumerate(chunk):
                pos = torch.arange(len(a) - 1, len(a) + len(b) - 1)
                scores.append(float(logp[i, pos, torch.tensor(b)].sum()))
        n = len(choices)
        return [scores[i * n : (i + 1) * n] for i in range(len(prompts))]

    def close(self) -> None:
        """Free the model (GPU memory in particular)."""
        self.model = None


# --------------------------------------------------------------------------------------------
# OpenAI-compatible server

PROBE_TIMEOUT_S = 10.0  # an unreachable host must not stall the start of a build
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIGenerator:
    """Chat completions (and completions with logprobs) from an OpenAI-compatible HTTP server."""

    def __init__(self, base_url: str, model: str | None = None, timeout_s: float = 120.0, retries: int = 4,
                 concurrency: int = 8, backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
        base = base_url.rstrip("/")
        self.base = base[: -len("/v1")] if base.endswith("/v1") else base
        self.timeout_s = timeout_s
        self.retries = retries
        self.concurrency = concurrency
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.model = model or self._first_model()
        self.identity = {"type": "openai", "model": self.model}

    # ---- transport
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, retries: int | None = None,
              timeout_s: float | None = None) -> Any:
        url = f"{self.base}{path}"
        data = json.dumps(body).encode() if body is not None else None
        attempts = (self.retries if retries is None else retries) + 1
        last = ""
        for attempt in range(attempts):
            req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code not in RETRY_STATUS:
                    raise GenesisError(f"{url}: HTTP {e.code}: {detail}") from None
                last = f"HTTP {e.code}: {detail}"
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
            except ValueError as e:
                raise GenesisError(f"{url}: the server did not return JSON ({e})") from None
            if attempt + 1 < attempts:
                # exponential backoff with jitter so parallel workers do not retry in lockstep
                self.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))
        raise GenesisError(f"{url}: no answer after {attempts} attempt(s): {last}")

    def _first_model(self) -> str:
        models = self._call("GET", "/v1/models", retries=0, timeout_s=min(self.timeout_s, PROBE_TIMEOUT_S))
        data = models.get("data") if isinstance(models, dict) else None
        if not data:
            raise GenesisError(f"{self.base}/v1/models lists no model; set the model name in the spec")
        return str(data[0]["id"])

    def probe(self) -> None:
        """Fail fast (one short request, no retries) when the server is unreachable."""
        self._call("GET", "/v1/models", retries=0, timeout_s=min(self.timeout_s, PROBE_TIMEOUT_S))

    # ---- operations
    def generate(self, requests: list[Request], decoding: Decoding) -> list[str]:
        """One chat completion per request (``concurrency`` in flight)."""

        def one(r: Request) -> str:
            body = {
                "model": self.model,
                "messages": r.messages,
                "temperature": decoding.temperature,
                "top_p": decoding.top_p,
                "max_tokens": decoding.max_new_tokens,
                "seed": r.seed,
            }
            resp = self._call("POST", "/v1/chat/completions", body)
            try:
                return str(resp["choices"][0]["message"]["content"] or "").strip()
            except (KeyError, IndexError, TypeError):
                raise GenesisError(f"{self.base}/v1/chat/completions: unexpected answer {str(resp)[:200]}") from None

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, requests))

    def choice_logprobs(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        """Next-token log-probabilities of each (single-token) choice, from ``/v1/completions``
        with ``logprobs``. A choice missing from the returned top tokens gets the lowest listed
        log-probability (an upper bound on its true value)."""

        def one(prompt: str) -> list[float]:
            body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 20}
            resp = self._call("POST", "/v1/completions", body)
            try:
                top = resp["choices"][0]["logprobs"]["top_logprobs"][0]
            except (KeyError, IndexError, TypeError):
                raise GenesisError(
                    f"{self.base}/v1/completions returned no top_logprobs; the feedback model needs a server with logprobs support"
                ) from None
            floor = min(top.values()) if top else -100.0
            out = []
            for c in choices:
                hits = [lp for tok, lp in top.items() if tok.strip() == c.strip()]
                out.append(math.log(sum(math.exp(h) for h in hits)) if hits else floor)
            return out

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, prompts))

    def close(self) -> None:
        """Nothing to free."""


# --------------------------------------------------------------------------------------------


def model_dir_identity(path: Path) -> dict[str, Any]:
    """Content identity of a local model dir (digest of its files' bytes)."""
    from genesis_build.keys import digest_file, digest_listing, list_files

    path = Path(path)
    if not path.is_dir():
        raise GenesisError(f"generator hf:{path}: directory does not exist")
    entries = [{"path": p.relative_to(path).as_posix(), "size": p.stat().st_size, "xxh3": digest_file(p)}
               for p in list_files(path) if not p.name.startswith(".") and not p.is_dir()]
    return {"type": "hf", "digest": digest_listing(entries)}


def open_generator(address: str, *, local_dirs: dict[str, tuple[Path, str]], model: str | None,
                   runtime: Any) -> Generator:
    """Open ``address``: a name in ``local_dirs`` (``self``, ``sft``, ``base`` → (dir, output
    digest)), ``hf:<dir>`` or ``openai:<url>``. Raises GenesisError before any generation when the
    generator cannot be reached or loaded."""
    if address in local_dirs:
        path, digest = local_dirs[address]
        return HFGenerator(path, {"type": "hf", "digest": digest}, runtime.device, runtime.batch_size)
    if address.startswith("hf:"):
        path = Path(address[3:]).expanduser()
        return HFGenerator(path, model_dir_identity(path), runtime.device, runtime.batch_size)
    if address.startswith("openai:"):
        url = address[len("openai:"):]
        try:
            gen = OpenAIGenerator(url, model, runtime.timeout_s, runtime.retries, runtime.concurrency)
            gen.probe()
        except GenesisError as e:
            raise GenesisError(f"generator {address} is unreachable: {e}") from None
        return gen
    raise GenesisError(f"unknown generator '{address}'")
