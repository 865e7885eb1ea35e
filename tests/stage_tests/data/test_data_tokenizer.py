"""Tokenizer training: determinism across processes, AutoTokenizer round trip, chat template, checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import data_testlib as d
import pytest
from pydantic import ValidationError

from genesis_build.errors import FieldError
from stages.data_lib.bpe import sample_mask, train_tokenizer
from stages.tokenizer import CHAT_TOKENS, check_tokenizer, min_vocab_size

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", *CHAT_TOKENS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tokcorpus")
    d.write_docs(root / "prose", {f"p{i:03d}.txt": d.sentence_doc(i, 12) for i in range(80)})
    d.write_docs(root / "code", {f"c{i:03d}.py": d.code_doc(i) for i in range(40)})
    d.write_docs(root / "intl", {"u.txt": "Ünïcödé façade — naïve café, 東京 and Ελληνικά ✓ " * 5})
    spec = d.corpus_spec([{"name": "prose", "type": "text", "glob": "prose/*"},
                          {"name": "code", "type": "text", "glob": "code/*", "language": "code"},
                          {"name": "intl", "type": "text", "glob": "intl/*"}])
    d.build_corpus(spec, root, root / "mix")
    return root / "mix"


def test_autotokenizer_round_trip_and_special_tokens(corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    spec = d.tokenizer_spec(vocab_size=420, extra_special_tokens=["<|tool|>"])
    stats = train_tokenizer(spec, corpus, tmp_path, "tokenizer:test", d.noop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == stats["vocab_size"] == 420
    assert [tok.convert_tokens_to_ids(t) for t in SPECIALS + ["<|tool|>"]] == list(range(8))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    for text in ["def f(x):\n    return x  # ok", "Ünïcödé — 東京 ✓ \U0001f600 never seen", "  spaces\t\ttabs\n\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    ids = tok("hi <|user|> there")["input_ids"]
    assert 4 in ids  # special tokens are atomic; no BOS/EOS added by encoding
    assert ids[0] != 0 and ids[-1] != 1
    rendered = tok.apply_chat_template([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
                                       tokenize=False, add_generation_prompt=True)
    assert rendered == "<|system|>\nBe kind.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == spec.chat_template and cfg["model_max_length"] == 2048
    assert json.loads((tmp_path / "special_tokens_map.json").read_text())["eos_token"] == "<|eos|>"
    assert stats["training_documents"] > 100 and stats["validation_chars_per_token"] > 1.0


def test_chat_template_is_prefix_stable_and_rejects_unknown_roles(corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    train_tokenizer(d.tokenizer_spec(vocab_size=300), corpus, tmp_path, "tokenizer:test", d.noop)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    full = tok.apply_chat_template(msgs, tokenize=False)
    for i in range(1, len(msgs)):
        assert full.startswith(tok.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=msgs[i]["role"] == "assistant"))
    with pytest.raises(Exception, match="unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


_TRAIN = """
from pathlib import Path
import data_testlib as d
from stages.data_lib.bpe import train_tokenizer
train_tokenizer(d.tokenizer_spec(vocab_size=500, split_digits=True), Path({corpus!r}), Path({out!r}), "t", d.noop)
"""


def test_same_corpus_and_spec_give_the_same_bytes_across_processes(corpus: Path, tmp_path: Path) -> None:
    outs = []
    for i, seed in enumerate(("0", "12345")):  # different hash seeds: no dict-order luck
        out = tmp_path / f"t{i}"
        out.mkdir()
        code = _TRAIN.format(corpus=str(corpus), out=str(out))
        path = os.pathsep.join([str(d.ROOT), str(d.ROOT / "tests"), str(Path(__file__).parent)])
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": seed,
                           "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": path})
        assert p.returncode == 0, p.stderr
        outs.append(d.tree_bytes(out))
    assert outs[0] == outs[1]
    other = tmp_path / "other"
    other.mkdir()
    train_tokenizer(d.tokenizer_spec(vocab_size=499, split_digits=True), corpus, other, "t", d.noop)
    assert d.tree_bytes(other)["tokenizer.json"] != outs[0]["tokenizer.json"]


def test_trainer_batch_size_does_not_change_the_result(corpus: Path, tmp_path: Path) -> None:
    # training.batch_documents is left out of the key: it must not matter
    for b in (7, 1000):
        (tmp_path / str(b)).mkdir()
        train_tokenizer(d.tokenizer_spec(vocab_size=450, training={"batch_documents": b}), corpus, tmp_path / str(b), "t", d.noop)
    assert d.tree_bytes(tmp_path / "7") == d.tree_bytes(tmp_path / "1000")


def test_sample_fraction_trains_on_a_hash_chosen_subset(corpus: Path, tmp_path: Path) -> None:
    import datasets

    col = datasets.load_from_disk(str(corpus / "train")).data.column("text")
    mask = sample_mask(col, 0.5)
    assert 0.25 < mask.mean() < 0.75
    assert (sample_mask(col, 0.5) == mask).all()  # a property of the texts, not of chance
    stats = train_tokenizer(d.tokenizer_spec(vocab_size=300, training={"sample_fraction": 0.5}), corpus, tmp_path, "t", d.noop)
    assert stats["training_documents"] == int(mask.sum())


def test_vocab_too_small_for_the_special_tokens_is_a_field_error() -> None:
    spec = d.tokenizer_spec(vocab_size=263, extra_special_tokens=["<|a|>"])
    assert min_vocab_size(spec) == 256 + 8 + 1
    with pytest.raises(FieldError) as e:
        check_tokenizer(spec, lambda a: None)
    assert e.value.field == "vocab_size" and "must be at least 265" in e.value.message and "8 special tokens" in e.value.message
    check_tokenizer(d.tokenizer_spec(vocab_size=265, extra_special_tokens=["<|a|>"]), lambda a: None)


def test_uint16_with_a_large_vocab_is_a_field_error() -> None:
    with pytest.raises(FieldError) as e:
        check_tokenizer(d.tokenizer_spec(vocab_size=70_000, tokenize={"dtype": "uint16"}), lambda a: None)
    assert e.value.field == "tokenize.dtype" and "uint32" in e.value.message
    check_tokenizer(d.tokenizer_spec(vocab_size=70_000, tokenize={"dtype": "auto"}), lambda a: None)


@pytest.mark.parametrize("fields,fragment", [
    ({"corpus": "tiny"}, "must reference a corpus spec"),
    ({"tokenize": {"corpus": "tokenizer:x"}}, "must reference a corpus spec"),
    ({"extra_special_tokens": ["<|eos|>"]}, "already a built-in special token"),
    ({"vocab_size": "big"}, "valid integer"),
    ({"tokenize": {"dtype": "int8"}}, "Input should be"),
    ({"training": {"sample_fraction": 0}}, "greater than 0"),
    ({"vocab_sise": 10}, "Extra inputs"),
])
def test_spec_model_rejects_bad_fields(fields: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        d.tokenizer_spec(**fields)
