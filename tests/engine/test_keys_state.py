"""Canonical keys and the digest memo."""

from __future__ import annotations

import os
from pathlib import Path

from genesis_build.keys import canonical_json, digest_json
from genesis_build.state import StateDB


def test_canonical_json_is_order_and_number_insensitive() -> None:
    assert canonical_json({"b": 1.0, "a": [1, 2.5]}) == '{"a":[1,2.5],"b":1}'
    assert digest_json({"x": 1, "y": 2}) == digest_json({"y": 2, "x": 1.0})
    assert digest_json({"x": 1}) != digest_json({"x": 2})
    assert len(digest_json({})) == 32  # xxh3_128


def test_state_db_reads_no_content_when_unchanged_and_rehashes_after_touch(tmp_path: Path) -> None:
    files = []
    for i in range(20):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(1000))
        files.append(p)
    db = StateDB(tmp_path / "state.db")
    first = db.digest_many(files)
    assert db.hashed == 20
    again = StateDB(tmp_path / "state.db")  # a new process: the memo is on disk
    assert again.digest_many(files) == first and again.hashed == 0
    st = files[3].stat()
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # touch, content unchanged
    assert again.digest_many(files) == first and again.hashed == 1
    files[4].write_bytes(b"changed")
    assert again.digest(files[4]) != first[files[4]] and again.hashed == 2
