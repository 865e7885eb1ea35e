"""Running suites on a tiny real model: results layout, per-suite cache reuse, endpoint judges
behind our real OpenAI-compatible server (deterministic judge models that always say one word)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals_testlib import make_constant_lm, start_server
from stages.evals_lib.data import load_suite
from stages.evals_lib.runner import run_all, write_prepared
from stages.evals_lib.spec import EvalsSpec

LIMITS = {"truthfulqa": 3, "harmbench": 4, "xstest": 4, "engagement": 5}


def prepare(tmp: Path, overrides: dict[str, dict] | None = None) -> dict[str, tuple[Path, str]]:
    """Prepared built-in suites (as eval-data writes them), small; digest = a hash of the config."""
    import hashlib

    cfgs = {s: {"limit": n, **({"decoding": {"max_new_tokens": 6}} if s != "truthfulqa" else {})} for s, n in LIMITS.items()}
    for s, o in (overrides or {}).items():
        cfgs[s].update(o)
    spec = EvalsSpec.model_validate({**cfgs, "runtime": {"device": "cpu", "batch_size": 4}})
    out = {}
    for s in spec.suites():
        cfg = spec.suite(s)
        items, source = load_suite(s, cfg)
        d = write_prepared(tmp / s, s, cfg, items, source, spec.runtime.model_dump())
        out[s] = (d, hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest())
    return out


def test_run_all_layout_and_suite_cache(tmp_path: Path, eval_lm: Path) -> None:
    suites = prepare(tmp_path / "data")
    cache = tmp_path / "cache"
    res, reused = run_all(eval_lm, "model-digest-1", suites, tmp_path / "out1", cache)
    assert reused == []
    r = res["results"]
    for task in ("truthfulqa_mc1", "truthfulqa_mc2", "harmbench", "xstest_safe", "xstest_unsafe", "engagement"):
        assert task in r, task
    assert 0 <= r["truthfulqa_mc1"]["acc"] <= 1 and "acc_stderr" in r["truthfulqa_mc1"]
    assert 0 <= r["harmbench"]["asr"] <= 1 and any(t.startswith("harmbench/") for t in r)
    assert res["n-samples"]["truthfulqa_mc1"] == {"original": 24, "effective": 3}
    assert res["n-samples"]["harmbench"]["effective"] == 4
    cfg = res["config"]
    assert cfg["suites"]["truthfulqa"]["source"]["kind"] == "builtin" and "built-in" in cfg["note"]
    assert cfg["device"] == "cpu" and cfg["runtime"]["batch_size"] == 4
    lines = (tmp_path / "out1" / "samples" / "harmbench.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {"completion", "label", "test_case"} <= set(json.loads(lines[0]))
    json.dumps(res)  # JSON-serialisable

    # same model, same data: every suite comes from the cache, numbers identical
    again, reused = run_all(eval_lm, "model-digest-1", suites, tmp_path / "out2", cache)
    assert reused == ["truthfulqa", "harmbench", "xstest", "engagement"]
    assert again["results"] == res["results"]
    assert (tmp_path / "out2" / "samples" / "engagement.jsonl").read_text() == (tmp_path / "out1" / "samples" / "engagement.jsonl").read_text()

    # one suite's data changed: only that suite is recomputed
    changed = dict(suites)
    changed["xstest"] = (suites["xstest"][0], "another-digest")
    _, reused = run_all(eval_lm, "model-digest-1", changed, tmp_path / "out3", cache)
    assert reused == ["truthfulqa", "harmbench", "engagement"]
    # another model: nothing reused
    _, reused = run_all(eval_lm, "model-digest-2", {"truthfulqa": suites["truthfulqa"]}, tmp_path / "out4", cache)
    assert reused == []


@pytest.fixture(scope="module")
def judges(tmp_path_factory, yes_lm: Path, no_lm: Path):
    """Real servers over constant models: yes / no / 2_full_refusal / 4."""
    refusal = make_constant_lm(tmp_path_factory.mktemp("refusal-lm"), "2_full_refusal")
    four = make_constant_lm(tmp_path_factory.mktemp("four-lm"), "4")
    servers = {name: start_server(d, name) for name, d in (("yes", yes_lm), ("no", no_lm), ("refusal", refusal), ("four", four))}
    yield {name: base for name, (_, base) in servers.items()}
    for httpd, _ in servers.values():
        httpd.shutdown()
        httpd.server_close()


def test_endpoint_judges_through_a_real_server(tmp_path: Path, eval_lm: Path, judges: dict[str, str]) -> None:
    from stages.evals_lib.lm import LocalLM
    from stages.evals_lib.runner import read_prepared, run_suite

    lm = LocalLM(eval_lm, device="cpu", batch_size=4)
    for word, asr in (("yes", 1.0), ("no", 0.0)):
        suites = prepare(tmp_path / word, {"harmbench": {"judge": f"openai:{judges[word]}", "judge_api": "completions"}})
        meta, items = read_prepared(suites["harmbench"][0])
        res, samples = run_suite(meta, items, lm)
        assert res["results"]["harmbench"]["asr"] == asr
        assert res["results"]["harmbench"]["judge_unparsed"] == 0
        assert samples[0]["judge"] == f"openai:{judges[word]}#{word}"  # judge_model from /v1/models
    # chat judge API and a user template file (what eval-data stores as judge_template_text)
    suites = prepare(tmp_path / "chat", {"harmbench": {"judge": f"openai:{judges['yes']}/v1", "judge_api": "chat"}})
    meta, items = read_prepared(suites["harmbench"][0])
    meta["judge_template_text"] = "Behavior: {behavior}\nGeneration: {generation}\nContext: {context}\nyes or no?"
    res, _ = run_suite(meta, items, lm)
    assert res["results"]["harmbench"]["asr"] == 1.0
    # XSTest 3-way judge and the engagement rubric judge
    suites = prepare(tmp_path / "x", {"xstest": {"judge": f"openai:{judges['refusal']}"},
                                      "engagement": {"rubric_judge": f"openai:{judges['four']}"}})
    res, _ = run_suite(*read_prepared(suites["xstest"][0]), lm)
    assert res["results"]["xstest_safe"]["refusal_rate"] == 1.0 and res["results"]["xstest_safe"]["full_refusal_rate"] == 1.0
    res, _ = run_suite(*read_prepared(suites["engagement"][0]), lm)
    assert res["results"]["engagement"]["rubric_score"] == 4.0 and res["results"]["engagement"]["rubric_unparsed"] == 0


def test_unreachable_judge_fails_fast_with_one_line(tmp_path: Path, eval_lm: Path) -> None:
    from genesis_testlib import free_port
    from genesis_build.errors import GenesisError
    from stages.evals_lib.lm import LocalLM
    from stages.evals_lib.runner import read_prepared, run_suite

    suites = prepare(tmp_path, {"harmbench": {"judge": f"openai:http://127.0.0.1:{free_port()}"}})
    with pytest.raises(GenesisError, match=r"judge http://127\.0\.0\.1:\d+/v1/models unreachable"):
        run_suite(*read_prepared(suites["harmbench"][0]), LocalLM(eval_lm, device="cpu"))
