"""One loaded transformers causal LM shared by the server, the chat loop and the evals.

:class:`ChatModel` renders chats with the tokenizer's chat template, generates with
``model.generate`` (greedy at temperature 0, else sampling), stops at EOS / ``<|end|>`` / stop
strings, and streams text through ``TextIteratorStreamer``. Generation is serialised by a lock
(one model, one request at a time — like a single-GPU server); HTTP connections stay concurrent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
END_TOKENS = ("<|end|>", "<|eot_id|>", "<|im_end|>")  # turn-end markers of common chat templates


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load(model_dir: str | Path, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any, torch.device]:
    """(model in eval mode, tokenizer, device). ``dtype="auto"`` keeps the checkpoint's dtype."""
    dev = pick_device(device)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=DTYPES.get(dtype, "auto"))
    model.to(dev).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # batching needs a pad id; it is masked out anyway
    return model, tok, dev


def stop_token_ids(tok: Any, model: Any) -> list[int]:
    """EOS ids of the tokenizer and generation config plus known turn-end tokens present in the vocab."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in (tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])):
        if v is not None and v not in ids:
            ids.append(int(v))
    vocab = tok.get_vocab()
    for t in END_TOKENS:
        if t in vocab and vocab[t] not in ids:
            ids.append(int(vocab[t]))
    return ids


def first_stop(text: str, stops: list[str]) -> int:
    """Index where the earliest stop string starts in ``text`` (-1 if none)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def holdback(text: str, stops: list[str]) -> int:
    """Characters at the end of ``text`` that could be the start of a stop string (not yet safe to stream)."""
    keep = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


class _StopOn(StoppingCriteria):
    """Stops when a stop string appears in the new text or when ``cancel`` is set (client gone)."""

    def __init__(self, tok: Any, prompt_len: int, stops: list[str], cancel: threading.Event | None) -> None:
        self.tok, self.prompt_len, self.stops, self.cancel = tok, prompt_len, stops, cancel

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = bool(self.cancel is not None and self.cancel.is_set())
        if not done and self.stops:
            text = self.tok.decode(input_ids[0, self.prompt_len:], skip_special_tokens=True)
            done = first_stop(text, self.stops) >= 0
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


@dataclass
class Generation:
    """One finished generation."""

    text: str
    finish_reason: str  # "stop" (EOS / end token / stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    tokens: list[str] = field(default_factory=list)  # per generated token, when logprobs were asked for
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)


