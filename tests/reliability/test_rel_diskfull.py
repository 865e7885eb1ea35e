"""Disk full during a build.

Two ways to run out of space, both through the real CLI:

* a 2 MiB tmpfs mounted as the cache (needs root; skipped where ``mount`` is not allowed), grown with
  ``mount -o remount`` to "free space";
* ``RLIMIT_FSIZE`` (always available): the child ignores SIGXFSZ so an over-long write fails with
  EFBIG ("File too large") instead of killing the process.

Asserted: no traceback reaches the user, the failure says what happened, nothing partial is published
(no object, no build dir left), and the next build once space is back succeeds and verifies.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from genesis_testlib import Run
from rel_helpers import (RelWorkspace, assert_no_traceback, node_objects, one_logical_line, record,
                         tmp_leftovers)

pytestmark = pytest.mark.slow

BIG = 3_000_000  # bytes written by blob:big; more than the 2 MiB filesystem / 1 MiB file-size limit


def _limit_file_size() -> None:
    """preexec_fn: files may not grow past 1 MiB; writes beyond fail with EFBIG instead of SIGXFSZ."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a small tmpfs at ``path`` (skips the test where that is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _grow(path: Path, size: str) -> None:
    r = subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _workspace(tmp_path: Path, cache: Path | None = None) -> RelWorkspace:
    ws = RelWorkspace(tmp_path / "ws", cache=cache)
    ws.write_blob("big", f"size = {BIG}\nfiles = 1\n")
    return ws


def _assert_failed_cleanly(r: Run, cache: Path, node: str, says: str) -> str:
    assert r.code == 1, f"{node}: exit code {r.code} (expected 1, a stage failed): {r.out}{r.err}"
    assert_no_traceback(r.out, r.err)
    msg = one_logical_line(r.out + "\n" + r.err)
    assert says in msg, msg
    assert node not in node_objects(cache), "a partial object was published"
    assert tmp_leftovers(cache) == [], "the failed build dir was left in cache/tmp"
    return msg


def _assert_recovers(ws: RelWorkspace, cache: Path, node: str) -> None:
    r = ws.cli(node)
    assert r.code == 0 and r.ran == [node], r.out + r.err
    files = sorted((cache / "objects").glob("*/*/data/*.bin"))
    assert files and all(f.stat().st_size == BIG for f in files)
    ver = ws.cli("cache", "verify")
    assert ver.code == 0 and "0 quarantined" in ver.out


# ------------------------------------------------------------------------------------------------
# RLIMIT_FSIZE: runs everywhere


@pytest.mark.parametrize("node", ["blob-light:big", "blob:big"])
def test_file_size_limit_fails_cleanly_and_next_build_succeeds(node: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    r = ws.run_limited(node, preexec=_limit_file_size)
    try:
        msg = _assert_failed_cleanly(r, ws.cache, node, "File too large")
        _assert_recovers(ws, ws.cache, node)
    except AssertionError:
        record("disk_full", f"RLIMIT_FSIZE during {node}", False)
        raise
    record("disk_full", f"RLIMIT_FSIZE during {node}", True, message=msg[:200])


# ------------------------------------------------------------------------------------------------
# a real full filesystem (tmpfs)


def test_full_cache_filesystem_light_stage(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "2m") as fs:
        ws = _workspace(tmp_path, cache=fs)
        r = ws.cli("blob-light:big")
        try:
            msg = _assert_failed_cleanly(r, fs, "blob-light:big", "No space left on device")
            _grow(fs, "16m")
            _assert_recovers(ws, fs, "blob-light:big")
        except AssertionError:
            record("disk_full", "full cache filesystem during an in-process stage", False)
            raise
        record("disk_full", "full cache filesystem during an in-process stage", True, message=msg[:200])


def test_full_cache_filesystem_heavy_stage_publishes_nothing_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "2m") as fs:
        ws = _workspace(tmp_path, cache=fs)
        r = ws.cli("blob:big")
        try:
            assert r.code == 1, r.out + r.err
            assert "blob:big" not in node_objects(fs) and tmp_leftovers(fs) == []
            _grow(fs, "16m")
            _assert_recovers(ws, fs, "blob:big")
        except AssertionError:
            record("disk_full", "full cache filesystem during a subprocess stage (publish/recover)", False)
            raise
        record("disk_full", "full cache filesystem during a subprocess stage (publish/recover)", True)


def test_full_cache_filesystem_heavy_stage_is_one_clear_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "2m") as fs:
        ws = _workspace(tmp_path, cache=fs)
        r = ws.cli("blob:big")
        ok = "Traceback" not in r.out + r.err and "No space left on device" in one_logical_line(r.out + r.err)
        record("disk_full", "full cache filesystem during a subprocess stage (clear error)", ok)
        assert_no_traceback(r.out, r.err)
        assert "No space left on device" in one_logical_line(r.out + r.err), r.out + r.err


def test_full_disk_error_names_what_could_not_be_written(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "2m") as fs:
        ws = _workspace(tmp_path, cache=fs)
        r = ws.cli("blob-light:big")
        msg = one_logical_line(r.out + r.err)
        named = str(fs) in msg
        record("disk_full", "disk-full error names the path", named)
        assert r.code == 1 and named, msg


def test_full_workspace_disk_state_db_is_one_clear_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "3m") as fs:
        ws = RelWorkspace(fs / "ws")
        ws.write_spec("demo", 'files = ["data/*.txt"]\n')
        assert ws.cli("read:demo").code == 0
        filler = fs / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            (ws.root / "data" / "a.txt").write_text("apple banana cherry!\n")
        r = ws.cli("read:demo", env={"GENESIS_NO_FASTPATH": "1"})
        ok = "Traceback" not in r.out + r.err and r.code in (1, 2) and "state.db" in r.err + r.out
        record("disk_full", "full workspace disk (state DB)", ok, rc=r.code)
        filler.unlink()
        assert_no_traceback(r.out, r.err)
        assert r.code in (1, 2) and "state.db" in r.err + r.out, r.out + r.err
