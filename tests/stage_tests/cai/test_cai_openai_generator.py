"""The ``openai:<base_url>`` generator against real HTTP servers serving the tiny real model on
127.0.0.1 — the project's own ``stages/serving/openai_server.py`` and a minimal independent one
(``cai_openai_server.py``, which can also inject 503s): chat completions with seeds,
multiple-choice log-probabilities, retries with backoff, and a clear early error for an
unreachable server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cai_openai_server import serve
from genesis_testlib import free_port
from cai_testlib import builtin_prompts, cai_section, genesis_constitution

from genesis_build.errors import GenesisError
from stages.cai_lib.generators import HFGenerator, OpenAIGenerator, Request, open_generator
from stages.cai_lib.sections import Decoding, Runtime


@pytest.fixture(scope="module")
def minimal_server(tiny_lm: Path):
    httpd, model_server = serve(str(tiny_lm))
    yield f"http://127.0.0.1:{httpd.server_address[1]}", model_server
    httpd.shutdown()


@pytest.fixture(scope="module")
def project_server(tiny_lm: Path):
    import threading

    from stages.serving.openai_server import make_server

    httpd = make_server(tiny_lm, port=0, model_name="tiny-test-lm", device="cpu")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", None
    httpd.shutdown()


@pytest.fixture(params=["project", "minimal"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")



def test_chat_completions_are_seeded_and_identified_by_model_name(server) -> None:
    url, _ = server
    gen = open_generator(f"openai:{url}/v1", local_dirs={}, model=None, runtime=Runtime(concurrency=3))
    assert gen.identity == {"type": "openai", "model": "tiny-test-lm"}
    d = Decoding(temperature=1.0, max_new_tokens=8)
    reqs = [Request([{"role": "user", "content": f"Tell me about {x}"}], seed=i) for i, x in enumerate("abcdef")]
    first = gen.generate(reqs, d)
    assert len(first) == 6 and all(isinstance(t, str) for t in first)
    assert gen.generate(reqs, d) == first  # same seeds, same texts, whatever the request interleaving
    assert any(t.strip() for t in first)


def test_cai_pipeline_through_http_caches_samples(server, tmp_path: Path) -> None:
    from stages.cai_lib import critique
    from stages.cai_lib.samples import SampleStore

    url, _ = server
    cai = cai_section(generator=f"openai:{url}", runtime={"batch_size": 4, "concurrency": 4})
    gen = open_generator(cai.generator, local_dirs={}, model=None, runtime=cai.runtime)
    constitution = genesis_constitution()
    jobs = critique.plan(builtin_prompts(6), constitution, cai, gen.identity)
    store = SampleStore(tmp_path)
    assert critique.run(gen, jobs, store, cai, constitution.system_prompt, chunk=4) == 6
    rec = store.get(jobs[0].key)
    assert rec["generator"] == gen.identity and rec["rounds"][0]["critique_request"].startswith("Request: ")
    assert critique.run(gen, jobs, store, cai, constitution.system_prompt, chunk=4) == 0


def test_choice_logprobs_match_the_model(server, tiny_lm: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url, _ = server
    gen = OpenAIGenerator(url)
    prompt = "Options:\n(A) yes\n(B) no\nThe answer is: ("
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        logp = model(**tok(prompt, return_tensors="pt")).logits[0, -1].log_softmax(-1)
    top2 = logp.topk(2).indices.tolist()
    choices = [tok.decode([i]) for i in top2]
    got = gen.choice_logprobs([prompt], choices)[0]
    assert got == pytest.approx([float(logp[i]) for i in top2], abs=1e-4)
    # and the local generator computes the same quantity for the same continuation tokens
    local = HFGenerator(tiny_lm, {"type": "hf"}, "cpu", 4).choice_logprobs([prompt], choices)[0]
    assert local == pytest.approx(got, abs=1e-4)


def test_retries_with_backoff_then_succeeds(minimal_server) -> None:
    url, ms = minimal_server
    sleeps: list[float] = []
    gen = OpenAIGenerator(url, retries=3, backoff_s=0.01, sleep=sleeps.append)
    ms.fail_left, before = 2, ms.posts
    out = gen.generate([Request([{"role": "user", "content": "hi"}], seed=1)], Decoding(max_new_tokens=2))
    assert len(out) == 1 and ms.posts - before == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9  # exponential (with jitter)

    ms.fail_left = 5
    with pytest.raises(GenesisError, match=r"no answer after 2 attempt\(s\): HTTP 503"):
        OpenAIGenerator(url, retries=1, backoff_s=0.0).generate([Request([{"role": "user", "content": "hi"}], seed=1)],
                                                                Decoding(max_new_tokens=2))
    ms.fail_left = 0


def test_unreachable_server_fails_fast_before_any_work() -> None:
    port = free_port()
    t = time.time()
    with pytest.raises(GenesisError, match=rf"generator openai:http://127.0.0.1:{port} is unreachable: .*ConnectionRefused"):
        open_generator(f"openai:http://127.0.0.1:{port}", local_dirs={}, model="m", runtime=Runtime(retries=4))
    assert time.time() - t < 5  # the probe does not retry
