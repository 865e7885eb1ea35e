"""A bounded load generator for the OpenAI-compatible server (loopback only, stdlib HTTP).

A fixed list of requests of mixed sizes (short and long completions, chat, streaming, prompt
scoring, and over-long prompts that must be refused) is sent by a fixed number of client threads.
Each request records its kind, HTTP status and latency; :func:`percentiles` summarises them.
Used by ``benchmarks/serve_load.py`` (prints p50/p99) and by the reliability harness (asserts that
every request completed with the expected status: none starved, none refused for being busy).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

WORDS = "the quick brown fox jumps over the lazy dog and every request must complete".split()


@dataclass
class Outcome:
    """One request's result."""

    kind: str
    status: int
    expected: int
    seconds: float
    error: str = ""


def plan(n: int, model: str, context: int, seed: int = 0) -> list[tuple[str, str, dict[str, Any], int]]:
    """``n`` requests of mixed sizes as (kind, path, body, expected status), in a seeded order."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    kinds = [
        ("short", "/v1/completions", lambda: {"prompt": text(4), "max_tokens": 4, "temperature": 0}, 200),
        ("long", "/v1/completions", lambda: {"prompt": text(8), "max_tokens": min(64, context // 4), "temperature": 0}, 200),
        ("chat", "/v1/chat/completions", lambda: {"messages": [{"role": "user", "content": text(12)}], "max_tokens": 16,
                                                  "temperature": 0.7, "seed": rng.randrange(1 << 30)}, 200),
        ("stream", "/v1/completions", lambda: {"prompt": text(6), "max_tokens": 24, "stream": True, "temperature": 0}, 200),
        ("score", "/v1/completions", lambda: {"prompt": text(max(4, context // 4)), "echo": True, "logprobs": 1,
                                              "max_tokens": 0}, 200),
        ("too-long", "/v1/completions", lambda: {"prompt": text(context * 8), "echo": True, "logprobs": 1,
                                                 "max_tokens": 0}, 400),
    ]
    out = []
    for i in range(n):
        kind, path, body, expected = kinds[i % len(kinds)]
        out.append((kind, path, {"model": model, **body()}, expected))
    rng.shuffle(out)
    return out


def _one(base: str, kind: str, path: str, body: dict[str, Any], expected: int, timeout: float,
         headers: dict[str, str]) -> Outcome:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **headers})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()  # a stream is read to its end ([DONE])
            if body.get("stream") and b"data: [DONE]" not in data:
                return Outcome(kind, -1, expected, time.perf_counter() - t0, "stream ended without [DONE]")
            return Outcome(kind, r.status, expected, time.perf_counter() - t0)
    except urllib.error.HTTPError as e:
        e.read()
        return Outcome(kind, e.code, expected, time.perf_counter() - t0)
    except OSError as e:  # timeout, refused, reset: the request did not complete
        return Outcome(kind, -1, expected, time.perf_counter() - t0, f"{type(e).__name__}: {e}")


def run(base: str, requests: list[tuple[str, str, dict[str, Any], int]], clients: int, timeout: float = 300,
        api_key: str | None = None) -> list[Outcome]:
    """Send ``requests`` from ``clients`` threads (each takes the next one when done)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    todo = list(enumerate(requests))
    results: list[Outcome | None] = [None] * len(requests)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, (kind, path, body, expected) = todo.pop(0)
            results[i] = _one(base, kind, path, body, expected, timeout, headers)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (``p50``, ``p99``) of ``values`` in seconds."""
    s = sorted(values)
    out = {}
    for q in qs:
        k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1)) if s else 0
        out[f"p{q:g}"] = s[k] if s else float("nan")
    return out
