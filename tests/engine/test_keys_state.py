"""Canonical keys and the digest memo."""

from __future__ import annotations

import os
import time
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
    db = StateDB(tmp_path / "state.db", racy_ns=0)  # files just written: see the racy test below
    first = db.digest_many(files)
    assert db.hashed == 20
    again = StateDB(tmp_path / "state.db", racy_ns=0)  # a new process: the memo is on disk
    assert again.digest_many(files) == first and again.hashed == 0
    st = files[3].stat()
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # touch, content unchanged
    assert again.digest_many(files) == first and again.hashed == 1
    files[4].write_bytes(b"changed")
    assert again.digest(files[4]) != first[files[4]] and again.hashed == 2


def test_state_db_does_not_memoise_racy_signatures(tmp_path: Path) -> None:
    """A file written within the racy window is rehashed next time: a same-size edit in the same
    timestamp tick (or with the mtime set back) must not be served the old digest."""
    p = tmp_path / "f.txt"
    p.write_text("apple")
    db = StateDB(tmp_path / "state.db")
    first = db.digest(p)
    st = p.stat()
    p.write_text("grape")  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back, as cp -p / rsync -t do
    assert db.digest(p) != first and db.hashed == 2


def test_state_db_signature_includes_ctime(tmp_path: Path) -> None:
    """An old file edited in place with its mtime restored changes ctime, which the memo checks."""
    p = tmp_path / "f.txt"
    p.write_text("apple")
    old = p.stat().st_mtime_ns - 10_000_000_000
    os.utime(p, ns=(old, old))
    db = StateDB(tmp_path / "state.db", racy_ns=0)
    first = db.digest(p)
    time.sleep(0.05)  # ctime ticks with the kernel's coarse clock
    p.write_text("grape")
    os.utime(p, ns=(old, old))  # same size, same mtime; only ctime moved
    assert db.digest(p) != first


def test_corrupt_state_db_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"not a database\n" * 100)
    db = StateDB(tmp_path / "state.db")
    p = tmp_path / "f.txt"
    p.write_text("x")
    assert len(db.digest(p)) == 32
    assert list(tmp_path.glob("state.db.corrupt-*"))


def test_trajectory_can_leave_out_file_digests() -> None:
    from genesis_build.graph import trajectory_material

    def material(steps: int, digest: str) -> dict:
        return {"stage": "s", "spec": {"model.training": {"steps": steps, "lr": 1}}, "files": {"a.txt": digest}, "inputs": {}}

    plain = lambda m: digest_json(trajectory_material(m, ("training.steps",), "model"))  # noqa: E731
    no_files = lambda m: digest_json(trajectory_material(m, ("training.steps", "@files"), "model"))  # noqa: E731
    assert plain(material(1, "x")) == plain(material(2, "x")) != plain(material(1, "y"))
    assert no_files(material(1, "x")) == no_files(material(2, "y"))
    assert no_files(material(1, "x")) != plain(material(1, "x"))
