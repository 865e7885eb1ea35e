"""The file-name rule of ``stages/`` (stated in ``stages/__init__.py``), checked against the registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rule_violations(files: list[str], stages_by: dict[str, str], kinds_by: dict[str, str],
                    commands_by: dict[str, str]) -> list[str]:
    """What breaks "one file per stage or spec kind": ``files`` are the module names of ``stages/*.py``;
    the dicts map each registered stage / kind / command to the module that registered it."""
    out = []
    for mod, where in [*((m, "stage") for m in stages_by.values()), *((m, "kind") for m in kinds_by.values()),
                       *((m, "command") for m in commands_by.values())]:
        if mod.rpartition(".")[0] != "stages":
            out.append(f"a {where} is registered in {mod}, not in a file of stages/")
    for mod in files:
        stem = mod.rpartition(".")[2]
        own_stages = sorted(n for n, m in stages_by.items() if m == mod)
        own_kinds = sorted(n for n, m in kinds_by.items() if m == mod)
        if len(own_stages) > 1 or len(own_kinds) > 1:
            out.append(f"{stem}.py registers {len(own_stages)} stages and {len(own_kinds)} kinds: "
                       f"{', '.join(own_stages + own_kinds)}")
            continue
        if not own_stages and not own_kinds:
            out.append(f"{stem}.py registers no stage and no kind")
            continue
        if own_stages and own_stages[0].replace("-", "_") != stem:
            out.append(f"{stem}.py registers stage {own_stages[0]}: name the file {own_stages[0].replace('-', '_')}.py")
        if own_kinds and own_kinds[0] not in (stem, stem.removesuffix("_spec")):
            out.append(f"{stem}.py registers kind {own_kinds[0]}: name the file {own_kinds[0]}.py or {own_kinds[0]}_spec.py")
        if own_stages and own_kinds and own_stages[0] != own_kinds[0]:
            out.append(f"{stem}.py registers kind {own_kinds[0]} and stage {own_stages[0]}: only a kind and its "
                       "same-named stage share a file")
    return out


def _registry() -> dict:
    code = ("import json, stages\nfrom genesis_build.stage import stages as S, kinds as K, commands as C\n"
            "print(json.dumps({'stages': {n: s.module for n, s in S().items()}, 'kinds': {n: k.module for n, k in K().items()},"
            " 'commands': {n: c.module for n, c in C().items()}}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_every_file_in_stages_is_one_stage_or_one_kind() -> None:
    reg = _registry()
    files = sorted(f"stages.{f.stem}" for f in (ROOT / "stages").glob("*.py") if not f.name.startswith("_"))
    assert len(reg["stages"]) >= 15 and len(files) >= 15
    assert rule_violations(files, reg["stages"], reg["kinds"], reg["commands"]) == []
    assert {"serve", "chat", "probe"} <= set(reg["commands"])


def test_the_rule_is_stated_once_in_the_package_docstring() -> None:
    import stages

    assert "one file per stage or spec kind" in (stages.__doc__ or "").lower()


def test_the_rule_check_catches_what_it_should() -> None:
    files = ["stages.corpus", "stages.model_spec", "stages.evals", "stages.misc"]
    bad = rule_violations(files, {"corpus": "stages.corpus", "corpus-source": "stages.corpus", "eval": "stages.evals",
                                  "x": "stages.lib.helpers"},
                          {"model": "stages.model_spec", "evals": "stages.evals"}, {})
    assert any("corpus.py registers 2 stages" in b for b in bad)
    assert any("evals.py registers kind evals and stage eval" in b for b in bad)
    assert any("misc.py registers no stage and no kind" in b for b in bad)
    assert any("stages.lib.helpers, not in a file of stages/" in b for b in bad)
    assert not any("model_spec.py" in b for b in bad)
