"""Remote-cache integrity over a ``file://`` remote (findings 1 and 2 of the second reliability round).

A corrupt remote object must be named in a warning (object and file), rebuilt, and replaced by the next
push; ``cache verify --remote`` finds it, and ``--repair`` fixes it. A ``file://`` URL works as given
(no ``auto_mkdir`` option needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rel_helpers import RelWorkspace, assert_no_traceback, one_logical_line, record

pytestmark = pytest.mark.slow

SPEC = 'files = ["data/*.txt"]\n'


def _ws(tmp_path: Path, remote: Path, name: str = "ws") -> RelWorkspace:
    ws = RelWorkspace(tmp_path / name)
    ws.write_spec("demo", SPEC)
    toml = ws.root / "genesis.toml"
    toml.write_text(toml.read_text() + f'\n[remote]\nurl = "file://{remote}"\n')
    return ws


def _remote_objects(remote: Path) -> dict[str, dict]:
    """node id → remote manifest."""
    out = {}
    for m in remote.glob("objects/*/*/manifest.json"):
        d = json.loads(m.read_text())
        out[d["node"]] = d
    return out


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[0] ^= 0x01
    p.write_bytes(bytes(b))


def test_file_remote_needs_no_auto_mkdir(tmp_path: Path) -> None:
    remote = tmp_path / "shared" / "not-yet-there"
    ws = _ws(tmp_path, remote)
    ok = False
    try:
        r = ws.cli()
        assert r.code == 0, r.out + r.err
        assert_no_traceback(r.out, r.err)
        assert len(_remote_objects(remote)) == 4
        r = ws.cli("cache", "push")
        assert r.code == 0 and "pushed 0 objects" in r.out, r.out + r.err
        ok = True
    finally:
        record("remote", "file:// remote without auto_mkdir", ok)


@pytest.mark.parametrize("damage", ["flipped byte", "manifest path ../../x"])
def test_corrupt_remote_object_is_named_rebuilt_and_replaced(tmp_path: Path, damage: str) -> None:
    remote = tmp_path / "remote"
    a = _ws(tmp_path, remote, "a")
    assert a.cli().code == 0
    m = _remote_objects(remote)["read:demo"]
    key = m["key"]
    obj = remote / "objects" / key[:2] / key
    fname = m["outputs"][0]["path"]
    if damage == "flipped byte":
        _flip(obj / "data" / fname)
    else:
        m2 = dict(m, outputs=[dict(m["outputs"][0], path="../../x"), *m["outputs"][1:]])
        (obj / "manifest.json").write_text(json.dumps(m2))
    b = _ws(tmp_path, remote, "b")
    ok = False
    try:
        # verify --remote finds it (and exits 1) without changing anything
        r = b.cli("cache", "verify", "--remote")
        assert r.code == 1, r.out + r.err
        line = one_logical_line(r.out)
        assert key in line and "corrupt" in line, r.out
        # a pull names the object and the file, and pulls the rest
        r = b.cli("cache", "pull")
        assert_no_traceback(r.out, r.err)
        assert r.code == 0, r.out + r.err
        warn = one_logical_line(r.err + r.out)
        assert "warning" in warn and key in warn and "read:demo" in warn, warn
        assert (fname if damage == "flipped byte" else "../../x") in warn, warn
        assert "pulled 3 objects" in r.out, r.out
        # the build rebuilds it (the consumers are pulled), warns again, and its push replaces the
        # corrupt remote copy; an explicit push from the fresh cache then has nothing left to do
        r = b.cli()
        assert r.code == 0, r.out + r.err
        assert r.ran == ["read:demo"], r.ran
        assert key in one_logical_line(r.out + r.err)
        r = b.cli("cache", "push")
        assert r.code == 0 and "pushed 0 objects" in r.out, r.out + r.err
        r = b.cli("cache", "verify", "--remote")
        assert r.code == 0 and "0 corrupt" in one_logical_line(r.out), r.out + r.err
        c = _ws(tmp_path, remote, "c")
        r = c.cli()
        assert r.code == 0 and r.ran == [] and "4 pulled" in r.out, r.out + r.err
        ok = True
    finally:
        record("remote", f"corrupt remote object ({damage}) named, rebuilt, replaced", ok)


def test_verify_remote_repair(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    a = _ws(tmp_path, remote, "a")
    assert a.cli().code == 0
    objs = _remote_objects(remote)
    good, gone = objs["read:demo"]["key"], objs["count:demo"]["key"]
    _flip(remote / "objects" / good[:2] / good / "data" / objs["read:demo"]["outputs"][0]["path"])
    _flip(remote / "objects" / gone[:2] / gone / "data" / objs["count:demo"]["outputs"][0]["path"])
    b = _ws(tmp_path, remote, "b")
    ok = False
    try:
        # b holds a good copy of read:demo only: that one is re-uploaded, count:demo is removed
        # (built against another remote: a build that meets the corrupt copy replaces it itself)
        assert b.cli("read:demo", env={"GENESIS_REMOTE": f"file://{tmp_path / 'other'}"}).code == 0
        r = b.cli("cache", "verify", "--remote", "--repair")
        assert_no_traceback(r.out, r.err)
        assert r.code == 0, r.out + r.err
        out = one_logical_line(r.out)
        assert "re-uploaded" in out and "removed" in out, out
        assert b.cli("cache", "verify", "--remote").code == 0
        assert "count:demo" not in _remote_objects(remote)
        r = _ws(tmp_path, remote, "c").cli()
        assert r.code == 0 and r.ran == ["count:demo"], r.out + r.err
        ok = True
    finally:
        record("remote", "cache verify --remote --repair", ok)
