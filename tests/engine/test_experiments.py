"""Experiments through the real CLI on the engine's test stages: --set variants, --save, --sweep,
diff and exp (genesis_build/experiments.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from genesis_build.experiments import fmt_value, parse_value, split_sweep
from genesis_build.state import RACY_NS
from genesis_testlib import Workspace

NODES = {"read:demo", "words:demo/a", "words:demo/e", "count:demo"}


def _states(ws: Workspace, *args: str) -> dict[str, dict]:
    r = ws.cli("--dry-run", "--format", "json", *args)
    assert r.code == 0, r.err
    return {n["id"]: n for n in json.loads(r.out)}


def test_override_of_a_field_one_stage_reads_makes_only_it_and_dependents_stale(ws: Workspace) -> None:
    assert ws.cli("slow:demo").code == 0
    base = _states(ws, "slow:demo")
    st = _states(ws, "slow:demo", "--set", "text.seconds=0.01")
    assert set(st) == {"read:demo@seconds=0.01", "slow:demo@seconds=0.01"}
    assert st["read:demo@seconds=0.01"]["state"] == "cached"
    assert st["read:demo@seconds=0.01"]["key"] == base["read:demo"]["key"]  # keys follow values, not names
    assert st["slow:demo@seconds=0.01"]["state"] == "stale"
    assert st["slow:demo@seconds=0.01"]["reason"] == "spec field text.seconds changed 0.0→0.01"
    r = ws.cli("slow:demo", "--set", "text.seconds=0.01")
    assert r.code == 0, r.err
    assert r.ran == ["slow:demo@seconds=0.01"]
    assert (ws.root / "out" / "slow:demo@seconds=0.01").is_symlink()
    again = ws.cli("slow:demo", "--set", "text.seconds=0.01")  # a repeated override is a no-op
    assert again.code == 0 and again.ran == [] and "(no-op)" in again.out
    # the variant's manifest names it; the base is untouched and still cached
    m = json.loads((ws.root / "out" / "slow:demo@seconds=0.01").resolve().parent.joinpath("manifest.json").read_text())
    assert m["node"] == "slow:demo@seconds=0.01"
    assert m["variant"] == {"spec": "text:demo@seconds=0.01", "overrides": {"text.seconds=0.01": 0.01}}
    assert {n["state"] for n in _states(ws, "slow:demo").values()} == {"cached"}


def test_override_of_a_field_read_upstream_makes_the_whole_chain_stale(ws: Workspace) -> None:
    assert ws.cli().code == 0
    st = _states(ws, "--set", "text.shape.repeat=2")
    assert st["read:demo@repeat=2"]["state"] == "stale"
    assert st["read:demo@repeat=2"]["reason"] == "spec field text.shape.repeat changed 1→2"
    assert {st[f"{n.replace('demo', 'demo@repeat=2')}"]["state"] for n in NODES - {"read:demo"}} == {"waiting"}
    r = ws.cli("--set", "text.shape.repeat=2")
    assert r.code == 0 and len(r.ran) == 4
    summary = json.loads((ws.root / "out" / "text:demo@repeat=2" / "summary.json").read_text())
    assert summary["words"] == 12  # the variant's value reached the stage
    why = ws.cli("why", "read:demo", "--set", "text.shape.repeat=3")
    assert why.code == 0 and "spec field text.shape.repeat changed 1→3" in why.out


def test_a_built_variant_name_is_a_handle_for_build_why_and_graph(ws: Workspace) -> None:
    assert ws.cli("--set", "text.shape.repeat=2").code == 0
    r = ws.cli("text:demo@repeat=2")
    assert r.code == 0 and r.ran == [] and "(no-op)" in r.out
    assert ws.cli("text:demo@repeat=2").ran == []  # never answered from, nor recorded on, the fast path
    assert not (ws.root / ".genesis" / "noop").exists() or not list((ws.root / ".genesis" / "noop").iterdir())
    why = ws.cli("why", "read:demo@repeat=2")
    assert why.code == 0 and "read:demo@repeat=2: cached" in why.out
    g = ws.cli("graph", "--format", "json", "text:demo@repeat=2")
    assert g.code == 0 and {n["id"] for n in json.loads(g.out)["nodes"]} == {
        n.replace("demo", "demo@repeat=2") for n in NODES}
    g2 = ws.cli("graph", "--format", "mermaid", "--set", "text.shape.repeat=3")
    assert g2.code == 0 and "read:demo@repeat=3" in g2.out
    bad = ws.cli("text:demo@repeat=9")
    assert bad.code == 2 and "a --set variant this workspace has not built" in bad.err
    mixed = ws.cli("text:demo@repeat=2", "--set", "text.note=1")
    assert mixed.code == 2 and "not to a variant's name" in mixed.err


def test_set_on_a_field_no_stage_reads_changes_no_key(ws: Workspace) -> None:
    assert ws.cli().code == 0
    base = _states(ws)
    st = _states(ws, "--set", 'text.note="another"')
    assert {n.split("@")[0] + ("/" + n.split("/")[1] if "/" in n else "") for n in st} == NODES
    for nid, rec in st.items():
        assert rec["state"] == "cached"
        assert rec["key"] == base[nid.replace("@note=another", "")]["key"]
    r = ws.cli("--set", 'text.note="another"')
    assert r.code == 0 and r.ran == []
    assert (ws.root / "out" / "text:demo@note=another").resolve() == (ws.root / "out" / "text:demo").resolve()


@pytest.mark.parametrize("args,expected", [
    (["--set", "text.shape.repeatt=2"], "error: --set text.shape.repeatt=2: unknown field (did you mean repeat?)"),
    (["--set", "text.shap.repeat=2"], "error: --set text.shap.repeat=2: text.shap: unknown field (did you mean shape?)"),
    (["--set", "text.shape.repeat=0"], "error: --set text.shape.repeat=0: Input should be greater than or equal to 1"),
    (["--set", "text.shape.repeat=200"], "error: --set text.shape.repeat=200: must be at most 100"),
    (["--set", "text.shape.repeat=[1,"], "error: --set text.shape.repeat=[1,: invalid TOML value '[1,'"),
    (["--set", "text.seconds=nan"], "error: --set text.seconds=nan: nan is not allowed"),
    (["--set", "txt.shape.repeat=2"], "error: --set txt.shape.repeat=2: unknown spec kind 'txt' (did you mean text?)"),
    (["--set", "text:demoo.note=1"], "error: --set text:demoo.note=1: no spec text:demoo"),
    (["--set", "text.note"], "error: --set text.note: expected KIND[:NAME].FIELD=VALUE"),
    (["--set", "text.note.x=1"], "error: --set text.note.x=1: text.note is a value, not a table"),
    (["--set", "text.note=1", "--set", "text.note=2"], "is already set by text.note=1"),
    (["--sweep", "text.shape.repeat=1,0"], "error: --sweep text.shape.repeat=0: Input should be greater than or equal to 1"),
    (["--set", "text.upstream='model:x'"], "error: --set text.upstream='model:x': must reference a text spec"),
])
def test_invalid_override_is_one_line_exit_2_cache_untouched(ws: Workspace, args: list[str], expected: str) -> None:
    assert ws.cli().code == 0
    before = ws.cache_snapshot()
    out_before = sorted(os.listdir(ws.root / "out"))
    for extra in ([], ["--dry-run"]):
        r = ws.cli(*args, *extra)
        assert r.code == 2, (r.out, r.err)
        assert expected in r.err
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        assert r.ran == []
    assert ws.cache_snapshot() == before
    assert sorted(os.listdir(ws.root / "out")) == out_before


def test_fast_path_never_answers_a_set_run_with_a_plain_record(ws: Workspace) -> None:
    assert ws.cli().code == 0
    time.sleep(RACY_NS / 1e9 + 0.2)  # files younger than the racy window are never vouched for by a record
    assert ws.cli().ran == []  # records the plain build's no-op answer
    plain = ws.cli("--dry-run")
    assert ws.cli("--dry-run").out == plain.out  # records the plain dry-run answer
    records = sorted((ws.root / ".genesis" / "noop").iterdir())
    assert records
    dry = ws.cli("--dry-run", "--set", "text.shape.repeat=2")
    assert dry.code == 0 and "read:demo@repeat=2" in dry.out and "4 to run" in dry.out
    r = ws.cli("--set", "text.shape.repeat=2")
    assert r.code == 0 and "read:demo@repeat=2" in r.ran
    assert ws.cli("--set", "text.shape.repeat=2").ran == []
    # a variant run records nothing, and the plain answers are still the plain target's
    assert sorted((ws.root / ".genesis" / "noop").iterdir()) == records
    assert ws.cli("--dry-run").out == plain.out and "@" not in plain.out


def test_override_of_a_referenced_spec_makes_the_referrer_a_variant(ws: Workspace) -> None:
    ws.write_spec("up", 'files = ["data/a.txt"]\n')
    ws.write_spec("demo", 'files = ["data/*.txt"]\nupstream = "text:up"\n')
    assert ws.cli().code == 0
    base = _states(ws)
    st = _states(ws, "--set", "text:up.shape.repeat=3")
    assert st["read:up@repeat=3"]["state"] == "stale"
    assert st["read:demo@text.repeat=3"]["state"] == "cached"
    assert st["read:demo@text.repeat=3"]["key"] == base["read:demo"]["key"]
    assert st["count:demo@text.repeat=3"]["inputs"][-1] == "count:up@repeat=3"
    # without an address, a kind with several specs in the graph is ambiguous, unless it is the target's
    amb = ws.cli("--dry-run", "--set", "text.shape.repeat=3", "count:up", "count:demo")
    assert amb.code == 2 and "2 text specs" in amb.err or "name one" in amb.err
    r = ws.cli("--set", "text:up.shape.repeat=3")
    assert r.code == 0 and sorted(r.ran) == ["count:demo@text.repeat=3", "count:up@repeat=3", "read:up@repeat=3",
                                             "words:up@repeat=3/a", "words:up@repeat=3/e"]


def test_set_on_a_spec_outside_the_graph_is_an_error(ws: Workspace) -> None:
    ws.write_spec("other", 'files = ["data/a.txt"]\n')
    r = ws.cli("--dry-run", "--set", "text:other.shape.repeat=2")
    assert r.code == 2 and "text:other is not used by text:demo" in r.err


def test_save_writes_a_spec_that_extends_the_base_with_the_same_keys(ws: Workspace) -> None:
    r = ws.cli("--set", "text.shape.repeat=2", "--set", "text.shape.upper=true", "--save", "loud")
    assert r.code == 0, r.err
    path = ws.root / "specs" / "text" / "loud.toml"
    data = tomllib.loads(path.read_text())
    assert data == {"extends": "text:demo", "shape": {"repeat": 2, "upper": True}}
    saved = ws.cli("text:loud")
    assert saved.code == 0 and saved.ran == []  # same values → same keys → all cached
    again = ws.cli("--set", "text.shape.repeat=2", "--save", "loud")
    assert again.code == 2 and "specs/text/loud.toml already exists" in again.err


def test_sweep_builds_the_shared_upstream_once_and_prints_the_table(ws: Workspace) -> None:
    r = ws.cli("slow:demo", "--sweep", "text.seconds=0.02,0.04", "-j", "2")
    assert r.code == 0, r.err
    assert sorted(r.ran) == ["read:demo@seconds=0.02", "slow:demo@seconds=0.02", "slow:demo@seconds=0.04"] \
        or sorted(r.ran) == ["read:demo@seconds=0.04", "slow:demo@seconds=0.02", "slow:demo@seconds=0.04"]
    assert sum(n.startswith("read:") for n in r.ran) == 1
    assert "slow:demo@seconds=0.02" in r.out and "slow:demo@seconds=0.04" in r.out and "seconds=0.04" in r.out
    for v in ("0.02", "0.04"):
        assert (ws.root / "out" / f"slow:demo@seconds={v}" / "step9.txt").is_file()
    # cartesian product of two sweeps: 2 × 2 variants, each read key built once per shape value
    r2 = ws.cli("slow:demo", "--sweep", "text.seconds=0.02,0.04", "--sweep", "text.shape.upper=true,false")
    assert r2.code == 0, r2.err
    assert sum(n.startswith("slow:") for n in r2.ran) == 2  # the upper=false pair equals the first sweep's keys
    assert sum(n.startswith("read:") for n in r2.ran) == 1


def test_diff_shows_changed_fields_nodes_and_metric_deltas(ws: Workspace) -> None:
    assert ws.cli().code == 0
    assert ws.cli("--set", 'text.files=["data/a.txt"]').code == 0
    variant = "text:demo@files=data_a.txt~"
    entries = [e for e in os.listdir(ws.root / "out") if e.startswith(variant)]
    assert len(entries) == 1
    r = ws.cli("diff", "text:demo", entries[0], "--format", "json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert [row["field"] for row in d["spec"]] == ["file data/b.txt"]  # `files` is keyed by content
    assert d["spec"][0]["b"] == "—" and len(d["spec"][0]["a"]) == 12
    assert "read" in d["nodes_differ"]
    chars = next(m for m in d["metrics"] if m["metric"] == "read.chars")
    assert chars == {"metric": "read.chars", "a": 40, "b": 20, "delta": -20}
    # out/ paths work too, and text/markdown render the same rows
    md = ws.cli("diff", "out/text:demo", f"out/{entries[0]}", "--format", "markdown")
    assert md.code == 0 and "| read.chars | 40 | 20 | -20 |" in md.out and "`file data/b.txt`" in md.out
    txt = ws.cli("diff", "text:demo", entries[0])
    assert txt.code == 0 and "data/b.txt" in txt.out and "-20" in txt.out
    missing = ws.cli("diff", "text:demo", "text:nothing")
    assert missing.code == 2 and "text:nothing: no build found" in missing.err


def test_exp_lists_variants_with_overrides_and_sorts(ws: Workspace) -> None:
    assert ws.cli().code == 0
    assert ws.cli("--set", 'text.files=["data/a.txt"]').code == 0
    assert ws.cli("--set", "text.shape.repeat=2").code == 0
    r = ws.cli("exp", "--format", "json", "--sort", "chars")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert [row["variant"] for row in rows][0].startswith("text:demo@files=")  # 20 chars sorts first
    assert {row["variant"] for row in rows} == {"text:demo", "text:demo@repeat=2", rows[0]["variant"]}
    by = {row["variant"]: row for row in rows}
    assert by["text:demo@repeat=2"]["overrides"] == {"text.shape.repeat=2": 2}
    assert by["text:demo"]["metrics"]["read.chars"] == 40 and by["text:demo"]["overrides"] == {}
    txt = ws.cli("exp")
    assert txt.code == 0 and "repeat=2" in txt.out and "(base)" in txt.out and "files=data_a.txt~" in txt.out
    bad = ws.cli("exp", "--sort", "charz")
    assert bad.code == 2 and "did you mean read.chars" in bad.err


def test_values_and_names() -> None:
    assert parse_value("1e-3") == 0.001 and parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    assert parse_value("refusal") == "refusal"  # a bare word is a string
    assert [s.value for s in split_sweep("model.training.betas=[0.9, 0.95],[0.8, 0.9]", ["model"])] == [[0.9, 0.95], [0.8, 0.9]]
    assert fmt_value(0.001) == "0.001" and fmt_value(True) == "true" and fmt_value("abc") == "abc"
    assert fmt_value("a/b c") != fmt_value("a_b_c") and "/" not in fmt_value("a/b c")


SHORT = ["--set", "model.training.steps=6", "--set", "model.training.warmup_steps=2",
         "--set", "model.training.eval_every=3", "--set", "model.training.checkpoint_every=3"]


@pytest.mark.slow
def test_real_tiny_model_sweep_then_diff(tmp_path: Path) -> None:
    """The real pipeline up to pretrain:tiny, two learning rates: the corpus/tokenizer/tokenize
    upstream is built once, and diff shows the changed field and the loss/throughput deltas."""
    root = Path(__file__).resolve().parents[2]
    ws = tmp_path / "ws"
    shutil.copytree(root / "specs", ws / "specs")
    (ws / "genesis.toml").write_text('[workspace]\ndefault = "model:tiny"\nplugins = ["stages"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env["PYTHONPATH"] = str(root)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=1500)

    r = cli("pretrain:tiny", "--sweep", "model.training.lr=3e-3,1e-2", *SHORT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    manifests = [json.loads(m.read_text()) for m in (ws / "cache" / "objects").glob("*/*/manifest.json")]
    per_stage: dict[str, int] = {}
    for m in manifests:
        per_stage[m["stage"]] = per_stage.get(m["stage"], 0) + 1
    assert per_stage["pretrain"] == 2
    assert per_stage["corpus"] == per_stage["tokenizer"] == per_stage["tokenize"] == 1  # shared upstream, once
    a, b = sorted(os.listdir(ws / "out"))
    assert "training.lr=0.003" in a and "training.lr=0.01" in b
    d = cli("diff", a, b, "--format", "json")
    assert d.returncode == 0, d.stderr
    data = json.loads(d.stdout)
    assert data["spec"] == [{"field": "model.training.lr", "a": 0.003, "b": 0.01}]
    assert data["nodes_differ"] == ["pretrain"]
    rows = {m["metric"]: m for m in data["metrics"]}
    for name in ("pretrain.final_loss", "pretrain.final_val_loss", "pretrain.tokens_per_s"):
        row = rows[name]
        assert row["a"] is not None and row["b"] is not None and row["delta"] == pytest.approx(row["b"] - row["a"])
    assert rows["pretrain.final_loss"]["a"] != rows["pretrain.final_loss"]["b"]
    # the same variant again is a no-op; exp lists both with their final loss
    again = cli("pretrain:tiny", "--set", "model.training.lr=1e-2", *SHORT)
    assert again.returncode == 0 and "(no-op)" in again.stdout, again.stdout[-2000:]
    exp = json.loads(cli("exp", "--format", "json", "--sort", "final_loss").stdout)
    assert {r["variant"] for r in exp} == {a, b}
    losses = [r["metrics"]["pretrain.final_loss"] for r in exp]
    assert losses == sorted(losses)
