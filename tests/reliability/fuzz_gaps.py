"""Known spec-fuzzer findings: mutations the CLI accepts silently, or rejects without the agreed
one-line ``error: specs/<file>.toml:<line>: <field>: …``.

Each entry becomes a test in ``test_rel_spec_fuzz.py`` that xfails while the finding reproduces and
fails once it no longer does (then delete the entry here). A new finding that is not listed makes
``test_rel_spec_fuzz.py`` fail outright: never weaken the fuzzer to hide one — list it here with its
owner and tell them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    """Fuzzer results matching every regex: spec kind, mutation type, dotted field path, outcome
    (``accepted`` silently / ``bad`` = rejected wrongly) and the classifier's reason."""

    name: str
    kind: str
    mtype: str
    path: str
    outcome: str
    owner: str
    why: str
    reason: str = ".*"

    @property
    def id(self) -> str:
        """Test id."""
        return self.name

    def matches(self, m: dict) -> bool:
        """Whether a fuzzer result record falls under this entry."""
        return all(re.search(rx, m[key]) is not None for rx, key in (
            (f"^(?:{self.kind})$", "kind"), (f"^(?:{self.mtype})$", "type"), (self.path, "path"),
            (f"^(?:{self.outcome})$", "outcome"), (self.reason, "reason")))


ENGINE = "lead (engine)"
# Fixed (their tests flipped and the entries were removed): integers beyond 64 bits and non-finite
# floats (rejected in SpecStore.raw with file and line), error text printed as rich markup,
# unlocated 'kind:../x' references (specs.malformed_refs).
KNOWN: list[Known] = []
