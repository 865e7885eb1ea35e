"""Concurrent builders, kill -9 during publish, Ctrl-C: nothing partial is ever visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genesis_testlib import Workspace

pytestmark = pytest.mark.slow


def _spawn(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    full.update({"GENESIS_TEST_RUNLOG": str(ws.runlog), **(env or {})})
    return subprocess.Popen([sys.executable, "-m", "genesis_build.cli", *args], cwd=ws.root, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _objects(ws: Workspace) -> list[Path]:
    return sorted((ws.root / "cache" / "objects").glob("*/*"))


def test_two_builders_same_key_one_builds_other_waits_and_reuses(ws: Workspace, tmp_path: Path) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 2.0\n')
    shared = tmp_path / "shared-cache"
    env = {"GENESIS_CACHE": str(shared)}
    a = _spawn(ws, "slow:demo", env=env)
    time.sleep(0.8)
    b = _spawn(ws, "slow:demo", env=env)
    out_a, err_a = a.communicate(timeout=60)
    out_b, err_b = b.communicate(timeout=60)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    ran = ws.runlog.read_text().splitlines()
    assert ran.count("slow:demo") == 1 and ran.count("read:demo") == 1
    waited = out_a + out_b
    assert "is being built by" in waited and (f"pid {a.pid}" in waited or f"pid {b.pid}" in waited)


def test_kill_9_during_publish_leaves_no_visible_object(ws: Workspace) -> None:
    r = ws.cli("read:demo", env={"GENESIS_FAULT": "publish.before_rename:kill"})
    assert r.code == -signal.SIGKILL
    assert _objects(ws) == []  # built and manifested in tmp/, but never renamed into objects/
    assert any((ws.root / "cache" / "tmp").iterdir())
    st = ws.status("read:demo")["read:demo"]
    assert st["state"] == "missing"
    r = ws.cli("read:demo")
    assert r.code == 0 and r.ran == ["read:demo"]
    assert not any((ws.root / "cache" / "tmp").iterdir())  # the dead builder's dir was cleaned
    assert ws.cli("cache", "verify").code == 0


def test_kill_9_mid_file_hashing(ws: Workspace) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 0.2\n')
    assert ws.cli("read:demo").code == 0
    r = ws.cli("slow:demo", env={"GENESIS_FAULT": "publish.file:kill@4"})
    assert r.code == -signal.SIGKILL
    assert len(_objects(ws)) == 1
    assert ws.cli("slow:demo").ran == ["slow:demo"]
    assert ws.cli("cache", "verify").code == 0


def test_ctrl_c_leaves_no_partial_object_and_rerun_finishes(ws: Workspace) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 6.0\n')
    assert ws.cli("read:demo").code == 0
    p = _spawn(ws, "slow:demo")
    deadline = time.time() + 30
    while "slow:demo" not in (ws.runlog.read_text() if ws.runlog.exists() else "") and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, out + err
    assert "interrupted" in err
    assert len(_objects(ws)) == 1  # only read:demo
    assert not any((ws.root / "cache" / "tmp").iterdir())
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 0.2\n')
    assert ws.cli("slow:demo").code == 0
