"""Tokenize: the agreed meta.json/memmap format, EOS and index, content-defined groups, reuse."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import data_testlib as d
import numpy as np
import pyarrow as pa
import pytest

from genesis_build.errors import GenesisError
from stages.data_lib.bpe import train_tokenizer
from stages.data_lib.encode import content_groups, pick_dtype, tokenize_corpus


def _section(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{"dtype": "auto", "group_documents": 8, "batch_documents": 5, **kw})


def _mix(root: Path, n: int, name: str = "mix", extra: int = 0) -> Path:
    d.write_docs(root / "prose", {f"p{i:03d}.txt": d.sentence_doc(i) for i in range(n)})
    d.write_docs(root / "code", {f"c{i:03d}.py": d.code_doc(i) for i in range(n // 3 + extra)})
    spec = d.corpus_spec([{"name": "prose", "type": "text", "glob": "prose/*"},
                          {"name": "code", "type": "text", "glob": "code/*", "language": "code"}],
                         validation={"fraction": 0.1})
    d.build_corpus(spec, root, root / name)
    return root / name


@pytest.fixture(scope="module")
def tok_and_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tokenize")
    corpus = _mix(root, 90)
    tok = root / "tok"
    tok.mkdir()
    train_tokenizer(d.tokenizer_spec(vocab_size=400), corpus, tok, "tokenizer:test", d.noop)
    return tok, corpus


def _run(tok: Path, corpus: Path, out: Path, store: Path, **kw) -> dict:
    out.mkdir()
    return tokenize_corpus(_section(**kw), tok, corpus, out, store, "tokenize:test", d.noop)


def test_meta_json_shards_eos_and_index(tok_and_corpus: tuple[Path, Path], tmp_path: Path) -> None:
    import datasets
    from transformers import AutoTokenizer

    tok_dir, corpus = tok_and_corpus
    stats = _run(tok_dir, corpus, tmp_path / "out", tmp_path / "store")
    out = tmp_path / "out"
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta) == {"dtype", "vocab_size", "eos_id", "bos_id", "pad_id", "splits"}
    assert (meta["dtype"], meta["vocab_size"], meta["bos_id"], meta["eos_id"], meta["pad_id"]) == ("uint16", 400, 0, 1, 2)
    hf = AutoTokenizer.from_pretrained(str(out / "tokenizer"))  # the copy inside the output loads too
    for split in ("train", "validation"):
        texts = datasets.load_from_disk(str(corpus / split))["text"]
        sm = meta["splits"][split]
        assert sm["documents"] == len(texts) and stats["documents"][split] == len(texts)
        assert set(sm) == {"tokens", "documents", "shards"}
        decoded, total = [], 0
        for i, sh in enumerate(sm["shards"]):
            assert set(sh) == {"file", "tokens", "index"}
            assert sh["file"] == f"{split}/{i:05d}.bin" and sh["index"] == f"{split}/{i:05d}.idx.npy"
            ids = np.memmap(out / sh["file"], dtype="<u2", mode="r")
            starts = np.load(out / sh["index"])
            assert starts.dtype == np.int64 and len(ids) == sh["tokens"] and starts[0] == 0
            assert (np.diff(starts) > 0).all()
            ends = np.append(starts[1:], len(ids))
            assert (ids[ends - 1] == meta["eos_id"]).all()  # EOS closes every document …
            assert int((ids == meta["eos_id"]).sum()) == len(starts)  # … and appears nowhere else
            decoded += [hf.decode(ids[a : b - 1].tolist()) for a, b in zip(starts, ends)]
            total += len(ids)
        assert decoded == texts  # shards in order = the split's documents in order
        assert sm["tokens"] == total == stats["tokens"][split]
    assert stats["groups"] == stats["groups_encoded"] + stats["groups_reused"]
    assert len(meta["splits"]["train"]["shards"]) > 3  # group_documents=8 gives several shards


def test_same_inputs_same_bytes_and_uint32(tok_and_corpus: tuple[Path, Path], tmp_path: Path) -> None:
    tok_dir, corpus = tok_and_corpus
    _run(tok_dir, corpus, tmp_path / "a", tmp_path / "s1")
    _run(tok_dir, corpus, tmp_path / "b", tmp_path / "s2")
    assert d.tree_bytes(tmp_path / "a") == d.tree_bytes(tmp_path / "b")
    _run(tok_dir, corpus, tmp_path / "c", tmp_path / "s1", dtype="uint32")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    a16 = np.fromfile(tmp_path / "a" / "train" / "00000.bin", dtype="<u2")
    a32 = np.fromfile(tmp_path / "c" / "train" / "00000.bin", dtype="<u4")
    assert meta["dtype"] == "uint32" and (a16 == a32).all()


def test_rebuild_reuses_groups_and_appending_encodes_only_new_ones(tok_and_corpus: tuple[Path, Path], tmp_path: Path) -> None:
    tok_dir, _ = tok_and_corpus
    store = tmp_path / "store"
    small = _mix(tmp_path / "c1", 90)
    first = _run(tok_dir, small, tmp_path / "o1", store)
    again = _run(tok_dir, small, tmp_path / "o2", store)
    assert again["groups_encoded"] == 0 and again["groups_reused"] == first["groups"]
    assert d.tree_bytes(tmp_path / "o1") == d.tree_bytes(tmp_path / "o2")
    # The same corpus plus a few more code files (inserted after the prose, before nothing)
    grown = _mix(tmp_path / "c2", 90, extra=4)
    third = _run(tok_dir, grown, tmp_path / "o3", store)
    assert third["groups"] >= first["groups"]
    assert 1 <= third["groups_encoded"] <= 4, third
    assert third["tokens"]["train"] + third["tokens"]["validation"] > first["tokens"]["train"] + first["tokens"]["validation"]
    # and the result equals a from-scratch tokenization
    _run(tok_dir, grown, tmp_path / "o4", tmp_path / "fresh")
    assert d.tree_bytes(tmp_path / "o3") == d.tree_bytes(tmp_path / "o4")


def test_damaged_cached_group_is_re_encoded_not_used(tok_and_corpus: tuple[Path, Path], tmp_path: Path) -> None:
    tok_dir, corpus = tok_and_corpus
    store = tmp_path / "store"
    _run(tok_dir, corpus, tmp_path / "o1", store)
    expected = d.tree_bytes(tmp_path / "o1")  # before the damage: outputs share inodes with the store
    victim = sorted(store.rglob("*.bin"))[0]
    good = victim.read_bytes()
    victim.chmod(0o644)
    victim.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size, different content
    stats = _run(tok_dir, corpus, tmp_path / "o2", store)
    assert stats["groups_encoded"] >= 1
    assert d.tree_bytes(tmp_path / "o2") == expected


def test_content_defined_groups_move_only_around_an_insertion() -> None:
    docs = [f"document number {i}" for i in range(2000)]
    g1 = content_groups(pa.chunked_array([docs[:700], docs[700:]]), 16)
    inserted = docs[:1000] + ["a brand new document"] + docs[1000:]
    g2 = content_groups(pa.chunked_array([inserted]), 16)
    d1, d2 = {g.digest for g in g1}, {g.digest for g in g2}
    assert 80 < len(g1) < 180  # mean ≈ 16 documents per group
    assert len(d2 - d1) == 1 and len(d1 - d2) == 1
    assert max(g.documents for g in g1) <= 64  # the 4× cap
    assert [(g.start, g.end) for g in g1] == [(g.start, g.end) for g in content_groups(pa.chunked_array([docs]), 16)]


def test_pick_dtype() -> None:
    assert pick_dtype("auto", 65_536) == "uint16"
    assert pick_dtype("auto", 65_537) == "uint32"
    assert pick_dtype("uint32", 300) == "uint32"
    with pytest.raises(GenesisError, match="uint16 cannot hold"):
        pick_dtype("uint16", 100_000)


def test_not_a_tokenizer_dir_is_one_clear_error(tok_and_corpus: tuple[Path, Path], tmp_path: Path) -> None:
    _, corpus = tok_and_corpus
    with pytest.raises(GenesisError, match="has no tokenizer.json"):
        _run(tmp_path, corpus, tmp_path / "out", tmp_path / "store")
