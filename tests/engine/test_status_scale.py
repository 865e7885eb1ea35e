"""The full status path at scale stays correct: a one-byte edit to one of 20,000 files is seen.

The full path (what a `--dry-run` or build takes after any spec edit) reuses a node's key when its
files' stat signatures are unchanged (the key memo). These tests make sure that shortcut never
hides an edit, even one that keeps the size and puts the mtime back.
"""

from __future__ import annotations

import os
import sqlite3
import time

from genesis_build.state import RACY_NS
from genesis_testlib import Workspace

N = 20_000


def _many_files(ws: Workspace, pattern: str, n: int = N) -> None:
    for f in (ws.root / "data").iterdir():
        f.unlink()
    for i in range(n):
        (ws.root / "data" / f"f{i:05d}.txt").write_text(f"word{i % 7} apple\n")
    ws.write_spec("demo", f'files = ["{pattern}"]\n')


def _memo(ws: Workspace, node: str) -> tuple | None:
    db = sqlite3.connect(ws.root / ".genesis" / "state.db")
    try:
        return db.execute("SELECT fp, key FROM keymemo WHERE node=?", (node,)).fetchone()
    finally:
        db.close()


def test_one_byte_edit_to_one_of_20k_files_is_seen_by_the_full_path(ws: Workspace) -> None:
    _many_files(ws, "data")  # a directory input: listed with os.scandir
    assert ws.cli("-q").code == 0
    time.sleep(RACY_NS / 1e9 + 0.2)  # signatures younger than the racy window vouch for nothing
    st = ws.status()
    assert {n["state"] for n in st.values()} == {"cached"}
    memo = _memo(ws, "read:demo")
    assert memo is not None and memo[1] == st["read:demo"]["key"]  # the shortcut is in use

    victim = ws.root / "data" / "f12345.txt"
    before = os.stat(victim)
    data = victim.read_bytes()
    victim.write_bytes(data[:-2] + b"X\n")  # same size
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the mtime put back: only ctime tells
    ws.write_spec("demo", '# an edit: the no-op record misses, the full path runs\nfiles = ["data"]\n')
    st = ws.status()
    assert st["read:demo"]["state"] == "stale"
    assert st["read:demo"]["reason"] == "file data/f12345.txt changed"
    assert set(ws.cli("-q").ran) == {"read:demo", "words:demo/a", "words:demo/e", "count:demo"}


def test_unchanged_files_keep_every_node_cached_and_a_glob_sees_a_new_file(ws: Workspace) -> None:
    _many_files(ws, "data/*.txt", 2_000)  # a glob input
    assert ws.cli("-q").code == 0
    time.sleep(RACY_NS / 1e9 + 0.2)
    assert {n["state"] for n in ws.status().values()} == {"cached"}
    ws.write_spec("demo", '# edited\nfiles = ["data/*.txt"]\n')
    assert {n["state"] for n in ws.status().values()} == {"cached"}
    assert _memo(ws, "read:demo") is not None
    (ws.root / "data" / "zz.txt").write_text("new\n")
    ws.write_spec("demo", '# edited again\nfiles = ["data/*.txt"]\n')
    assert ws.status()["read:demo"]["reason"] == "file data/zz.txt added"
