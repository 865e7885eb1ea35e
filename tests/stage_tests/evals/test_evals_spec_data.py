"""The evals spec kind and the data loaders (real shared benchmark files, built-in sets, bad files)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from evals_testlib import ROOT, SHARED_EVALS
from genesis_build.errors import GenesisError
from stages.evals_lib import data
from stages.evals_lib.spec import EvalsSpec, HarmBenchSuite, TruthfulQASuite, XSTestSuite



def test_shared_benchmark_files_sit_beside_the_repository() -> None:
    # ../shared relative to the repository root, in CI too: the tests below read it, never skip it
    assert SHARED_EVALS.is_dir(), f"shared benchmark files missing: {SHARED_EVALS}"


def test_repo_eval_specs_validate() -> None:
    for name in ("tiny", "genesis"):
        spec = EvalsSpec.model_validate(tomllib.loads((ROOT / f"specs/evals/{name}.toml").read_text()))
        assert spec.suites() == ["truthfulqa", "harmbench", "xstest", "engagement"]
    tiny = EvalsSpec.model_validate(tomllib.loads((ROOT / "specs/evals/tiny.toml").read_text()))
    assert all(data.source_kind(tiny.suite(s)) == "builtin" for s in tiny.suites())


@pytest.mark.parametrize("bad, fragment", [
    ({"truthfulqa": {"limt": 3}}, "limt"),                                   # typo: extra="forbid"
    ({"harmbench": {"judge": "gpt4"}}, "openai:<base url>"),                 # judge format says how to fix it
    ({"xstest": {"path": "a.csv", "dataset": "walledai/XSTest"}}, "not both"),
    ({"truthfulqa": {"tasks": []}}, "mc1 and/or mc2"),
    ({"runtime": {"device": "gpu"}}, "device must be"),
    ({"description": "nothing enabled"}, "enable at least one suite"),
    ({"engagement": {"dataset": "x/y"}}, "local JSONL"),
    ({"truthfulqa": {"split": "test"}}, "only apply to dataset"),
])
def test_spec_errors_say_how_to_fix(bad: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as e:
        EvalsSpec.model_validate(bad)
    assert fragment in str(e.value)


def test_judge_values_accepted() -> None:
    assert HarmBenchSuite(judge="openai:http://127.0.0.1:8001").judge.startswith("openai:")
    assert XSTestSuite().judge == "refusal"


def test_truthfulqa_mc_task_json_keeps_dict_order() -> None:
    items, source = data.load_suite("truthfulqa", TruthfulQASuite(path="x"), SHARED_EVALS / "truthfulqa/mc_task.json")
    raw = json.loads((SHARED_EVALS / "truthfulqa/mc_task.json").read_text())
    assert len(items) == source["rows"] == 817
    first = items[0]
    assert first["question"] == raw[0]["question"]
    assert first["mc2"]["choices"] == list(raw[0]["mc2_targets"]) and first["mc2"]["labels"] == list(raw[0]["mc2_targets"].values())
    assert all(sum(it["mc1"]["labels"]) == 1 for it in items)
    limited, _ = data.load_suite("truthfulqa", TruthfulQASuite(path="x", limit=40), SHARED_EVALS / "truthfulqa/mc_task.json")
    assert [i["question"] for i in limited] == [r["question"] for r in raw[:40]]


def test_harmbench_csv_categories_and_embedded_newlines() -> None:
    path = SHARED_EVALS / "harmbench/harmbench_behaviors_text_test.csv"
    items, source = data.load_suite("harmbench", HarmBenchSuite(path="x"), path)
    assert source["rows"] == 320  # CSV records, not lines (contexts hold newlines)
    assert len(items) == 159 + 81  # standard + contextual; copyright left out by default
    ctx = [i for i in items if i["functional_category"] == "contextual"]
    assert ctx and all(i["context"] for i in ctx) and any("\n" in i["context"] for i in ctx)
    assert {i["semantic_category"] for i in items} >= {"chemical_biological", "cybercrime_intrusion", "illegal"}
    only_std, _ = data.load_suite("harmbench", HarmBenchSuite(path="x", functional_categories=["standard"], limit=5), path)
    assert len(only_std) == 5 and all(i["functional_category"] == "standard" for i in only_std)


def test_xstest_csv_labels() -> None:
    items, _ = data.load_suite("xstest", XSTestSuite(path="x"), SHARED_EVALS / "xstest/xstest_prompts.csv")
    assert len(items) == 450
    assert sum(i["label"] == "safe" for i in items) == 250
    assert len({i["type"] for i in items}) == 18


def test_builtin_sets_are_ours_and_well_formed() -> None:
    spec = EvalsSpec.model_validate({s: {} for s in ("truthfulqa", "harmbench", "xstest", "engagement")})
    counts = {}
    for s in spec.suites():
        items, source = data.load_suite(s, spec.suite(s))
        assert source["kind"] == "builtin" and "not the benchmark" in source["note"]
        assert len(items) >= 20, s
        counts[s] = len(items)
    assert counts == {"truthfulqa": 24, "harmbench": 26, "xstest": 28, "engagement": 30}
    readme = (ROOT / "stages/evals_lib/builtin/README.md").read_text()
    assert "our own" in readme


def test_bad_files_fail_with_the_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "behaviors.csv"
    bad.write_text("Behavior,SemanticCategory\nx,illegal\n")
    with pytest.raises(GenesisError, match=r"row 0 lacks FunctionalCategory, BehaviorID"):
        data.load_suite("harmbench", HarmBenchSuite(path=str(bad)), bad)
    tq = tmp_path / "tq.jsonl"
    tq.write_text(json.dumps({"question": "q", "mc1_targets": {"a": 1, "b": 1}, "mc2_targets": {"a": 1, "b": 0}}) + "\n")
    with pytest.raises(GenesisError, match="exactly one true answer"):
        data.load_suite("truthfulqa", TruthfulQASuite(path=str(tq)), tq)
    broken = tmp_path / "x.jsonl"
    broken.write_text('{"prompt": "a", "kind": "open"}\n{oops\n')
    with pytest.raises(GenesisError, match=r"x.jsonl:2: not valid JSON"):
        data.read_rows(broken)
    with pytest.raises(GenesisError, match="unsupported file type"):
        data.read_rows(_touch(tmp_path / "a.parquet"))


def _touch(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def test_eval_data_key_follows_builtin_content() -> None:
    from stages.eval_data import _data_select

    dump = EvalsSpec.model_validate({"truthfulqa": {"limit": 3}}).model_dump(mode="json")
    sel = _data_select(dump, "truthfulqa")
    assert sel["truthfulqa"] == {"limit": 3, "tasks": ["mc1", "mc2"]}  # None-valued fields stay out of the key
    assert sel["truthfulqa.builtin_sha256"] == data.builtin_digest("truthfulqa")
    dump_path = EvalsSpec.model_validate({"truthfulqa": {"path": "a.json"}}).model_dump(mode="json")
    assert "truthfulqa.builtin_sha256" not in _data_select(dump_path, "truthfulqa")
