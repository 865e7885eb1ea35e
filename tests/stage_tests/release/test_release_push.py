"""``push_release`` without the Hub: no token, offline, or an unreachable endpoint is one clear line
(a PushError, exit code 2) and nothing is committed. The real ``huggingface_hub`` runs in a fresh
process each time (it reads HF_* variables at import); the "Hub" is a closed port on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genesis_testlib import free_port
from tinylm import ROOT

CODE = """import sys
from stages.release_lib.push import push_release
try:
    push_release(sys.argv[1], sys.argv[2])
except Exception as e:
    print(type(e).__name__, getattr(e, "exit_code", None), str(e).replace(chr(10), "\\\\n"))
else:
    print("pushed")
"""


def _push(folder: Path, repo: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    base.update({"PYTHONPATH": str(ROOT), "HF_HOME": str(folder.parent / "hf-home"), **env})
    p = subprocess.run([sys.executable, "-c", CODE, str(folder), repo], capture_output=True, text=True, env=base, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    from stages.release import write_sha256sums

    d = tmp_path / "rel"
    d.mkdir()
    (d / "README.md").write_text("---\nlicense: mit\n---\n# m\n")
    write_sha256sums(d)
    return d


def test_no_token(release_dir: Path) -> None:
    out = _push(release_dir, "genesis/m")
    assert out.startswith("PushError 2 ") and "no Hugging Face token" in out and "\\n" not in out, out


def test_offline(release_dir: Path) -> None:
    out = _push(release_dir, "genesis/m", HF_HUB_OFFLINE="1", HF_TOKEN="hf_fake")
    assert out.startswith("PushError 2 ") and "offline" in out, out


def test_bad_repo_id(release_dir: Path) -> None:
    for repo in ("justaname", "a/b/c", "../x"):
        out = _push(release_dir, repo, HF_TOKEN="hf_fake")
        assert out.startswith("PushError 2 ") and "expected ORG/NAME" in out, (repo, out)


def test_unreachable_hub(release_dir: Path) -> None:
    out = _push(release_dir, "genesis/m", HF_TOKEN="hf_fake", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert out.startswith("PushError 2 ") and "cannot reach the Hub" in out and "rerun" in out, out


def test_not_a_release_dir(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    out = _push(tmp_path / "x", "genesis/m", HF_TOKEN="hf_fake")
    assert out.startswith("PushError 2 ") and "not a release directory" in out, out
