"""A corrupt object that cannot be moved aside (its directory is immutable: ``chattr +i``) gives one
line naming the object and what to do; ``cache verify`` reports it and goes on (finding 6)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rel_helpers import RelWorkspace, assert_no_traceback, node_objects, one_logical_line, record

pytestmark = pytest.mark.slow


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_immovable_corrupt_object(tmp_path: Path) -> None:
    ws = RelWorkspace(tmp_path / "ws")
    ws.write_spec("demo", 'files = ["data/*.txt"]\n')
    assert ws.cli().code == 0
    m = node_objects(ws.cache)["read:demo"]
    key = m["key"]
    obj = ws.cache / "objects" / key[:2] / key
    f = obj / "data" / m["outputs"][0]["path"]
    f.chmod(0o644)
    b = bytearray(f.read_bytes())
    b[0] ^= 0x01
    f.write_bytes(bytes(b))
    if not _chattr("+i", obj):
        pytest.skip("chattr +i not available here (needs root and a filesystem with the immutable flag)")
    ok = False
    try:
        r = ws.cli("--force", "words:demo/a")
        assert_no_traceback(r.out, r.err)
        assert r.code == 2, (r.code, r.out, r.err)
        err = one_logical_line(r.err)
        assert err.startswith("error: ") and key in err and "read:demo" in err and "cannot be moved" in err, err
        assert str(obj) in err, err  # says what to remove
        assert r.ran == []
        r = ws.cli("cache", "verify")
        assert_no_traceback(r.out, r.err)
        assert r.code == 1, (r.code, r.out, r.err)
        out = one_logical_line(r.out)
        assert key in out and "cannot be moved" in out, out
        assert "verified 4 objects: 3 ok, 0 quarantined, 1 corrupt that could not be moved aside" in out, out
        ok = True
    finally:
        _chattr("-i", obj)
        record("corruption", "corrupt object that cannot be moved aside (chattr +i)", ok)
    # once the user has removed it by hand, the next build rebuilds it
    shutil.rmtree(obj)
    r = ws.cli()
    assert r.code == 0 and r.ran == ["read:demo"], r.out + r.err
    assert json.loads((ws.root / "out" / "text:demo" / "summary.json").read_text())
