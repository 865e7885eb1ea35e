"""Sharing one cache: other workspaces and users, concurrent builders, dead and foreign lock holders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from genesis_testlib import Workspace

pytestmark = pytest.mark.slow


def _env(ws: Workspace, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update({"GENESIS_TEST_RUNLOG": str(ws.runlog), "GENESIS_CACHE": str(cache)})
    return env


def _python_for_other_uids() -> tuple[str, dict[str, str]] | None:
    """An interpreter (and extra env) that other uids can run with this project importable: this one,
    or — when it lives under a private home (pyenv in /root) — the system Python of the same version
    pointed at this environment's site-packages and the repo."""
    if os.geteuid() != 0:
        return None
    import sysconfig

    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join([root, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    for exe, extra in ((sys.executable, {}), (system, {"PYTHONPATH": pythonpath})):
        try:
            ok = subprocess.run([exe, "-c", "import genesis_build, pydantic, networkx, xxhash, rich"], user=4301,
                                group=4242, capture_output=True, cwd="/tmp", env={**os.environ, **extra}).returncode == 0
        except (PermissionError, FileNotFoundError):
            ok = False
        if ok:
            return exe, extra
    return None


OTHER_UID_PYTHON = _python_for_other_uids()


def test_group_shared_cache_gets_group_writable_dirs(ws: Workspace, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    gid = os.getgid() if os.geteuid() != 0 else 4242
    os.chown(cache, -1, gid)
    os.chmod(cache, 0o2775)
    assert ws.cli(env={"GENESIS_CACHE": str(cache)}).code == 0
    for d in [cache / "objects", *(cache / "objects").glob("*"), cache / "locks", cache / "tmp"]:
        st = d.stat()
        assert st.st_gid == gid, d  # inherited through setgid
        assert st.st_mode & 0o070 == 0o070, (d, oct(st.st_mode))  # the group can create and delete here
    for lock in (cache / "locks").glob("*.lock"):
        assert lock.stat().st_mode & 0o060 == 0o060


@pytest.mark.skipif(OTHER_UID_PYTHON is None, reason="needs root and a Python interpreter (with this project's "
                    "dependencies) that other uids may run")
def test_two_users_in_a_group_share_a_cache() -> None:
    base = Path(tempfile.mkdtemp(prefix="genesis-shared-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        gid = 4242
        cache = base / "cache"
        cache.mkdir()
        os.chown(cache, 0, gid)
        os.chmod(cache, 0o2775)  # setgid: the group's builders share it
        users = {"alice": 4301, "bob": 4302}
        spaces = {}
        for name, uid in users.items():
            w = Workspace(base / name)
            w.runlog.touch()
            for p in [w.root, *w.root.rglob("*")]:
                os.chown(p, uid, gid)
            spaces[name] = w

        def run(name: str) -> subprocess.CompletedProcess:
            w = spaces[name]
            exe, extra = OTHER_UID_PYTHON
            return subprocess.run([exe, "-m", "genesis_build.cli"], cwd=w.root, env={**_env(w, cache), **extra},
                                  user=users[name], group=gid, extra_groups=[gid], capture_output=True, text=True)

        a = run("alice")
        assert a.returncode == 0, a.stderr
        assert len(spaces["alice"].runlog.read_text().split()) == 4
        b = run("bob")
        assert b.returncode == 0, b.stderr
        assert spaces["bob"].runlog.read_text() == ""  # 0 stages ran for bob
        owners = {p.stat().st_uid for p in (cache / "objects").rglob("manifest.json")}
        assert owners == {users["alice"]}
        # bob can still build new objects next to alice's (group-writable dirs)
        (spaces["bob"].root / "data" / "c.txt").write_text("grape\n")
        os.chown(spaces["bob"].root / "data" / "c.txt", users["bob"], gid)
        b2 = run("bob")
        assert b2.returncode == 0, b2.stderr
        assert "read:demo" in spaces["bob"].runlog.read_text()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_four_concurrent_builders_build_each_node_once(ws: Workspace, tmp_path: Path) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 1.5\n')
    cache = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-m", "genesis_build.cli", "slow:demo", "count:demo", "-j", "2"],
                              cwd=ws.root, env=_env(ws, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    partial_seen = []
    while any(p.poll() is None for p in procs):
        objects = cache / "objects"
        if objects.is_dir():
            for obj in objects.glob("*/*"):
                if not (obj / "manifest.json").is_file() and obj.exists():
                    partial_seen.append(obj)
        time.sleep(0.02)
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = ws.runlog.read_text().split()
    assert sorted(ran) == sorted(["read:demo", "slow:demo", "words:demo/a", "words:demo/e", "count:demo"])
    assert partial_seen == []
    assert sum("is being built by" in o for o, _ in outs) >= 1


def test_killed_builders_lock_is_released(ws: Workspace, tmp_path: Path) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 30\n')
    cache = tmp_path / "c"
    env = _env(ws, cache)
    first = subprocess.Popen([sys.executable, "-m", "genesis_build.cli", "slow:demo"], cwd=ws.root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while "slow:demo" not in (ws.runlog.read_text() if ws.runlog.exists() else "") and time.time() < deadline:
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)  # the builder dies holding the lock; its stage subprocess too:
    first.communicate()
    for lock in (cache / "locks").glob("*.owner"):
        info = json.loads(lock.read_text())
        if info.get("node") == "slow:demo":
            try:
                os.killpg(info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    # the orphaned stage process group was started by the builder; kill whatever is left of it — only
    # this test's workers (their payload lies in this cache), never another build on the machine
    subprocess.run(["pkill", "-9", "-f", f"genesis_build.worker {cache}"], check=False)
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 0.1\n')
    second = ws.cli("slow:demo", env={"GENESIS_CACHE": str(cache)}, timeout=60)
    assert second.code == 0 and second.ran == ["slow:demo"]


def test_waiting_message_names_the_foreign_holder(ws: Workspace, tmp_path: Path) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\nseconds = 3\n')
    cache = tmp_path / "c"
    env = _env(ws, cache)
    assert ws.cli("read:demo", env={"GENESIS_CACHE": str(cache)}).code == 0
    holder = subprocess.Popen([sys.executable, "-m", "genesis_build.cli", "slow:demo"], cwd=ws.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = None
    deadline = time.time() + 20
    while owner is None and time.time() < deadline:
        for f in (cache / "locks").glob("*.owner"):
            if json.loads(f.read_text()).get("node") == "slow:demo":
                owner = f
        time.sleep(0.05)
    assert owner is not None
    # what a builder on another host sharing this filesystem would have written
    owner.write_text(json.dumps({"host": "gpu-node-7", "pid": 4242, "node": "slow:demo", "since": time.time()}))
    waiter = ws.cli("slow:demo", env={"GENESIS_CACHE": str(cache)}, timeout=60)
    holder.communicate(timeout=60)
    assert waiter.code == 0 and "being built by gpu-node-7 pid 4242" in waiter.out
    assert ws.runlog.read_text().split().count("slow:demo") == 1  # the waiter reused the holder's object
