"""``--dry-run --format json`` carries each node's planner rows as ``details`` (no text parsing needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import training_testlib as t

ROOT = t.ROOT


def test_pretrain_planner_rows_are_in_the_json(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(ROOT / "specs", root / "specs")
    (root / "genesis.toml").write_text('[workspace]\ndefault = "model:tiny"\nplugins = ["stages"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "genesis_build.cli", "--dry-run", "--format", "json", "pretrain:tiny"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    nodes = data if isinstance(data, list) else data.get("nodes", data)
    rec = next(n for n in nodes if n["id"] == "pretrain:tiny")
    details = {d["label"]: d["value"] for d in rec["details"]}
    assert details["tokens/step"].startswith("2,048 = micro 16 × accum 1 × world 1 × context 128"), details
    assert "params" in details and "memory/rank: peak" in details and "ETA" in details
    assert details["layout"].startswith("1 rank × ") and "auto" in details["layout"]
    # nodes without planner rows carry an empty list, never a missing key
    assert all(isinstance(n["details"], list) for n in nodes)
