"""The OpenAI-compatible server, started for real on a free localhost port and called over HTTP."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evals_testlib import start_server


@pytest.fixture(scope="module")
def served(eval_lm: Path):
    httpd, base = start_server(eval_lm, "tiny-test")
    httpd.base = base
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(served) -> str:
    return served.base


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def post_error(base: str, path: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(base + path, data=data), timeout=60)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    raise AssertionError("expected an HTTP error")


def sse(base: str, path: str, body: dict) -> list[dict]:
    """POST with stream=true; parse the Server-Sent Events into chunk dicts (``[DONE]`` must end it)."""
    req = urllib.request.Request(base + path, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    chunks, done = [], False
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        for raw in r:
            line = raw.decode().rstrip("\n")
            if not line:
                continue
            assert line.startswith("data: "), line
            if line == "data: [DONE]":
                done = True
                continue
            assert not done, "data after [DONE]"
            chunks.append(json.loads(line[len("data: "):]))
    assert done
    return chunks


CHAT = {"model": "tiny-test", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        "max_tokens": 12, "temperature": 0}


def test_models_and_health(server: str) -> None:
    with urllib.request.urlopen(server + "/v1/models") as r:
        models = json.loads(r.read())
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny-test"
    with urllib.request.urlopen(server + "/v1/models/tiny-test") as r:
        assert json.loads(r.read())["max_model_len"] == 1024
    with urllib.request.urlopen(server + "/health") as r:
        assert json.loads(r.read())["status"] == "ok"


def test_chat_completion_matches_the_model(server: str, eval_lm: Path) -> None:
    from stages.serving.model import ChatModel

    out = post(server, "/v1/chat/completions", CHAT)
    choice = out["choices"][0]
    assert out["object"] == "chat.completion" and out["model"] == "tiny-test" and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    cm = ChatModel(eval_lm, device="cpu")
    prompt = cm.render_chat(CHAT["messages"])
    assert prompt.startswith("<|bos|><|system|>Be brief.<|end|><|user|>Hello there<|end|><|assistant|>")
    expect = cm.generate(prompt, chat=True, max_new_tokens=12, temperature=0)
    assert choice["message"]["content"] == expect.text
    assert out["usage"] == {"prompt_tokens": expect.prompt_tokens, "completion_tokens": expect.completion_tokens,
                            "total_tokens": expect.prompt_tokens + expect.completion_tokens}


def test_chat_streaming_chunks_add_up(server: str) -> None:
    whole = post(server, "/v1/chat/completions", CHAT)["choices"][0]["message"]["content"]
    chunks = sse(server, "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}})
    assert all(c["object"] == "chat.completion.chunk" for c in chunks) and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_stop_strings_cut_output_streaming_and_not(server: str) -> None:
    base = {"model": "tiny-test", "prompt": "The quick brown fox", "max_tokens": 24, "temperature": 0}
    full = post(server, "/v1/completions", base)["choices"][0]["text"]
    assert len(full) > 6
    stop = full[3:5]  # a string the greedy output is known to contain
    cut = post(server, "/v1/completions", {**base, "stop": [stop]})["choices"][0]
    assert cut["text"] == full[: full.index(stop)] and cut["finish_reason"] == "stop"
    streamed = sse(server, "/v1/completions", {**base, "stop": stop})
    assert "".join(c["choices"][0]["text"] for c in streamed) == cut["text"]
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"


def test_completion_logprobs_and_echo_scoring(server: str, eval_lm: Path) -> None:
    from stages.evals_lib.lm import LocalLM

    out = post(server, "/v1/completions", {"prompt": ["Hello", "Q: why?\nA:"], "max_tokens": 3, "temperature": 0, "logprobs": 2})
    assert [c["index"] for c in out["choices"]] == [0, 1]
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 3
    for logprob, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) <= 2 and logprob <= 0 and max(top.values()) == pytest.approx(logprob, abs=1e-5)  # greedy = top-1
    # echo + max_tokens 0 scores the text: the continuation's logprobs sum to our eval loglikelihood
    lm = LocalLM(eval_lm, device="cpu")
    ctx, cont = "Q: What is the capital of France?\nA:", " Paris is the capital."
    c_ids, x_ids = lm.encode_pair(ctx, cont)
    scored = post(server, "/v1/completions", {"prompt": ctx + cont, "max_tokens": 0, "echo": True, "logprobs": 1})["choices"][0]
    assert scored["text"] == ctx + cont and scored["logprobs"]["token_logprobs"][0] is None
    assert len(scored["logprobs"]["tokens"]) == len(c_ids) + len(x_ids)
    (ll, _), = lm.loglikelihood([(ctx, cont)])
    assert sum(scored["logprobs"]["token_logprobs"][len(c_ids):]) == pytest.approx(ll, abs=1e-3)
    assert scored["logprobs"]["text_offset"][1] == len(scored["logprobs"]["tokens"][0])


def test_seeded_sampling_is_reproducible(server: str) -> None:
    body = {**CHAT, "temperature": 1.0, "top_p": 0.9, "seed": 7, "max_tokens": 10}
    a = post(server, "/v1/chat/completions", body)["choices"][0]["message"]["content"]
    assert a == post(server, "/v1/chat/completions", body)["choices"][0]["message"]["content"]


@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {**CHAT, "n": 2}, 400, "n = 1"),
    ("/v1/chat/completions", {**CHAT, "temperature": 5}, 400, "temperature"),
    ("/v1/completions", {"prompt": 42}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "echo"),
    ("/v1/embeddings", {"input": "x"}, 404, "no route"),
    ("/v1/completions", b"{not json", 400, "JSON"),
])
def test_errors_are_openai_shaped(server: str, path: str, body, status: int, fragment: str) -> None:
    code, err = post_error(server, path, body)
    assert code == status and fragment in err["error"]["message"] and err["error"]["type"]


def test_client_disconnect_mid_stream_stops_generation(server: str, served) -> None:
    import time

    cm = served.api.cm
    before = cm.streams_cancelled
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {"prompt": "once upon", "max_tokens": 400, "temperature": 0, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    r.fp.readline()  # the first chunk is on its way; hang up
    conn.sock.close()
    conn.close()
    deadline = time.time() + 60
    while cm.streams_cancelled == before and time.time() < deadline:
        time.sleep(0.02)
    assert cm.streams_cancelled == before + 1
    with cm.lock:  # the model is free again …
        assert cm.last_stream_tokens < 400  # … because generation stopped early
    out = post(server, "/v1/chat/completions", CHAT)
    assert out["choices"][0]["message"]["role"] == "assistant"


def test_openai_client_if_installed(server: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny-test"]
    r = client.chat.completions.create(model="tiny-test", messages=CHAT["messages"], max_tokens=8, temperature=0)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny-test", messages=CHAT["messages"], max_tokens=8, temperature=0, stream=True) if c.choices)
    assert text == r.choices[0].message.content
    assert client.completions.create(model="tiny-test", prompt="abc", max_tokens=4, temperature=0).choices[0].text is not None
