"""Fault injection on the engine, repeatable with a seed (``GENESIS_RELIABILITY_SEED``).

* ``kill -9`` at the engine's fault points — while hashing/publishing output files
  (``publish.file:kill@N``), just before an object's rename (``publish.before_rename:kill@N``) and while
  committing file digests to the state DB (``state.write:kill``);
* ``kill -9`` of the build's whole process group at random wall-clock moments.

After each kill: every object in the cache passes ``cache verify``, no object directory lacks its
manifest, the rerun finishes, its outputs are identical (keys and output digests) to an uninterrupted
build, and a third run is a no-op.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from genesis_build.state import RACY_NS

from genesis_build.cache import Cache
from rel_helpers import (RelWorkspace, assert_no_traceback, kill_group, kill_leftovers, node_objects, objects,
                         record, rng, tmp_leftovers)

pytestmark = pytest.mark.slow

TARGETS = ("text:demo", "slow:demo")
SPEC = 'files = ["data/*.txt"]\nseconds = {seconds}\n\n[shape]\nupper = true\n'
PUBLISHED_FILES = 14  # read 1 + words 2 + count 1 + slow 10


def _workspace(root: Path, seconds: float = 0.3) -> RelWorkspace:
    ws = RelWorkspace(root)
    ws.write_spec("demo", SPEC.format(seconds=seconds))
    return ws


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted build: node → (key, output digest), and how long the build took."""
    ws = _workspace(tmp_path_factory.mktemp("ref") / "ws")
    t0 = time.time()
    r = ws.cli(*TARGETS)
    took = time.time() - t0
    assert r.code == 0, r.err
    nodes = {n: (m["key"], m["output_digest"]) for n, m in node_objects(ws.cache).items()}
    assert len(nodes) == 5
    return {"nodes": nodes, "seconds": took}


