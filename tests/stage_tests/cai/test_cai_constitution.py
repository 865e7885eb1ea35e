"""Constitution and prompt-set specs: the project's genesis constitution, `extends` overriding one
principle, and bad input reported with file, line and a fix before anything runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import stages  # noqa: F401  (registers the kinds)
from genesis_build.errors import SpecError
from genesis_build.specs import SpecStore
from cai_testlib import ROOT
from genesis_build.stage import kinds


def _store(tmp_path: Path, **files: str) -> SpecStore:
    (tmp_path / "specs/constitution").mkdir(parents=True)
    (tmp_path / "specs/prompts").mkdir(parents=True)
    shutil.copy(ROOT / "specs/constitution/genesis.toml", tmp_path / "specs/constitution/genesis.toml")
    for name, text in files.items():
        kind, _, spec = name.partition("__")
        (tmp_path / "specs" / kind / f"{spec}.toml").write_text(text)
    return SpecStore(tmp_path, kinds())


def test_genesis_has_the_seven_draft_principles(tmp_path: Path) -> None:
    c = _store(tmp_path).get("constitution:genesis").model
    assert list(c.active()) == ["safe", "ethical", "honest", "helpful", "curious", "interesting", "refuse-specifically"]
    assert c.principles["helpful"].text.startswith("Be helpful. Actually answer the question.")
    assert c.system_prompt.strip()
    from stages.cai_lib import templates

    for p in c.active().values():
        text = templates.render(p.revision, prompt="P?", response="R.", principle=p.text, critique="C!")
        assert "P?" in text and "R." in text and "C!" in text and p.text in text


def test_extends_overrides_one_principle_and_keeps_the_rest(tmp_path: Path) -> None:
    store = _store(tmp_path, constitution__playful='extends = "constitution:genesis"\n'
                                                  '[principles.curious]\ntext = "Be curious, and a bit playful."\n'
                                                  '[principles.safe]\nenabled = false\n')
    base = store.get("constitution:genesis").model
    child = store.get("constitution:playful").model
    assert child.principles["curious"].text == "Be curious, and a bit playful."
    assert child.principles["curious"].critique == base.principles["curious"].critique  # deep-merged
    assert "safe" not in child.active() and len(child.active()) == 6
    assert child.principles["honest"] == base.principles["honest"]


@pytest.mark.parametrize("body, where, message", [
    ('[principles.curious]\ncritique = "What is wrong with {respnse}?"\n', "principles.curious.critique",
     "unknown placeholder {respnse} in the critique template; allowed: {principle}, {prompt}, {response}"),
    ('[principles.curious]\ntext = "   "\n', "principles.curious.text", "the principle text is empty"),
    ('[principles.curious]\nrevision = "Rewrite it: {response"\n', "principles.curious.revision", "malformed template"),
    ('[principles.curious]\nrevision = "Rewrite it."\n', "principles.curious.revision", "must contain {response}"),
    ('[principles.curious]\ncritique = "{response.upper}"\n', "principles.curious.critique", "not a plain name"),
    ('[principles.Bad_Id]\ntext = "x"\ncritique = "{response}"\nrevision = "{response}"\n', "principles",
     "principle id 'Bad_Id' must be lowercase"),
    ('feedback = "Which is better? {response_a}"\n', "feedback", "must contain {response_b}"),
    ('[principles.curious]\ntxt = "typo"\n', "principles.curious.txt", "unknown field"),  # engine: no did-you-mean inside dict-keyed tables yet
])
def test_bad_constitution_is_reported_with_file_line_and_fix(tmp_path: Path, body: str, where: str, message: str) -> None:
    store = _store(tmp_path, constitution__bad='extends = "constitution:genesis"\n' + body)
    with pytest.raises(SpecError) as e:
        store.get("constitution:bad")
    text = str(e.value)
    assert text.startswith("specs/constitution/bad.toml:"), text
    assert f"constitution.{where}" in text and message in text, text


def test_all_principles_disabled_is_an_error(tmp_path: Path) -> None:
    body = 'extends = "constitution:genesis"\n' + "".join(
        f"[principles.{p}]\nenabled = false\n" for p in ("safe", "ethical", "honest", "helpful", "curious", "interesting",
                                                       "refuse-specifically"))
    with pytest.raises(SpecError, match="no enabled principles"):
        _store(tmp_path, constitution__none=body).get("constitution:none")


@pytest.mark.parametrize("body, message", [
    ("", "give one prompt source"),
    ('path = "x.jsonl"\ndataset = "org/x"\n', "got path, dataset"),
    ('path = "prompts.csv"\n', "path must end in .jsonl, .json, .parquet"),
    ("builtin = true\nlimit = 0\n", "greater than or equal to 1"),
])
def test_bad_prompt_sets(tmp_path: Path, body: str, message: str) -> None:
    store = _store(tmp_path, prompts__bad=body)
    with pytest.raises(SpecError, match=message.replace(".", r"\.").replace("(", r"\(")):
        store.get("prompts:bad")


def test_builtin_prompts_are_ours_and_cover_three_categories() -> None:
    import json

    rows = [json.loads(l) for l in (ROOT / "stages/cai_lib/builtin_prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and len({r["prompt"] for r in rows}) == 300
    assert {r["category"] for r in rows} == {"harmful-adjacent", "everyday", "curiosity"}
    assert all(r["source"] == "genesis-build (written by the project)" for r in rows)
