"""Corpus sources at scale: sharded, parallel, resumable ingestion and parallel tokenization.

The output of a source must not depend on how many worker processes read it nor on how often the
build was interrupted; finished shards are reused and bad input names its file and line.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import data_testlib as d
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genesis_build.errors import GenesisError
from stages.data_lib.ingest import DOCS_FILE, build_source, plan_shards
from stages.data_lib.shards import resolve_workers

SHARD_MB = 0.01  # ~10 KB: the small test files below split into many shards


def _write_inputs(root: Path) -> None:
    """JSONL (two languages, large enough to be cut into byte ranges), gzipped JSONL, Parquet with many
    row groups, all with duplicates inside and across files."""
    (root / "j").mkdir(parents=True)
    for k in range(4):
        rows = [{"text": d.sentence_doc(i % 150), "lang": "en" if i % 3 else "de"} for i in range(k * 60, k * 60 + 60)]
        (root / "j" / f"{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(root / "j" / "9.jsonl.gz", "wt") as f:
        for i in range(40):
            f.write(json.dumps({"text": d.code_doc(i % 25), "lang": "code"}) + "\n")
    (root / "p").mkdir()
    pq.write_table(pa.table({"text": [d.sentence_doc(i % 200) for i in range(600)]}), root / "p" / "a.parquet",
                   row_group_size=50)


SOURCES = [{"name": "j", "type": "jsonl", "glob": "j/*", "language_field": "lang", "filters": {"min_chars": 30}},
           {"name": "p", "type": "parquet", "glob": "p/*.parquet"}]


def _build(ws: Path, out: Path, name: str, **kw: Any) -> tuple[dict, dict, bytes]:
    spec = d.corpus_spec(SOURCES)
    i = [s.name for s in spec.sources].index(name)
    out.mkdir(parents=True)
    run: dict = {}
    stats = build_source(spec.sources[i], i, d.source_files(spec, name, ws), ws, out, f"corpus-source:t/{name}", d.noop,
                         run_info=run, **{"shard_mb": SHARD_MB, **kw})
    return stats, run, (out / DOCS_FILE).read_bytes() + (out / "stats.json").read_bytes()


@pytest.mark.parametrize("name", ["j", "p"])
def test_one_and_three_workers_write_the_same_bytes(tmp_path: Path, name: str) -> None:
    _write_inputs(tmp_path)
    s1, r1, b1 = _build(tmp_path, tmp_path / "w1", name, workers=1)
    s3, r3, b3 = _build(tmp_path, tmp_path / "w3", name, workers=3)
    assert r1["shards"] == r3["shards"] >= 6, (r1, r3)  # many shards, so three workers really shared them
    assert r3["workers"] == 3 and r3["shards_redone"] == r3["shards"]
    assert b1 == b3
    assert s1["dropped"]["duplicate"] > 0  # duplicates across shards were found by the merge
    # one shard (the default size) gives the same bytes too: shards change nothing but the parallelism
    _, r_one, b_one = _build(tmp_path, tmp_path / "whole", name, workers=1, shard_mb=64)
    assert r_one["shards"] == 1 and b_one == b1


def _build_one(ws: Path, out: Path, **kw: Any) -> tuple[dict, dict, bytes]:
    spec = d.corpus_spec(SOURCES)
    out.mkdir(parents=True)
    run: dict = {}
    build_source(spec.sources[0], 0, d.source_files(spec, "j", ws), ws, out, "corpus-source:t/j", d.noop,
                 run_info=run, **{"shard_mb": SHARD_MB, **kw})
    return run, json.loads((out / "stats.json").read_text()), (out / DOCS_FILE).read_bytes()


def test_jsonl_byte_ranges_read_every_line_once(tmp_path: Path) -> None:
    # lines of very different lengths, so range boundaries fall at every position inside lines
    (tmp_path / "j").mkdir()
    rows = [{"text": f"document number {i:04d} " + "x" * (10 + (i * 37) % 900) + ".", "lang": "en"} for i in range(400)]
    (tmp_path / "j" / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for mb in (0.0005, 0.0021, 0.01):
        out = tmp_path / f"o{mb}"
        run, stats, _ = _build_one(tmp_path, out, shard_mb=mb, workers=2)
        assert run["shards"] > 3
        got = pa.ipc.open_file(pa.memory_map(str(out / DOCS_FILE))).read_all()["text"].to_pylist()
        assert got == [r["text"] for r in rows] and stats["documents_read"] == 400


def test_rerun_reuses_finished_shards_and_redoes_only_missing_ones(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    run_dir = tmp_path / "run"
    first, _, want = _build_one(tmp_path, tmp_path / "a", run_dir=run_dir, workers=2)
    records = sorted((run_dir / "shards").glob("*.json"))
    assert first["shards_redone"] == first["shards"] == len(records) > 4
    again, _, got = _build_one(tmp_path, tmp_path / "b", run_dir=run_dir, workers=2)
    assert again["shards_redone"] == 0 and got == want
    # as after a kill: two shards never finished (no record), one died mid-write (a temp docs file)
    for r in records[:2]:
        r.unlink()
    docs = records[2].with_suffix(".arrow")
    docs.rename(docs.with_name(docs.name + ".tmp999"))
    third, _, got = _build_one(tmp_path, tmp_path / "c", run_dir=run_dir, workers=2)
    assert third["shards_redone"] == 3 and got == want


def test_bad_input_names_file_and_line_keeps_finished_shards_and_resumes_after_the_fix(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    run_dir = tmp_path / "run"
    good = (tmp_path / "j" / "9.jsonl.gz").read_bytes()
    _, _, want = _build_one(tmp_path, tmp_path / "ref", shard_mb=64)
    (tmp_path / "j" / "9.jsonl.gz").write_bytes(good[: len(good) // 2])  # truncated gzip
    with pytest.raises(GenesisError) as e:
        _build_one(tmp_path, tmp_path / "a", run_dir=run_dir, workers=1)
    msg = str(e.value)
    assert "\n" not in msg and "j/9.jsonl.gz:" in msg and "truncated or damaged gzip" in msg, msg
    kept = len(list((run_dir / "shards").glob("*.json")))
    assert kept > 4  # the plain jsonl shards before it finished and stay
    (tmp_path / "j" / "9.jsonl.gz").write_bytes(good)  # the fix
    run, _, got = _build_one(tmp_path, tmp_path / "b", run_dir=run_dir, workers=1)
    assert run["shards_redone"] == run["shards"] - kept == 1 and got == want


@pytest.mark.parametrize("line, fragment", [
    (b'{"text": "caf\xe9 au lait", "lang": "en"}\n', "is not UTF-8 text (bad byte 0xe9"),
    (b'{"body": "no text field", "lang": "en"}\n', "no field 'text' (text_field)"),
    (b'{"text": "cut off\n', "not valid JSON"),
])
def test_bad_line_in_a_byte_range_names_its_real_line_number(tmp_path: Path, line: bytes, fragment: str) -> None:
    (tmp_path / "j").mkdir()
    rows = b"".join(json.dumps({"text": f"document number {i} " * 5, "lang": "en"}).encode() + b"\n" for i in range(300))
    (tmp_path / "j" / "a.jsonl").write_bytes(rows + line + rows)  # the bad line is line 301, deep in a later range
    with pytest.raises(GenesisError) as e:
        _build_one(tmp_path, tmp_path / "o", workers=2)
    msg = str(e.value)
    assert "\n" not in msg and "j/a.jsonl:301" in msg and fragment in msg, msg


def test_shards_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    spec = d.corpus_spec(SOURCES)
    files = d.source_files(spec, "p", tmp_path)
    a = plan_shards(spec.sources[1], files, tmp_path, "w", int(SHARD_MB * (1 << 20)))
    assert len(a) > 3 and all(s.pieces[0].stop is not None for s in a)  # row-group ranges of one file
    assert [s.ident for s in a] == [s.ident for s in plan_shards(spec.sources[1], files, tmp_path, "w", int(SHARD_MB * (1 << 20)))]


def test_workers_setting_cli_over_env_over_spec_over_all_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENESIS_DATA_WORKERS", raising=False)
    assert resolve_workers(3) == 3
    assert resolve_workers(None) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("GENESIS_DATA_WORKERS", "2")
    assert resolve_workers(3) == 2
    assert resolve_workers(3, cli_value=5) == 5  # genesis-build --workers 5
    monkeypatch.setenv("GENESIS_DATA_WORKERS", "two")
    with pytest.raises(GenesisError, match="GENESIS_DATA_WORKERS"):
        resolve_workers(None)


def test_workers_and_shard_size_are_in_no_key() -> None:
    from stages.corpus import _mixture_select
    from stages.corpus_source import _source_select

    a = d.corpus_spec(SOURCES).model_dump(mode="json")
    b = d.corpus_spec(SOURCES, workers=7, shard_mb=1).model_dump(mode="json")
    assert a != b
    assert _source_select(a, "j") == _source_select(b, "j") and _mixture_select(a, None) == _mixture_select(b, None)


def test_hub_stream_is_read_as_its_iterable_dataset_shards(tmp_path: Path) -> None:
    """A hub source is tested through a local dataset directory (no network here): datasets' json
    builder streams it as an ``IterableDataset`` with one shard per file, like a hub repository."""
    (tmp_path / "hubdata").mkdir()
    for k in range(4):
        (tmp_path / "hubdata" / f"train-{k}.jsonl").write_text(
            "".join(json.dumps({"text": d.sentence_doc(i % 70)}) + "\n" for i in range(k * 30, k * 30 + 30)))
    spec = d.corpus_spec([{"name": "h", "type": "hub", "dataset": str(tmp_path / "hubdata")},
                          {"name": "l", "type": "jsonl", "glob": "hubdata/*.jsonl"}])
    outs = {}
    for i, name in enumerate(("h", "l")):
        out = tmp_path / f"o-{name}"
        out.mkdir()
        run: dict = {}
        build_source(spec.sources[i], i, d.source_files(spec, name, tmp_path) if name == "l" else [], tmp_path, out,
                     f"corpus-source:t/{name}", d.noop, workers=2, run_info=run)
        outs[name] = ((out / DOCS_FILE).read_bytes(), run)
    assert outs["h"][1]["shards"] == 4  # n_shards of the stream
    assert outs["h"][0] == outs["l"][0]  # contiguous shards in order = the stream's own order


TOKENIZE_SCRIPT = """
import sys
from types import SimpleNamespace
from pathlib import Path
from stages.data_lib.encode import tokenize_corpus
tok, corpus, out, store = map(Path, sys.argv[1:5])
out.mkdir()
st = tokenize_corpus(SimpleNamespace(dtype="auto", group_documents=8, batch_documents=5), tok, corpus, out, store,
                     "tokenize:test", lambda *a, **k: None, workers=int(sys.argv[5]))
