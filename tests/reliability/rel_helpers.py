"""Shared helpers of the reliability harness (fault injection, disk full, corruption, spec fuzzing).

Everything here drives the real ``genesis-build`` CLI in temporary workspaces. Figures for
``benchmarks/reliability_report.py`` are appended as JSON lines to the file named by
``$GENESIS_RELIABILITY_SUMMARY`` (one line per case: category, case, survived, details).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from genesis_testlib import Run, Workspace, process_alive

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RELSTAGES = HERE / "relstages.py"
SEED = int(os.environ.get("GENESIS_RELIABILITY_SEED", "20261124"))


def rng(name: str) -> random.Random:
    """A random stream per test, derived from the harness seed (repeatable, independent per test)."""
    return random.Random(f"{SEED}:{name}")


# ------------------------------------------------------------------------------------------------
# figures


def record(category: str, case: str, survived: bool, **details: Any) -> None:
    """Append one case to the summary file (if the report script asked for one)."""
    path = os.environ.get("GENESIS_RELIABILITY_SUMMARY")
    if not path:
        return
    line = json.dumps({"category": category, "case": case, "survived": bool(survived), "seed": SEED, **details},
                      default=str)
    with open(path, "a") as f:  # O_APPEND: whole lines even with several writers
        f.write(line + "\n")


# ------------------------------------------------------------------------------------------------
# workspaces


class RelWorkspace(Workspace):
    """The engine's test workspace (kind ``text``) plus the reliability stages (kind ``blob``)."""

    def __init__(self, root: Path, cache: Path | None = None) -> None:
        super().__init__(root, cache)
        shutil.copy(RELSTAGES, root / "relstages.py")
        cache_line = f'cache = "{cache}"\n' if cache else ""
        (root / "genesis.toml").write_text('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "relstages"]\n'
                                           + cache_line)
        (root / "specs" / "blob").mkdir(parents=True, exist_ok=True)

    @property
    def cache(self) -> Path:
        """The workspace's cache dir (default location)."""
        return self.root / "cache"

    def write_blob(self, name: str, text: str) -> Path:
        """Write specs/blob/<name>.toml."""
        p = self.root / "specs" / "blob" / f"{name}.toml"
        p.write_text(text)
        return p

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment the CLI gets: no inherited GENESIS_* settings, plus the run log."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
        full.update({"GENESIS_TEST_RUNLOG": str(self.runlog), **(extra or {})})
        return full

    def spawn(self, *args: str, env: dict[str, str] | None = None, preexec: Any = None) -> subprocess.Popen:
        """Start the CLI in its own process group (so a test can SIGKILL the whole group)."""
        return subprocess.Popen([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=self.env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=preexec)

    def run_limited(self, *args: str, preexec: Any, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        """Run the CLI with a ``preexec_fn`` (resource limits); returns a Run."""
        before = self.runlog.read_text().splitlines() if self.runlog.exists() else []
        p = subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=self.env(env),
                           capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)
        after = self.runlog.read_text().splitlines() if self.runlog.exists() else []
        return Run(p.returncode, p.stdout, p.stderr, after[len(before):])

    def ran_total(self) -> list[str]:
        """Every node run so far in this workspace (from the run log)."""
        return self.runlog.read_text().splitlines() if self.runlog.exists() else []


# ------------------------------------------------------------------------------------------------
# processes


def processes_under(root: Path) -> list[int]:
    """Pids of live processes whose working directory is inside ``root`` (ours, found by id)."""
    out = []
    root_s = str(root.resolve())
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(d / "cwd")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if cwd == root_s or cwd.startswith(root_s + "/"):
            out.append(int(d.name))
    return out


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a CLI started with :meth:`RelWorkspace.spawn` and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)


def kill_leftovers(root: Path, wait: float = 0.0) -> list[int]:
    """Find processes still running in the workspace ``root`` (stage workers the engine left behind when
    it was killed), SIGKILL them one by one, and return their pids. ``wait`` gives them time to show."""
    if wait:
        time.sleep(wait)
    found = processes_under(root)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(process_alive(p) for p in found):
        time.sleep(0.05)
    # then give init a moment to reap them: a zombie still answers kill(pid, 0), so code that checks
    # "is the writer of this temp file alive?" would wrongly see it as alive
    deadline = time.time() + 5
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in found):
        time.sleep(0.05)
    return found



# ------------------------------------------------------------------------------------------------
# cache inspection


def objects(cache: Path) -> dict[str, dict]:
    """key → manifest of every published object (dirs without a manifest are reported as None)."""
    out: dict[str, Any] = {}
    for d in sorted((cache / "objects").glob("*/*")):
        m = d / "manifest.json"
        try:
            out[d.name] = json.loads(m.read_text()) if m.is_file() else None
        except ValueError:
            out[d.name] = "unreadable"
    return out


def node_objects(cache: Path) -> dict[str, dict]:
    """node id → manifest, for objects with a readable manifest."""
    return {m["node"]: m for m in objects(cache).values() if isinstance(m, dict)}


def tree_snapshot(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: files with size and content, dirs, symlinks with their target."""
    from genesis_build.keys import digest_file

    snap: dict[str, Any] = {}
    if not root.exists():
        return snap
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                snap[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                snap[rel] = ("dir",)
            else:
                snap[rel] = ("file", p.stat().st_size, digest_file(p))
    return snap


def tmp_leftovers(cache: Path) -> list[str]:
    """Build dirs left in cache/tmp."""
    d = cache / "tmp"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def assert_no_traceback(*texts: str) -> None:
    """No Python traceback reached the user."""
    for t in texts:
        assert "Traceback (most recent call last)" not in t, t[-3000:]


def one_logical_line(text: str) -> str:
    """Rich wraps long lines at the terminal width; join the continuation lines of one message."""
    return " ".join(line.strip() for line in text.strip().splitlines())


@pytest.fixture
def rws(tmp_path: Path) -> RelWorkspace:
    """A fresh reliability workspace (test stages + blob stages)."""
    return RelWorkspace(tmp_path / "ws")
