"""Cleaning (Unicode, whitespace), filters and exact-dedup identity."""

from __future__ import annotations

import pytest
from stages.data_lib.text import Filter, clean_text, doc_hash


def test_nfc_composes_and_nfkc_folds() -> None:
    decomposed = "Cafe\u0301 cre\u0300me"
    assert clean_text(decomposed) == "Caf\u00e9 cr\u00e8me"
    assert clean_text("\ufb01ne", normalize="NFKC") == "fine"  # the fi ligature
    assert clean_text("\ufb01ne") == "\ufb01ne"  # NFC leaves compatibility characters alone
    assert clean_text(decomposed, normalize="none", whitespace="none") == decomposed


def test_lines_mode_keeps_indentation_but_fixes_line_noise() -> None:
    raw = "\n\n  \r\ndef f(x):\r\n    if x:   \r\n\t\treturn 1\x00\n\n\n\n    return 2  \n\n"
    assert clean_text(raw) == "def f(x):\n    if x:\n\t\treturn 1\n\n    return 2"


def test_collapse_mode_squeezes_horizontal_space_for_prose() -> None:
    raw = "  Hello,\u00a0\u00a0  world!\n   Next\tline.  "
    assert clean_text(raw, whitespace="collapse") == "Hello, world!\nNext line."
    assert clean_text(raw, whitespace="lines") == "  Hello,\u00a0\u00a0  world!\n   Next\tline."


def test_whitespace_none_returns_text_unchanged() -> None:
    raw = "a  \r\n\n\n\nb\x01"
    assert clean_text(raw, whitespace="none") == raw


def test_dedup_identity_is_the_cleaned_text() -> None:
    # CRLF vs LF, trailing spaces, decomposed accents: one document after cleaning
    variants = ["caf\u00e9 au lait\nline two\n", "cafe\u0301 au lait  \r\nline two", "\n\ncaf\u00e9 au lait\nline two"]
    flt = Filter()
    kept = [flt.apply(v, "en") for v in variants]
    assert kept[0] is not None and kept[1] is None and kept[2] is None
    assert flt.counts["duplicate"] == 2
    assert kept[0][1:] == doc_hash("caf\u00e9 au lait\nline two")


def test_length_language_and_empty_filters_count_their_reasons() -> None:
    flt = Filter(min_chars=5, max_chars=10, languages=["en", "fr"])
    assert flt.apply("tiny", "en") is None
    assert flt.apply("x" * 11, "en") is None
    assert flt.apply("hello there", "en") is None  # 11 chars
    assert flt.apply("bonjour", "de") is None
    assert flt.apply("   \n\n ", "en") is None
    ok = flt.apply("  bonjour  ", "fr")
    assert ok is not None and ok[0] == "  bonjour"
    assert flt.counts == {"empty": 1, "too_short": 1, "too_long": 2, "language": 1, "duplicate": 0}


def test_dedup_can_be_disabled() -> None:
    flt = Filter(dedup=False)
    assert flt.apply("same text", "en") is not None
    assert flt.apply("same text", "en") is not None
    assert flt.counts["duplicate"] == 0


@pytest.mark.parametrize("a,b", [("abc", "abd"), ("", " "), ("x" * 1000, "x" * 1001)])
def test_hash_separates_different_texts(a: str, b: str) -> None:
    assert doc_hash(a) != doc_hash(b)
    hi, lo = doc_hash(a)
    assert 0 <= hi < 2**64 and 0 <= lo < 2**64


def _reference_clean(text: str, whitespace: str) -> str:
    """clean_text as first written (every whitespace run substituted, no fast paths): the faster
    version must give the same text, or every corpus key and output would silently change."""
    import re

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    if whitespace == "collapse":
        text = re.sub(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+", " ", text)
        text = re.sub(r"^ ", "", text, flags=re.M)
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = re.sub(r"\A(?:[ \t]*\n)+", "", text)
    return text.rstrip()


def test_fast_paths_clean_exactly_like_the_reference() -> None:
    import random

    rng = random.Random(7)
    alphabet = ["a", "b", " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u2003", "\u3000", "\x07", " \n", "\t\n", "\n\n\n"]
    for _ in range(20000):
        t = "".join(rng.choices(alphabet, k=rng.randint(0, 25)))
        for ws in ("lines", "collapse"):
            assert clean_text(t, "none", ws) == _reference_clean(t, ws), (repr(t), ws)
