"""The mixture: cross-source dedup, seeded weighted sampling, split, determinism, datasets format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import data_testlib as d
import pytest

from genesis_build.errors import GenesisError


def _corpus(tmp_path: Path, n_prose: int = 60, n_code: int = 30) -> Path:
    d.write_docs(tmp_path / "prose", {f"p{i:03d}.txt": d.sentence_doc(i) for i in range(n_prose)})
    d.write_docs(tmp_path / "code", {f"c{i:03d}.py": d.code_doc(i) for i in range(n_code)})
    return tmp_path


def _sources(prose_w: float = 1.0, code_w: float = 1.0) -> list[dict]:
    return [{"name": "prose", "type": "text", "glob": "prose/*.txt", "weight": prose_w},
            {"name": "code", "type": "text", "glob": "code/*.py", "language": "code", "weight": code_w}]


def _load(out: Path, split: str) -> list[dict]:
    import datasets

    ds = datasets.load_from_disk(str(out / split))
    assert ds.column_names == ["text", "source", "language"]
    return ds.to_list()


def test_output_is_load_from_disk_with_columns_and_stats(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    stats = d.build_corpus(d.corpus_spec(_sources(), validation={"fraction": 0.1}), ws, tmp_path / "mix")
    train, val = _load(tmp_path / "mix", "train"), _load(tmp_path / "mix", "validation")
    assert len(train) + len(val) == 90 and len(val) >= 1
    assert stats["documents"] == {"train": len(train), "validation": len(val)}
    assert {r["text"] for r in train}.isdisjoint({r["text"] for r in val})
    langs = Counter(r["language"] for r in train + val)
    assert langs == {"en": 60, "code": 30}
    assert stats["languages"]["train"] == dict(Counter(r["language"] for r in train))
    assert stats["bytes"]["train"] == sum(len(r["text"].encode()) for r in train)
    assert stats["sources"]["code"]["train_documents"] == sum(r["source"] == "code" for r in train)
    assert abs(sum(s["train_share"] for s in stats["sources"].values()) - 1) < 1e-5
    # stable order: sources in spec order, then documents in file order
    assert [r["source"] for r in train] == sorted((r["source"] for r in train), key=["prose", "code"].index)
    prose = [r["text"] for r in train if r["source"] == "prose"]
    assert prose == sorted(prose, key=lambda t: int(t.split()[1].rstrip(".")))
    # code indentation survived cleaning
    assert any("\n    x0 = " in r["text"] for r in train + val if r["source"] == "code")


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    spec = d.corpus_spec(_sources(0.5, 1.5), seed=7)
    d.build_corpus(spec, ws, tmp_path / "a")
    d.build_corpus(spec, ws, tmp_path / "b")
    a, b = d.tree_bytes(tmp_path / "a"), d.tree_bytes(tmp_path / "b")
    assert a == b and any(k.endswith(".arrow") for k in a)
    d.build_corpus(d.corpus_spec(_sources(0.5, 1.5), seed=8), ws, tmp_path / "c")
    assert d.tree_bytes(tmp_path / "c") != a  # the seed matters


def test_cross_source_duplicates_keep_the_first_source(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, n_prose=20, n_code=5)
    d.write_docs(tmp_path / "mirror", {f"m{i}.txt": d.sentence_doc(i) for i in range(0, 20, 2)} | {"own.txt": "mirror only"})
    spec = d.corpus_spec(_sources() + [{"name": "mirror", "type": "text", "glob": "mirror/*.txt"}],
                         validation={"fraction": 0.0, "min_documents": 0})
    stats = d.build_corpus(spec, ws, tmp_path / "mix")
    rows = _load(tmp_path / "mix", "train")
    assert [r["text"] for r in rows if r["source"] == "mirror"] == ["mirror only"]
    assert len({r["text"] for r in rows}) == len(rows) == 26
    assert stats["cross_source_duplicates"] == 10 and stats["sources"]["mirror"]["cross_source_duplicates"] == 10
    assert stats["dup_rate"] == pytest.approx(10 / 36)


def test_weights_repeat_and_subsample_deterministically(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, n_prose=200, n_code=40)
    spec = d.corpus_spec(_sources(prose_w=0.5, code_w=2.0), validation={"fraction": 0.0, "min_documents": 0})
    stats = d.build_corpus(spec, ws, tmp_path / "mix")
    rows = _load(tmp_path / "mix", "train")
    code = Counter(r["text"] for r in rows if r["source"] == "code")
    assert len(code) == 40 and set(code.values()) == {2}
    # the second copies come as a second pass, not adjacent to the first
    code_rows = [r["text"] for r in rows if r["source"] == "code"]
    assert code_rows[:40] == code_rows[40:]
    prose = [r["text"] for r in rows if r["source"] == "prose"]
    assert 70 <= len(prose) <= 130 and len(set(prose)) == len(prose)
    assert stats["sources"]["prose"]["train_documents"] == len(prose)
    # Adding a source does not change which prose documents were kept
    d.write_docs(tmp_path / "extra", {"e.txt": "an extra source"})
    spec2 = d.corpus_spec(_sources(prose_w=0.5, code_w=2.0) + [{"name": "extra", "type": "text", "glob": "extra/*"}],
                          validation={"fraction": 0.0, "min_documents": 0})
    d.build_corpus(spec2, ws, tmp_path / "mix2")
    prose2 = [r["text"] for r in _load(tmp_path / "mix2", "train") if r["source"] == "prose"]
    assert prose2 == prose


def test_fractional_weight_above_one(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, n_prose=200, n_code=1)
    spec = d.corpus_spec(_sources(prose_w=1.5), validation={"fraction": 0.0, "min_documents": 0})
    d.build_corpus(spec, ws, tmp_path / "mix")
    counts = Counter(r["text"] for r in _load(tmp_path / "mix", "train") if r["source"] == "prose")
    assert set(counts.values()) == {1, 2} and 60 <= sum(v == 2 for v in counts.values()) <= 140


def test_validation_fraction_and_minimum(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, n_prose=400, n_code=1)
    d.build_corpus(d.corpus_spec(_sources(), validation={"fraction": 0.25}), ws, tmp_path / "a")
    n_val = len(_load(tmp_path / "a", "validation"))
    assert 60 <= n_val <= 140
    d.build_corpus(d.corpus_spec(_sources(), validation={"fraction": 0.0, "min_documents": 5}), ws, tmp_path / "b")
    val = _load(tmp_path / "b", "validation")
    train = _load(tmp_path / "b", "train")
    assert len(val) == 5 and len(train) == 396
    d.build_corpus(d.corpus_spec(_sources(), validation={"fraction": 0.0, "min_documents": 0}), ws, tmp_path / "c")
    assert _load(tmp_path / "c", "validation") == []


def test_validation_never_takes_the_last_training_document(tmp_path: Path) -> None:
    d.write_docs(tmp_path / "prose", {"a.txt": "only one", "b.txt": "only two"})
    spec = d.corpus_spec([{"name": "p", "type": "text", "glob": "prose/*"}], validation={"min_documents": 10})
    stats = d.build_corpus(spec, tmp_path, tmp_path / "mix")
    assert stats["documents"] == {"train": 1, "validation": 1}


def test_many_output_shards(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, n_prose=50, n_code=1)
    d.build_corpus(d.corpus_spec(_sources(), shard_documents=16, validation={"fraction": 0.0, "min_documents": 0}),
                   ws, tmp_path / "mix")
    arrows = sorted(p.name for p in (tmp_path / "mix" / "train").glob("*.arrow"))
    assert len(arrows) == 4 and len(_load(tmp_path / "mix", "train")) == 51
    assert not list((tmp_path / "mix").glob(".parts*"))  # scratch removed


def test_empty_mixture_is_one_clear_error(tmp_path: Path) -> None:
    d.write_docs(tmp_path / "prose", {"a.txt": "one doc"})
    spec = d.corpus_spec([{"name": "p", "type": "text", "glob": "prose/*", "weight": 0.01}],
                         validation={"fraction": 0.0, "min_documents": 0})
    with pytest.raises(GenesisError, match="corpus:test: the mixture is empty"):
        d.build_corpus(spec, tmp_path, tmp_path / "mix")
