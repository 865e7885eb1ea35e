"""Document cleaning and identity: Unicode normalization, whitespace, length/language filters, xxh3.

A document's identity for exact dedup is the xxh3-128 of its *cleaned* text (UTF-8), so two files
that differ only in line endings, trailing spaces or Unicode composition are one document.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import xxhash

# C0 controls except tab and newline, plus DEL: never meaningful in training text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANK_RUNS = re.compile(r"\n{3,}")
_LEADING_SPACE = re.compile(r"^ ", re.M)
_LEADING_BLANK = re.compile(r"\A(?:[ \t]*\n)+")
_HSPACE_CHARS = r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]"
# Runs of horizontal space other than one plain space (replacing a lone " " by " " is a no-op, and
# matching every word gap made this substitution most of the ingestion time in `collapse` mode).
_OTHER_SPACE = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]")  # _HSPACE_CHARS minus " " and tab
_HSPACE = re.compile(_HSPACE_CHARS + r"{2,}|[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]")

DROP_REASONS = ("empty", "too_short", "too_long", "language", "duplicate")


def clean_text(text: str, normalize: str = "NFC", whitespace: str = "lines") -> str:
    """Normalize Unicode and whitespace.

    ``whitespace``: ``none`` leaves the text alone; ``lines`` (safe for code) unifies line endings,
    drops control characters and trailing spaces, collapses 3+ newlines to a blank line and trims
    blank lines at both ends; ``collapse`` (prose) also squeezes runs of horizontal space to one.
    """
    if normalize != "none" and not unicodedata.is_normalized(normalize, text):
        text = unicodedata.normalize(normalize, text)
    if whitespace == "none":
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    # Each regex below runs only when a substring test (a C scan, several times faster than the
    # regex's own) says it can match: most documents need none of them. Same output either way.
    if whitespace == "collapse":
        if "  " in text or "\t" in text or not text.isascii() and _OTHER_SPACE.search(text):
            text = _HSPACE.sub(" ", text)
        if text.startswith(" ") or "\n " in text:
            text = _LEADING_SPACE.sub("", text)
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
        text = _TRAILING.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    if text.startswith((" ", "\t", "\n")):
        text = _LEADING_BLANK.sub("", text)
    return text.rstrip()


def doc_hash(text: str) -> tuple[int, int]:
    """xxh3-128 of the UTF-8 text as (high, low) 64-bit halves (stored as two uint64 columns)."""
    h = xxhash.xxh3_128_intdigest(text.encode("utf-8", "surrogatepass"))
    return h >> 64, h & 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class Filter:
    """The effective filters of one source (already merged with the corpus-wide defaults)."""

    normalize: str = "NFC"
    whitespace: str = "lines"
    min_chars: int = 1
    max_chars: int = 1_000_000
    languages: list[str] | None = None
    dedup: bool = True
    seen: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})

    @classmethod
    def from_spec(cls, filters: Any) -> "Filter":
        """Build from the source's validated ``filters`` model."""
        return cls(normalize=filters.normalize, whitespace=filters.whitespace, min_chars=filters.min_chars,
                   max_chars=filters.max_chars, languages=list(filters.languages) if filters.languages else None,
                   dedup=filters.dedup)

    def apply(self, text: str, language: str) -> tuple[str, int, int] | None:
        """The cleaned text and its hash halves, or None (the reason is counted in ``counts``)."""
        text = clean_text(text, self.normalize, self.whitespace)
        if not text:
            self.counts["empty"] += 1
            return None
        if len(text) < self.min_chars:
            self.counts["too_short"] += 1
            return None
        if len(text) > self.max_chars:
            self.counts["too_long"] += 1
            return None
        if self.languages is not None and language not in self.languages:
            self.counts["language"] += 1
            return None
        hi, lo = doc_hash(text)
        if self.dedup:
            h = (hi << 64) | lo
            if h in self.seen:
                self.counts["duplicate"] += 1
                return None
            self.seen.add(h)
        return text, hi, lo