def _check_recovers(ws: RelWorkspace, reference: dict, case: str) -> dict:
    """The post-crash checks; returns details for the summary."""
    objs = objects(ws.cache)
    assert all(isinstance(m, dict) for m in objs.values()), f"{case}: an object dir without a readable manifest: {objs}"
    partial = len(objs)
    cache = Cache(ws.cache)  # what `cache verify` does, without a process per check (the CLI verifies below)
    broken = {k: cache.verify(k) for k in cache.keys() if cache.verify(k)}
    assert not broken, f"{case}: a visible object fails verification right after the crash: {broken}"
    db = sqlite3.connect(ws.root / ".genesis" / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    again = ws.cli(*TARGETS)
    assert again.code == 0, f"{case}: rerun failed: {again.out}{again.err}"
    assert_no_traceback(again.out, again.err)
    got = {n: (m["key"], m["output_digest"]) for n, m in node_objects(ws.cache).items()}
    assert got == reference["nodes"], f"{case}: outputs differ from the uninterrupted build"
    ver = ws.cli("cache", "verify")
    assert ver.code == 0 and "5 ok, 0 quarantined" in ver.out, f"{case}: {ver.out}"
    assert tmp_leftovers(ws.cache) == [], f"{case}: build dirs left behind"
    noop = ws.cli(*TARGETS)
    assert noop.code == 0 and noop.ran == [], f"{case}: third run was not a no-op: {noop.ran}"
    return {"objects_after_crash": partial, "rerun_ran": again.ran}


def _fault_cases() -> list[str]:
    r = rng("fault-points")
    cases = [f"publish.file:kill@{n}" for n in sorted(r.sample(range(1, PUBLISHED_FILES + 1), 3))]
    cases += [f"publish.before_rename:kill@{n}" for n in sorted(r.sample(range(1, 6), 2))]
    cases += ["state.write:kill@1"]
    return cases


@pytest.mark.parametrize("fault", _fault_cases())
def test_kill_at_fault_point_then_rerun_finishes_identically(fault: str, tmp_path: Path, reference: dict) -> None:
    ws = _workspace(tmp_path / "ws")
    r = ws.cli(*TARGETS, env={"GENESIS_FAULT": fault})
    try:
        assert r.code == -signal.SIGKILL, f"the fault {fault} was never reached: {r.out}{r.err}"
        details = _check_recovers(ws, reference, fault)
    except AssertionError:
        record("fault", fault, False)
        raise
    record("fault", fault, True, **details)


def _kill_cases() -> list[tuple[int, float, int]]:
    r = rng("random-kills")
    return [(i, round(r.uniform(0.03, 0.97), 3), r.choice((1, 2))) for i in range(5)]


@pytest.mark.parametrize("case,fraction,jobs", _kill_cases(), ids=lambda v: str(v))
def test_sigkill_process_group_at_random_moment_then_rerun_finishes_identically(
        case: int, fraction: float, jobs: int, tmp_path: Path, reference: dict) -> None:
    ws = _workspace(tmp_path / "ws")
    delay = fraction * reference["seconds"]
    name = f"random-kill #{case}: SIGKILL after {delay:.2f}s (-j {jobs})"
    p = ws.spawn(*TARGETS, "-j", str(jobs))
    time.sleep(delay)
    kill_group(p)
    # A stage subprocess runs in its own session, so killing the build's group does not reach it
    # (see test_no_stage_process_survives_a_killed_build); kill what is left, as a machine crash would.
    leftovers = kill_leftovers(ws.root, wait=0.2)
    try:
        details = _check_recovers(ws, reference, name)
    except AssertionError:
        record("random_kill", name, False, leftover_processes=len(leftovers))
        raise
    record("random_kill", name, True, killed_rc=p.returncode, leftover_processes=len(leftovers), **details)


def test_no_stage_process_survives_a_killed_build(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", seconds=8.0)
    p = ws.spawn("slow:demo")
    deadline = time.time() + 30
    while "slow:demo" not in "\n".join(ws.ran_total()) and time.time() < deadline:
        time.sleep(0.05)
    assert "slow:demo" in ws.ran_total(), "the slow stage never started"
    kill_group(p)
    time.sleep(1.0)
    survivors = kill_leftovers(ws.root)
    record("orphan", "stage subprocess after kill -9 of the build's process group", not survivors,
           survivors=len(survivors))
    assert survivors == [], f"stage processes still running after the build was killed: {survivors}"


def test_state_db_killed_mid_write_keeps_earlier_digests(tmp_path: Path) -> None:
    """A kill inside the digest transaction loses that transaction only; the DB stays usable and the
    rerun hashes the files again (no wrong digest is ever served)."""
    ws = _workspace(tmp_path / "ws")
    time.sleep(RACY_NS / 1e9 + 0.2)  # digests of files younger than the racy window are not memoised
    assert ws.cli("read:demo").code == 0
    (ws.root / "data" / "c.txt").write_text("grape honeydew\n")
    r = ws.cli("read:demo", env={"GENESIS_FAULT": "state.write:kill"})
    assert r.code == -signal.SIGKILL
    db = sqlite3.connect(ws.root / ".genesis" / "state.db")
    try:
        rows = dict(db.execute("SELECT path, digest FROM digests").fetchall())
    finally:
        db.close()
    assert not any(p.endswith("c.txt") for p in rows), "the killed transaction was committed"
    assert any(p.endswith("a.txt") for p in rows), "digests committed before the kill were lost"
    st = ws.status("read:demo")["read:demo"]
    assert st["state"] == "stale" and "file data/c.txt added" in st["reason"]
    r = ws.cli("read:demo")
    assert r.code == 0 and r.ran == ["read:demo"]
    out = (ws.root / "out" / "read:demo" / "all.txt").read_text()
    assert "GRAPE HONEYDEW" in out
    record("fault", "state.write:kill keeps earlier digests", True)


def test_corrupt_state_db_is_one_clear_line_or_rebuilt(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    assert ws.cli("read:demo").code == 0
    for name in ("state.db-wal", "state.db-shm"):
        (ws.root / ".genesis" / name).unlink(missing_ok=True)
    (ws.root / ".genesis" / "state.db").write_bytes(b"this is not a sqlite database\n" * 200)
    (ws.root / "data" / "c.txt").write_text("grape\n")  # a real change: the no-op fast path does not apply
    r = ws.cli("read:demo")
    clear = r.code == 2 and len(r.err.strip().splitlines()) == 1 and "state.db" in r.err
    ok = "Traceback" not in r.out + r.err and (r.code == 0 or clear)
    record("corruption", "state DB overwritten with garbage", ok, rc=r.code)
    assert ok, r.err[-2000:]
    if r.code == 0:
        assert r.ran == ["read:demo"] and ws.cli("read:demo").ran == []


def test_fault_cases_are_repeatable_from_the_seed() -> None:
    """The same seed gives the same cases (so a failure can be replayed with GENESIS_RELIABILITY_SEED)."""
    assert _fault_cases() == _fault_cases() and _kill_cases() == _kill_cases()
    assert json.dumps(_kill_cases())  # plain data, printed in test ids


@pytest.mark.parametrize("what", ["spec (no-op fast path)", "file input (state DB memo)"])
def test_same_size_edit_with_an_unchanged_mtime_is_noticed(tmp_path: Path, what: str) -> None:
    ws = _workspace(tmp_path / "ws")
    ws.write_spec("demo", 'files = ["data/*.txt"]\n\n[shape]\nrepeat = 1\n')
    env = {"GENESIS_NO_FASTPATH": "1"} if what.startswith("file") else {}
    assert ws.cli("read:demo", env=env).code == 0
    path = ws.root / ("specs/text/demo.toml" if what.startswith("spec") else "data/a.txt")
    st = path.stat()
    old = path.read_text()
    new = old.replace("repeat = 1", "repeat = 2") if what.startswith("spec") else old.replace("apple", "APPLE")
    assert new != old and len(new) == len(old)
    with open(path, "r+") as f:  # in place: same inode, same size
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what a coarse timestamp gives
    r = ws.cli("read:demo", env=env)
    noticed = r.code == 0 and r.ran == ["read:demo"]
    record("change_detection", f"same-size edit, unchanged mtime: {what}", noticed)
    assert noticed, f"the edit was not noticed: {r.out}"