class FairLock:
    """A FIFO lock: waiters get the model in arrival order (``threading.Lock`` promises no order, so
    under steady load one request could wait forever behind later arrivals)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0  # next ticket to hand out
        self._serving = 0  # ticket allowed to hold the lock

    def acquire(self) -> bool:
        """Wait for our turn; always returns True."""
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()
        return True

    def release(self) -> None:
        """Hand the lock to the next waiter in line."""
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ChatModel:
    """A model directory loaded once; thread-safe generation."""

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto", name: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.model, self.tok, self.device = load(model_dir, device, dtype)
        self.name = name or self.model_dir.name
        self.stop_ids = stop_token_ids(self.tok, self.model)
        self.lock = FairLock()  # FIFO: under load no request waits behind later arrivals
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        # the longest text one token can stand for: a prompt longer than context × this cannot fit
        self.max_token_chars = max((len(t) for t in self.tok.get_vocab()), default=1) or 1
        self.streams_cancelled = 0  # streams whose consumer left early (generation was stopped)
        self.last_stream_tokens = 0  # tokens generated by the last stream

    # ---- prompts
    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The chat template applied to ``messages`` with the assistant turn opened."""
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(f"{self.model_dir}: the tokenizer has no chat_template (tokenizer_config.json); "
                             f"use /v1/completions with a raw prompt instead")
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str, chat: bool) -> list[int]:
        """Token ids; a rendered chat already carries its special tokens (the template adds BOS)."""
        return self.tok(text, add_special_tokens=not chat)["input_ids"]

    # ---- generation
    def _kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": self.stop_ids,
                              "pad_token_id": self.tok.pad_token_id, "do_sample": temperature > 0}
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _check_room(self, n_prompt: int, max_new_tokens: int) -> int:
        room = self.context_length - n_prompt
        if room <= 0:
            raise ValueError(f"the prompt has {n_prompt} tokens; the model's context is {self.context_length}")
        return min(max_new_tokens, room)

    def generate(self, prompt: str, *, chat: bool, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
                 logprobs: int | None = None, cancel: threading.Event | None = None) -> Generation:
        """Generate a completion of ``prompt`` (a rendered chat when ``chat``)."""
        stops = [s for s in (stop or []) if s]
        ids = self.encode(prompt, chat)
        max_new = self._check_room(len(ids), max_new_tokens)
        x = torch.tensor([ids], device=self.device)
        kw = self._kwargs(max_new, temperature, top_p)
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kw,
                                      stopping_criteria=StoppingCriteriaList([_StopOn(self.tok, len(ids), stops, cancel)]),
                                      return_dict_in_generate=True, output_logits=bool(logprobs))
        new = out.sequences[0, len(ids):].tolist()
        finish = "length"
        for i, t in enumerate(new):
            if t in self.stop_ids:
                new, finish = new[:i], "stop"
                break
        text = self.tok.decode(new, skip_special_tokens=True)
        cut = first_stop(text, stops)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        gen = Generation(text, finish, len(ids), len(new))
        if logprobs:
            for pos, t in enumerate(new):
                lp = torch.log_softmax(out.logits[pos][0].float(), dim=-1)
                gen.tokens.append(self.tok.decode([t]))
                gen.token_logprobs.append(float(lp[t]))
                vals, idx = lp.topk(min(int(logprobs), lp.shape[-1]))
                gen.top_logprobs.append({self.tok.decode([int(i)]): float(v) for v, i in zip(vals, idx)})
        return gen

    def stream(self, prompt: str, *, chat: bool, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
               cancel: threading.Event | None = None, result: Callable[[Generation], None] | None = None) -> Iterator[str]:
        """Yield text deltas as they are generated; ``result`` gets the finished :class:`Generation`.

        Text that could be the beginning of a stop string is held back until it is known not to be one.
        """
        stops = [s for s in (stop or []) if s]
        ids = self.encode(prompt, chat)
        max_new = self._check_room(len(ids), max_new_tokens)
        x = torch.tensor([ids], device=self.device)
        cancel = cancel or threading.Event()
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                with torch.inference_mode():
                    if seed is not None:
                        torch.manual_seed(seed)
                    box["out"] = self.model.generate(
                        input_ids=x, attention_mask=torch.ones_like(x), streamer=streamer, **self._kwargs(max_new, temperature, top_p),
                        stopping_criteria=StoppingCriteriaList([_StopOn(self.tok, len(ids), stops, cancel)]))
            except BaseException as e:  # surfaced to the consumer below
                box["error"] = e
                streamer.end()

        with self.lock:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            text, sent, stopped = "", 0, False
            try:
                for piece in streamer:
                    if stopped:
                        continue  # drain: generate() stops at the next step (cancel is set)
                    text += piece
                    cut = first_stop(text, stops)
                    if cut >= 0:
                        text, stopped = text[:cut], True
                        cancel.set()
                        if cut > sent:
                            yield text[sent:cut]
                        sent = cut
                        continue
                    safe = len(text) - holdback(text, stops)
                    if safe > sent:
                        yield text[sent:safe]
                        sent = safe
                if not stopped and len(text) > sent:
                    yield text[sent:]
            except GeneratorExit:  # the consumer went away (e.g. the HTTP client disconnected)
                self.streams_cancelled += 1
                raise
            finally:
                cancel.set()  # stops generate() at its next step
                thread.join()
                out = box.get("out")
                self.last_stream_tokens = 0 if out is None else int(out.shape[1]) - len(ids)
        if "error" in box:
            raise box["error"]
        new = box["out"][0, len(ids):].tolist()
        hit_eos = any(t in self.stop_ids for t in new)
        n_new = next((i for i, t in enumerate(new) if t in self.stop_ids), len(new))
        if result is not None:
            result(Generation(text, "stop" if stopped or hit_eos else "length", len(ids), n_new))

    # ---- scoring
    def prompt_logprobs(self, prompt: str, top: int) -> Generation:
        """Log-probabilities of the prompt's own tokens (``echo`` + ``logprobs`` in /v1/completions);
        the first token has none (None in the API, as OpenAI)."""
        ids = self.encode(prompt, chat=False)
        with self.lock, torch.inference_mode():
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)
        gen = Generation(prompt, "length", len(ids), 0)
        for pos, t in enumerate(ids):
            gen.tokens.append(self.tok.decode([t]))
            if pos == 0:
                gen.token_logprobs.append(None)  # type: ignore[arg-type]
                gen.top_logprobs.append(None)  # type: ignore[arg-type]
                continue
            row = lp[pos - 1]
            gen.token_logprobs.append(float(row[t]))
            vals, idx = row.topk(min(max(top, 1), row.shape[-1]))
            gen.top_logprobs.append({self.tok.decode([int(i)]): float(v) for v, i in zip(vals, idx)})
        return gen