assert st["groups_encoded"] == st["groups"] > 3, st
"""


def test_tokenization_is_byte_identical_for_any_worker_or_thread_count(tmp_path: Path) -> None:
    """One process on 1 or 3 rayon threads (RAYON_NUM_THREADS; fresh processes: the pool size is
    fixed at first use) and 3 forked worker processes (one core each) give the same shard bytes."""
    from stages.data_lib.bpe import train_tokenizer

    d.write_docs(tmp_path / "prose", {f"p{i:03d}.txt": d.sentence_doc(i) for i in range(60)})
    spec = d.corpus_spec([{"name": "prose", "type": "text", "glob": "prose/*"}], validation={"fraction": 0.1})
    d.build_corpus(spec, tmp_path, tmp_path / "mix")
    tok = tmp_path / "tok"
    tok.mkdir()
    train_tokenizer(d.tokenizer_spec(vocab_size=400), tmp_path / "mix", tok, "tokenizer:test", d.noop)
    trees = []
    for threads, workers in ((1, 1), (3, 1), (1, 3)):
        name = f"t{threads}w{workers}"
        env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "PYTHONPATH": str(Path.cwd())}
        p = subprocess.run([sys.executable, "-c", TOKENIZE_SCRIPT, str(tok), str(tmp_path / "mix"), str(tmp_path / name),
                            str(tmp_path / f"store-{name}"), str(workers)], env=env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        trees.append(d.tree_bytes(tmp_path / name))
    assert trees[0] == trees[1] == trees[2] and any(k.endswith(".bin") for k in trees[0])


def test_truncated_parquet_names_the_file(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    f = tmp_path / "p" / "a.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # the footer (schema, row groups) is gone
    with pytest.raises(GenesisError) as e:
        _build(tmp_path, tmp_path / "o", "p", workers=2)
    msg = str(e.value)
    assert "\n" not in msg and "p/a.parquet is not a readable Parquet file" in msg, msg
