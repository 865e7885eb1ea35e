"""Bad input: a seeded spec fuzzer over the engine's test specs and every spec in the repo's specs/.

Each mutation goes through the real CLI (in one driver process, ``spec_fuzz.py``; a sample also
through ``genesis-build`` subprocesses, half of them real builds) and must give exactly one line
``error: specs/<file>.toml:<line>: <field>: …``, exit code 2, no traceback, and leave the cache
byte-identical. Silent acceptances and unlocated errors fail the test unless listed in
``fuzz_gaps.py`` (each listed one is a strict xfail here, so fixing it is noticed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fuzz_gaps import KNOWN, Known
from rel_helpers import HERE, REPO, SEED, RelWorkspace, record
from spec_fuzz import make_real_workspace

pytestmark = pytest.mark.slow

MIN_MUTATIONS = 200
SAMPLE_PER_WORKSPACE = 10  # real subprocesses per workspace (20 in all)

TEST_SPECS = {
    "text": {
        "demo": 'files = ["data/*.txt"]\nnote = "hello"\nparts = ["a", "e"]\n\n[shape]\nupper = false\nrepeat = 2\n',
        "up": 'files = ["data/a.txt"]\nseconds = 0.0\n',
        "child": 'extends = "text:demo"\nupstream = "text:up"\n\n[shape]\nupper = true\n',
    },
    "blob": {
        "small": "size = 4096\nfiles = 3\nseed = 7\n",
        "linky": 'extends = "blob:small"\nlink_to = "real.txt"\nfiles = 2\n',
    },
}


def _drive(ws: Path, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    p = subprocess.run([sys.executable, str(HERE / "spec_fuzz.py"), "--workspace", str(ws), "--seed", str(SEED),
                        "--out", str(out), "--sample", str(SAMPLE_PER_WORKSPACE)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run the fuzzer over the test workspace (built first, so its cache holds objects) and over a
    copy of the repo's workspace that shares that cache."""
    base = tmp_path_factory.mktemp("fuzz")
    ws = RelWorkspace(base / "test-ws")
    for kind, specs in TEST_SPECS.items():
        (ws.root / "specs" / kind).mkdir(parents=True, exist_ok=True)
        for name, text in specs.items():
            (ws.root / "specs" / kind / f"{name}.toml").write_text(text)
    built = ws.cli("text:child", "text:demo", "blob-light:small", "-q")
    assert built.code == 0, built.err
    results = {"test": _drive(ws.root, base / "test.json")}
    real = make_real_workspace(REPO, base / "real", cache=ws.cache)
    results["repo"] = _drive(real, base / "repo.json")
    for name, res in results.items():
        for address, info in res["specs"].items():
            record("spec-coverage", f"{name}:{address}", bool(info["target"]), target=info["target"],
                   skipped=info["skipped"])
        for m in res["mutations"]:
            known = next((k for k in KNOWN if k.matches(m)), None)
            record("mutation", m["id"], m["outcome"] == "rejected", outcome=m["outcome"], type=m["type"],
                   workspace=name, known_gap=known.id if known else None, reason=m["reason"][:300])
        for s in res["subprocess"]:
            record("mutation-subprocess", s["id"], s["ok"], mode=s["mode"], workspace=name)
    return results


def _all(fuzz: dict[str, dict]) -> list[dict]:
    return [m for res in fuzz.values() for m in res["mutations"]]


def _unexplained(fuzz: dict[str, dict], outcome: str) -> list[dict]:
    return [m for m in _all(fuzz) if m["outcome"] == outcome and not any(k.matches(m) for k in KNOWN)]


def test_enough_mutations_of_every_type_ran(fuzz: dict[str, dict]) -> None:
    muts = _all(fuzz)
    types = Counter(m["type"] for m in muts)
    assert len(muts) >= MIN_MUTATIONS, types
    for t in ("unknown_field", "wrong_type", "negative", "huge", "missing_required", "missing_ref", "extends_cycle",
              "ref_cycle", "invalid_toml", "non_utf8"):
        assert types[t] > 0, f"no {t} mutation ran: {types}"
    assert fuzz["test"]["specs_restored"] and fuzz["repo"]["specs_restored"]


def test_every_rejection_is_one_located_line_exit_2_and_cache_unchanged(fuzz: dict[str, dict]) -> None:
    bad = _unexplained(fuzz, "bad")
    assert not bad, "\n".join(f"{m['id']}: {m['reason']}" for m in bad)


def test_no_unknown_silent_acceptance(fuzz: dict[str, dict]) -> None:
    accepted = _unexplained(fuzz, "accepted")
    assert not accepted, ("accepted silently (a finding: add to fuzz_gaps.py with its owner, and tell them):\n"
                          + "\n".join(m["id"] for m in accepted))


def test_real_subprocesses_agree_with_the_in_process_runs(fuzz: dict[str, dict]) -> None:
    runs = [s for res in fuzz.values() for s in res["subprocess"]]
    assert len(runs) >= min(SAMPLE_PER_WORKSPACE, 1) and any(s["mode"] == "build" for s in runs)
    wrong = [s for s in runs if not s["ok"]]
    assert not wrong, json.dumps(wrong, indent=1)


def test_repo_specs_are_fuzzed_or_the_reason_is_known(fuzz: dict[str, dict]) -> None:
    """Every repo spec is either fuzzed or skipped for a stated reason (printed for the report)."""
    specs = fuzz["repo"]["specs"]
    assert specs, "the repo has no specs/"
    skipped = {a: i["skipped"] for a, i in specs.items() if not i["target"]}
    for a, why in skipped.items():
        assert why, a
        print(f"not fuzzed: {a}: {why}")


@pytest.mark.parametrize("gap", KNOWN, ids=[k.id for k in KNOWN])
def test_known_gap(fuzz: dict[str, dict], gap: Known) -> None:
    """xfails while the listed finding reproduces; fails once it is fixed (then delete the entry)."""
    exercised = [m for m in _all(fuzz) if re.search(f"^(?:{gap.kind})$", m["kind"])
                 and re.search(f"^(?:{gap.mtype})$", m["type"]) and re.search(gap.path, m["path"])]
    if not exercised:
        pytest.skip("no mutation of this kind ran (its spec is not covered right now)")
    hits = [m for m in exercised if gap.matches(m)]
    if hits:
        pytest.xfail(f"{gap.owner}: {gap.why} — e.g. {hits[0]['id']}: {hits[0]['reason'][:200]}")
    raise AssertionError(f"known gap {gap.id} no longer reproduces ({len(exercised)} such mutations ran): "
                         "delete it from tests/reliability/fuzz_gaps.py")
