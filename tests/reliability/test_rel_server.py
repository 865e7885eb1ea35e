"""The OpenAI-compatible server under hostile input (findings 3 and 4 of the second reliability round):
scoring is bounded by the model's context, a full queue answers 503 at once, an unknown model is 404,
a bad Content-Length is 400 (never a 500), and ``--api-key`` demands a Bearer token."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest

from rel_helpers import record
from relserve import call, make_lm, start

pytestmark = pytest.mark.slow
CONTEXT = 128


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lm(tmp_path_factory.mktemp("serve-lm") / "m", context=CONTEXT)


@pytest.fixture(scope="module")
def served(lm: Path):
    httpd, base = start(lm, max_queue=2)
    yield httpd, base
    httpd.shutdown()
    httpd.server_close()


def _case(name: str, fn) -> None:
    ok = False
    try:
        fn()
        ok = True
    finally:
        record("server", name, ok)


def test_scoring_beyond_the_context_is_rejected(served) -> None:
    _, base = served

    def check() -> None:
        long = "the quick brown fox jumps over the lazy dog " * 40  # ~ 10× the context in tokens
        code, body = call(base, "/v1/completions", {"model": "tiny", "prompt": long, "echo": True, "logprobs": 1, "max_tokens": 0})
        assert code == 400, (code, str(body)[:300])
        assert "context" in body["error"]["message"] and str(CONTEXT) in body["error"]["message"], body
        huge = "x" * 200_000  # refused before tokenizing
        code, body = call(base, "/v1/completions", {"model": "tiny", "prompt": huge, "echo": True, "logprobs": 1, "max_tokens": 0})
        assert code == 400 and "context" in body["error"]["message"], (code, body)
        code, body = call(base, "/v1/completions", {"model": "tiny", "prompt": ["a b"] * 1000, "max_tokens": 1})
        assert code == 400 and body["error"]["param"] == "prompt", (code, body)
        # within the context, scoring still works
        code, body = call(base, "/v1/completions", {"model": "tiny", "prompt": "the lazy dog", "echo": True, "logprobs": 1, "max_tokens": 0})
        assert code == 200 and body["choices"][0]["logprobs"]["tokens"], body
    _case("scoring bounded by the context", check)


def test_full_queue_answers_503_at_once(served) -> None:
    httpd, base = served

    def check() -> None:
        gate = httpd.api.cm.lock
        gate.acquire()  # the model is busy: admitted requests wait, max_queue = 2 of them
        results: list[int] = []
        try:
            waiters = [threading.Thread(target=lambda: results.append(call(base, "/v1/completions",
                                        {"model": "tiny", "prompt": "the", "max_tokens": 2})[0])) for _ in range(2)]
            for t in waiters:
                t.start()
            deadline = time.time() + 30
            while httpd.api.admitted < 2 and time.time() < deadline:
                time.sleep(0.01)
            assert httpd.api.admitted == 2
            code, body = call(base, "/v1/completions", {"model": "tiny", "prompt": "the", "max_tokens": 2}, timeout=10)
            assert code == 503, (code, body)
            assert body["error"]["type"] == "server_error" and "busy" in body["error"]["message"], body
            code, _ = call(base, "/v1/models")  # listing needs no model slot
            assert code == 200
        finally:
            gate.release()
        for t in waiters:
            t.join(60)
        assert results == [200, 200], results
    _case("bounded queue: 503 when full, queued requests complete", check)


def test_unknown_model_is_404(served) -> None:
    _, base = served

    def check() -> None:
        for path, body in (("/v1/completions", {"model": "gpt-4", "prompt": "hi", "max_tokens": 1}),
                           ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})):
            code, out = call(base, path, body)
            assert code == 404, (code, out)
            assert out["error"]["code"] == "model_not_found" and "gpt-4" in out["error"]["message"], out
        code, _ = call(base, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 1})
        assert code == 200
    _case("unknown model → 404", check)


@pytest.mark.parametrize("length", ["-5", "abc", "1e3"])
def test_bad_content_length_is_400(served, length: str) -> None:
    _, base = served
    host, port = base.removeprefix("http://").split(":")

    def check() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.putrequest("POST", "/v1/completions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", length)
        conn.endheaders()
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 400, (r.status, body)
        assert "Content-Length" in body["error"]["message"] and "Error" not in body["error"]["message"], body
    _case(f"Content-Length {length} → 400", check)


def test_api_key(lm: Path) -> None:
    from stages.serving.openai_server import exposure_warning

    def check() -> None:
        httpd, base = start(lm, api_key="s3cret")
        try:
            body = {"model": "tiny", "prompt": "the", "max_tokens": 1}
            assert call(base, "/v1/completions", body)[0] == 401
            assert call(base, "/v1/models")[0] == 401
            code, out = call(base, "/v1/completions", body, headers={"Authorization": "Bearer wrong"})
            assert code == 401 and out["error"]["code"] == "invalid_api_key", out
            assert call(base, "/v1/completions", body, headers={"Authorization": "Bearer s3cret"})[0] == 200
            assert call(base, "/health")[0] == 200  # liveness stays open (it reveals nothing)
        finally:
            httpd.shutdown()
            httpd.server_close()
        assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
        assert exposure_warning("localhost", None) is None
        w = exposure_warning("0.0.0.0", None)
        assert w and "--api-key" in w, w
        assert exposure_warning("0.0.0.0", "k") is None
    _case("--api-key (Bearer) and the non-loopback warning", check)
