"""End to end through the real CLI: which nodes run after which edit, and bad input at the CLI.

"Ran" = the nodes whose objects appeared in the cache during that build (each run publishes one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import data_testlib as d
import pytest

pytestmark = pytest.mark.slow

CORPUS = """\
description = "test corpus"
seed = 3

[filters]
min_chars = 20

[validation]
fraction = 0.1

[[sources]]
name = "prose"
type = "text"
glob = "data/prose/*.txt"
weight = 1.0

[[sources]]
name = "code"
type = "jsonl"
path = "data/code"
text_field = "body"
language = "code"
weight = 1.0
"""

TOKENIZER = """\
corpus = "corpus:t"
vocab_size = 300

[tokenize]
group_documents = 8
"""

ALL = {"corpus-source:t/prose", "corpus-source:t/code", "corpus:t", "tokenizer:t", "tokenize:t"}


def _workspace(root: Path) -> d.CliWorkspace:
    ws = d.CliWorkspace(root)
    d.write_docs(root / "data" / "prose", {f"p{i:02d}.txt": d.sentence_doc(i) for i in range(40)})
    (root / "data" / "code").mkdir(parents=True)
    for k in range(2):
        (root / "data" / "code" / f"part{k}.jsonl").write_text(
            "".join(json.dumps({"body": d.code_doc(100 * k + i), "n": i}) + "\n" for i in range(15)))
    ws.spec("corpus", "t", CORPUS)
    ws.spec("tokenizer", "t", TOKENIZER)
    return ws


def _ok(p) -> None:  # noqa: ANN001
    assert p.returncode == 0, p.stdout + p.stderr


def test_incremental_rebuilds_run_exactly_the_affected_nodes(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == ALL
    assert ran["corpus:t"]["stats"]["documents"]["train"] + ran["corpus:t"]["stats"]["documents"]["validation"] == 70
    assert ran["tokenize:t"]["stats"]["tokens"]["train"] > 1000

    # no-op
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert ran == {} and "no-op" in p.stdout

    # a comment and a field no stage reads: still nothing
    ws.spec("corpus", "t", "# edited\n" + CORPUS.replace('"test corpus"', '"renamed"'))
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert ran == {}

    # one source's filters: that source + the mixture + downstream
    ws.spec("corpus", "t", CORPUS.replace('weight = 1.0\n\n[[sources]]', 'weight = 1.0\nfilters = { min_chars = 400 }\n\n[[sources]]', 1))
    status = {n["id"]: n for n in json.loads(ws.cli("--dry-run", "--format", "json", "tokenize:t").stdout)}
    assert "corpus.sources.prose.filters.min_chars changed 20→400" in status["corpus-source:t/prose"]["reason"]
    assert status["corpus-source:t/code"]["state"] == "cached"
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == ALL - {"corpus-source:t/code"}
    assert ran["corpus-source:t/prose"]["stats"]["dropped"]["too_short"] > 0

    # one new file in one source: only that source node (+ mixture and downstream)
    (ws.root / "data" / "code" / "part2.jsonl").write_text(json.dumps({"body": d.code_doc(999)}) + "\n")
    status = {n["id"]: n for n in json.loads(ws.cli("--dry-run", "--format", "json", "tokenize:t").stdout)}
    assert "file data/code/part2.jsonl added" in status["corpus-source:t/code"]["reason"]
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == ALL - {"corpus-source:t/prose"}
    assert ran["corpus-source:t/code"]["stats"]["documents"] == 31

    # a mixture weight: no source node reruns
    ws.spec("corpus", "t", (ws.root / "specs" / "corpus" / "t.toml").read_text().replace("weight = 1.0", "weight = 2.0", 1))
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == {"corpus:t", "tokenizer:t", "tokenize:t"}
    before = ran["tokenize:t"]["stats"]

    # a new source: only its node among the sources
    d.write_docs(ws.root / "data" / "notes", {"n.txt": d.sentence_doc(4242, 8)})
    ws.spec("corpus", "t", (ws.root / "specs" / "corpus" / "t.toml").read_text()
            + '\n[[sources]]\nname = "notes"\ntype = "text"\npath = "data/notes"\n')
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == {"corpus-source:t/notes", "corpus:t", "tokenizer:t", "tokenize:t"}
    assert ran["corpus:t"]["stats"]["sources"]["notes"]["documents_in"] == 1

    # a tokenize setting: only tokenize
    ws.spec("tokenizer", "t", TOKENIZER.replace("group_documents = 8", "group_documents = 4"))
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == {"tokenize:t"}
    assert ran["tokenize:t"]["stats"]["groups"] > before["groups"]


def test_appending_to_the_tokenized_corpus_encodes_only_new_groups(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    (ws.root / "data" / "big").mkdir()
    for k in range(3):
        (ws.root / "data" / "big" / f"{k}.jsonl").write_text(
            "".join(json.dumps({"text": d.sentence_doc(1000 * k + i, 10)}) + "\n" for i in range(40)))
    ws.spec("corpus", "big", '[[sources]]\nname = "web"\ntype = "jsonl"\nglob = "data/big/*.jsonl"\n')
    ws.spec("tokenizer", "t", TOKENIZER.replace("[tokenize]", '[tokenize]\ncorpus = "corpus:big"'))
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == ALL | {"corpus-source:big/web", "corpus:big"}
    first = ran["tokenize:t"]["stats"]
    assert first["groups_encoded"] == first["groups"] > 10

    (ws.root / "data" / "big" / "3.jsonl").write_text(
        "".join(json.dumps({"text": d.sentence_doc(5000 + i, 10)}) + "\n" for i in range(6)))
    p, ran = ws.build("tokenize:t")
    _ok(p)
    assert set(ran) == {"corpus-source:big/web", "corpus:big", "tokenize:t"}  # the tokenizer is untouched
    st = ran["tokenize:t"]["stats"]
    assert st["groups_reused"] >= first["groups"] - 3 and 1 <= st["groups_encoded"] <= 3, st
    assert st["tokens_encoded"] < 0.25 * (st["tokens"]["train"] + st["tokens"]["validation"])


def test_bad_inputs_are_one_line_and_leave_nothing_behind(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    # a missing path: found before anything runs, located in the spec
    ws.spec("corpus", "t", CORPUS.replace('path = "data/code"', 'path = "data/kode"'))
    p, ran = ws.build("tokenize:t")
    assert p.returncode == 2 and ran == {}
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "specs/corpus/t.toml:19: corpus.sources[1].path: source 'code': data/kode does not exist" in err

    # a text field that does not exist: fails at run time, naming node, source and field
    ws.spec("corpus", "t", CORPUS.replace('text_field = "body"', 'text_field = "text"'))
    p, ran = ws.build("tokenize:t")
    assert p.returncode == 2
    assert "corpus-source:t/code" not in ran and "corpus:t" not in ran
    line = [ln for ln in p.stderr.splitlines() if "text_field" in ln]
    assert line and "source 'code' (sources[1])" in line[0] and "no field 'text' (text_field)" in line[0]
    assert "data/code/part0.jsonl:1" in line[0] and "Traceback" not in p.stderr
    assert not any((ws.root / "cache" / "tmp").iterdir())  # nothing half-written

    # vocab too small for the special tokens
    ws.spec("corpus", "t", CORPUS)
    ws.spec("tokenizer", "t", TOKENIZER.replace("vocab_size = 300", "vocab_size = 200"))
    p, ran = ws.build("tokenize:t")
    assert p.returncode == 2 and ran == {}
    assert "specs/tokenizer/t.toml:2: tokenizer.vocab_size: must be at least 264" in p.stderr

    # every document filtered out
    ws.spec("tokenizer", "t", TOKENIZER)
    ws.spec("corpus", "t", CORPUS.replace("min_chars = 20", "min_chars = 100000"))
    p, ran = ws.build("tokenize:t")
    assert p.returncode == 2 and "corpus:t" not in ran
    assert "no documents left after filters" in p.stderr


def test_shipped_tiny_specs_build_from_the_running_python(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    ws = d.CliWorkspace(tmp_path / "ws")
    for kind in ("corpus", "tokenizer"):
        shutil.copy(d.ROOT / "specs" / kind / "tiny.toml", ws.root / "specs" / kind / "tiny.toml")
    p, ran = ws.build("tokenize:tiny")
    _ok(p)
    assert set(ran) == {"corpus-source:tiny/python-code", "corpus-source:tiny/python-docs", "corpus:tiny",
                        "tokenizer:tiny", "tokenize:tiny"}
    corpus = ran["corpus:tiny"]["stats"]
    assert corpus["documents"]["train"] > 100 and corpus["languages"]["train"].keys() == {"code", "en"}
    assert 1_000_000 < corpus["bytes"]["train"] < 5_000_000  # "a few MB at most"
    tok = ran["tokenizer:tiny"]["stats"]
    assert tok["vocab_size"] == 4096 and tok["validation_chars_per_token"] > 2.5
    tk = ran["tokenize:tiny"]["stats"]
    assert tk["dtype"] == "uint16" and tk["tokens"]["train"] > 200_000 and tk["tokens"]["validation"] > 5_000
    out = ws.root / "out" / "tokenize:tiny"
    assert AutoTokenizer.from_pretrained(str(out / "tokenizer")).eos_token_id == 1
    files = ran["corpus-source:tiny/python-code"]["files"]
    assert files and all(k.startswith("@/") for k in files)  # machine-independent key paths for stdlib files


def test_genesis_scale_specs_plan_without_running(tmp_path: Path) -> None:
    ws = d.CliWorkspace(tmp_path / "ws")
    shutil.copy(d.ROOT / "specs" / "corpus" / "genesis-60b.toml", ws.root / "specs" / "corpus")
    shutil.copy(d.ROOT / "specs" / "tokenizer" / "genesis-49k.toml", ws.root / "specs" / "tokenizer")
    p = ws.cli("--dry-run", "--format", "json", "tokenize:genesis-49k")
    _ok(p)
    ids = {n["id"] for n in json.loads(p.stdout)}
    sources = {i for i in ids if i.startswith("corpus-source:genesis-60b/")}
    assert len(sources) == 12 and {"corpus-source:genesis-60b/fineweb2-fr", "corpus-source:genesis-60b/starcoder-python"} <= sources
    assert ids - sources == {"corpus:genesis-60b", "tokenizer:genesis-49k", "tokenize:genesis-49k"}
    assert not (ws.root / "cache" / "objects").exists() or not any((ws.root / "cache" / "objects").iterdir())
