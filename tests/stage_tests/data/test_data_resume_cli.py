"""Resumable ingestion through the real CLI: kill -9 midway, and bad input fixed between two builds.

A real ``genesis-build`` subprocess reads a local JSONL corpus of many files (one shard each);
finished shards are counted in the node's run directory (``cache/runs/<trajectory>/shards``) and
the rebuild's shard counts are read from the node's manifest stats (``stats.run``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import data_testlib as d
import pytest

pytestmark = pytest.mark.slow

FILES = 24
NODE = "corpus-source:t/j"

CORPUS = """\
seed = 1
shard_mb = 2.0            # each ~1.5 MB file is one shard
workers = 2

[[sources]]
name = "j"
type = "jsonl"
glob = "data/*.jsonl"
language_field = "lang"
"""


def _workspace(root: Path) -> d.CliWorkspace:
    ws = d.CliWorkspace(root)
    (root / "data").mkdir(parents=True)
    for k in range(FILES):
        lines = []
        size = 0
        i = 0
        while size < 1_500_000:
            n = k * 100_000 + i
            # every 10th document repeats one of file 0: duplicates across shards
            doc = d.sentence_doc(n % 500 if i % 10 == 0 else n, sentences=8)
            line = json.dumps({"text": doc, "lang": "de" if n % 4 == 0 else "en"}) + "\n"
            lines.append(line)
            size += len(line)
            i += 1
        (root / "data" / f"part{k:03d}.jsonl").write_text("".join(lines))
    ws.spec("corpus", "t", CORPUS)
    return ws


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    return {**env, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **extra}


def _records(root: Path) -> list[Path]:
    return list((root / "cache" / "runs").glob("*/shards/*.json"))


def _alive_under(root: Path) -> list[int]:
    """Processes whose working directory is inside ``root`` (the stage and its workers)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cwd = os.readlink(p / "cwd")
                state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and (cwd == str(root) or cwd.startswith(f"{root}/")):
                found.append(int(p.name))
    return found


def test_kill_9_midway_then_rebuild_redoes_only_unfinished_shards(tmp_path: Path) -> None:
    ref = _workspace(tmp_path / "ref")
    p = subprocess.run([sys.executable, "-m", "genesis_build.cli", NODE], cwd=ref.root, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    want = ref.manifest(NODE)
    assert want["stats"]["run"]["shards"] == FILES and want["stats"]["run"]["workers"] == 2

    ws = _workspace(tmp_path / "ws")
    # one worker (`-w 1` over the spec's 2), so shards finish one after another and "half" is a
    # well-defined moment
    proc = subprocess.Popen([sys.executable, "-m", "genesis_build.cli", "-w", "1", NODE], cwd=ws.root,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while len(_records(ws.root)) < FILES // 2:
        assert proc.poll() is None, "the build ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # the stage runs in its own session; it notices the engine's death (lifeline) and stops
    deadline = time.time() + 60
    while _alive_under(ws.root):
        assert time.time() < deadline, "stage processes outlived the killed build"
        time.sleep(0.1)
    finished = len(_records(ws.root))
    assert FILES * 0.4 <= finished <= FILES * 0.75, finished
    assert not [m for m in ws.objects().values() if m["node"] == NODE]  # nothing published

    p = subprocess.run([sys.executable, "-m", "genesis_build.cli", NODE], cwd=ws.root, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    got = ws.manifest(NODE)
    run = got["stats"]["run"]
    assert run["shards"] == FILES and run["shards_reused"] == finished and run["shards_redone"] == FILES - finished
    assert got["output_digest"] == want["output_digest"]
    assert got["key"] == want["key"]


def test_bad_input_fails_with_one_line_keeps_shards_and_the_fixed_rerun_resumes(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    last = ws.root / "data" / f"part{FILES - 1:03d}.jsonl"
    good = last.read_bytes()
    lines = good.splitlines(keepends=True)
    last.write_bytes(b"".join(lines[:7]) + b'{"text": "stra\xdfe", "lang": "de"}\n' + b"".join(lines[7:]))
    p = subprocess.run([sys.executable, "-m", "genesis_build.cli", NODE], cwd=ws.root, env=_env(GENESIS_DATA_WORKERS="1"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if "part023.jsonl" in ln]
    assert len(err) == 1 and "data/part023.jsonl:8" in err[0] and "not UTF-8" in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert len(_records(ws.root)) == FILES - 1  # every other file's shard is kept
    assert not any((ws.root / "cache" / "tmp").iterdir())

    last.write_bytes(good)
    p = subprocess.run([sys.executable, "-m", "genesis_build.cli", "--workers", "1", NODE], cwd=ws.root, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    run = ws.manifest(NODE)["stats"]["run"]
    assert run["shards_redone"] == 1 and run["shards_reused"] == FILES - 1
    assert run["workers"] == 1  # --workers over the spec's `workers = 2`
