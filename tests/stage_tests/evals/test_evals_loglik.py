"""Log-likelihood scoring on a tiny real model, checked against a direct per-pair computation."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.evals_lib import truthfulqa
from stages.evals_lib.data import load_suite
from stages.evals_lib.spec import TruthfulQASuite


@pytest.fixture(scope="module")
def lm(eval_lm: Path):
    from stages.evals_lib.lm import LocalLM

    return LocalLM(eval_lm, device="cpu", batch_size=4)


def reference_loglik(lm, context: str, continuation: str) -> float:
    """Straightforward: encode context and context+continuation, one forward, sum the log-probs."""
    import torch

    ctx = lm.tok.encode(context.rstrip())
    whole = lm.tok.encode(context.rstrip() + context[len(context.rstrip()):] + continuation)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def test_loglikelihood_matches_direct_computation(lm) -> None:
    pairs = [("Q: Why is the sky blue?\nA:", " Rayleigh scattering."), ("The capital of France is ", "Paris"),
             ("Hello", " world"), ("a b c", " d e f g h")]
    got = lm.loglikelihood(pairs)
    for (c, x), (ll, greedy) in zip(pairs, got):
        assert ll == pytest.approx(reference_loglik(lm, c, x), abs=1e-4)
        assert isinstance(greedy, bool)
    # trailing spaces of the context move to the continuation (lm-eval's _encode_pair)
    ctx, cont = lm.encode_pair("The capital of France is ", "Paris")
    assert lm.tok.decode(cont).startswith(" ") and not lm.tok.decode(ctx).endswith(" ")


def test_batch_size_and_order_do_not_change_scores(lm) -> None:
    from stages.evals_lib.lm import LocalLM

    pairs = [("Q: x\nA:", " yes"), ("Q: a longer question here\nA:", " a much longer answer than the other"),
             ("Q: mid\nA:", " maybe so")]
    one = LocalLM(lm.model_dir, device="cpu", batch_size=1).loglikelihood(pairs)
    many = lm.loglikelihood(pairs)
    assert [a for a, _ in one] == pytest.approx([a for a, _ in many], abs=1e-4)


def test_left_truncation_keeps_the_last_max_length_tokens(lm, monkeypatch) -> None:
    import torch

    context, cont = "one two three four five six seven eight nine ten eleven twelve", " thirteen fourteen"
    c, x = lm.encode_pair(context, cont)
    L = len(x) + 4
    assert len(c) > L
    monkeypatch.setattr(type(lm), "max_length", property(lambda self: L))
    (ll, _), = lm.loglikelihood([(context, cont)])
    window = (c + x)[-(L + 1):]  # max_length + 1 tokens; the model reads the first max_length
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([window[:-1]])).logits[0].float(), -1)
    expect = sum(float(logp[len(window) - 1 - len(x) + j, t]) for j, t in enumerate(x))
    assert ll == pytest.approx(expect, abs=1e-4)
    monkeypatch.setattr(type(lm), "max_length", property(lambda self: len(x) - 1))
    with pytest.raises(ValueError, match="longer than the model's context"):
        lm.loglikelihood([(context, cont)])


def test_truthfulqa_scores_follow_the_logliks(lm) -> None:
    items, source = load_suite("truthfulqa", TruthfulQASuite(limit=4))
    res, samples = truthfulqa.evaluate(lm, items, ["mc1", "mc2"], original=source["rows"])
    assert res["n-samples"]["truthfulqa_mc1"] == {"original": 24, "effective": 4}
    mc1 = [s for s in samples if s["task"] == "truthfulqa_mc1"]
    for s in mc1:
        best = max(range(len(s["loglikelihoods"])), key=lambda i: s["loglikelihoods"][i])
        assert s["acc"] == float(s["labels"][best] == 1)
    assert res["results"]["truthfulqa_mc1"]["acc"] == pytest.approx(sum(s["acc"] for s in mc1) / 4)
    mc2 = [s["acc"] for s in samples if s["task"] == "truthfulqa_mc2"]
    assert all(0 < a < 1 for a in mc2)
    assert res["results"]["truthfulqa_mc2"]["acc"] == pytest.approx(sum(mc2) / 4)
    # the scored text is lm-eval's: preamble + question, continuation " " + choice
    first = samples[0]
    direct = [reference_loglik(lm, truthfulqa.context(first["question"]), " " + ch) for ch in first["choices"]]
    assert first["loglikelihoods"] == pytest.approx(direct, abs=1e-3)


def test_chat_generation_is_deterministic_and_batched(lm) -> None:
    convs = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a much longer message to pad"}]]
    side = lm.tok.padding_side
    a = lm.generate_chat(convs, max_new_tokens=6)
    assert lm.tok.padding_side == side  # restored after left-padded generation
    b = lm.generate_chat(convs[:1], max_new_tokens=6) + lm.generate_chat(convs[1:], max_new_tokens=6)
    assert len(a) == 2 and all(isinstance(t, str) for t in a)
    assert a == lm.generate_chat(convs, max_new_tokens=6)  # greedy: same again
    assert a[1] == b[1]  # the longest prompt gets no padding: same as generated alone


def test_long_prompts_are_left_truncated_to_fit_the_context(lm, monkeypatch) -> None:
    monkeypatch.setattr(type(lm), "max_length", property(lambda self: 40))  # like model:tiny's short context
    convs = [[{"role": "user", "content": "word " * 60 + "END"}], [{"role": "user", "content": "hi"}]]
    out = lm.generate_chat(convs, max_new_tokens=100)  # at most half the context is generated
    assert len(out) == 2 and lm.truncated_prompts == 1
    assert lm.generate_chat(convs[1:], max_new_tokens=100) == out[1:]  # the short prompt is untouched
