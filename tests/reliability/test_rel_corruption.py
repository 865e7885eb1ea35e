"""A damaged cache: detected before use and by ``cache verify``, quarantined, rebuilt — never used.

Complements tests/engine/test_build_cli.py (which covers a flipped byte found by ``cache verify`` and a
truncated file found before use) with: a deleted manifest, an unreadable manifest, manifest paths that
escape the object (``..``, absolute), a data file swapped for a symlink, a file nobody listed, and a
same-size byte flip in an input that a consumer is about to read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rel_helpers import RelWorkspace, assert_no_traceback, node_objects, objects, one_logical_line, record

pytestmark = pytest.mark.slow

SPEC = 'files = ["data/*.txt"]\n'


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One built workspace; each test gets a copy (same keys: nothing in a key depends on the path)."""
    ws = RelWorkspace(tmp_path_factory.mktemp("corruption-template") / "ws")
    ws.write_spec("demo", SPEC)
    r = ws.cli()
    assert r.code == 0, r.err
    return ws.root


@pytest.fixture
def built(template: Path, tmp_path: Path) -> RelWorkspace:
    root = tmp_path / "ws"
    shutil.copytree(template, root, symlinks=True, ignore=shutil.ignore_patterns("out", ".genesis", "locks"))
    ws = RelWorkspace.__new__(RelWorkspace)
    ws.root, ws.runlog = root, root / "runlog.txt"
    ws.runlog.write_text("")
    return ws


def _obj(ws: RelWorkspace, node: str) -> Path:
    m = node_objects(ws.cache)[node]
    return ws.cache / "objects" / m["key"][:2] / m["key"]


def _writable(p: Path) -> None:
    os.chmod(p, 0o644)


def _expected_words_a(ws: RelWorkspace) -> int:
    return json.loads((_obj(ws, "words:demo/a") / "data" / "n.json").read_text())["n"]


def _rebuilt_on_use(ws: RelWorkspace, case: str, expect_quarantine: bool = True) -> None:
    """Force the consumer of read:demo: the damaged read:demo must be caught, quarantined and rebuilt,
    and the consumer must compute the same result as before."""
    want = _expected_words_a(ws)
    r = ws.cli("--force", "words:demo/a")
    try:
        assert r.code == 0, r.out + r.err
        assert_no_traceback(r.out, r.err)
        assert r.ran == ["read:demo", "words:demo/a"], r.ran
        if expect_quarantine:
            assert "quarantined" in one_logical_line(r.out), r.out
            assert any((ws.cache / "quarantine").iterdir())
        assert _expected_words_a(ws) == want
        ver = ws.cli("cache", "verify")
        assert ver.code == 0 and "0 quarantined" in ver.out, ver.out
        assert all(isinstance(m, dict) for m in objects(ws.cache).values())
    except AssertionError:
        record("corruption", case, False)
        raise
    record("corruption", case, True)


def test_deleted_manifest_means_no_object_and_is_rebuilt(built: RelWorkspace) -> None:
    obj = _obj(built, "read:demo")
    _writable(obj / "manifest.json")
    (obj / "manifest.json").unlink()
    assert built.status()["read:demo"]["state"] == "missing"
    _rebuilt_on_use(built, "manifest deleted", expect_quarantine=False)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_unreadable_manifest_is_quarantined_on_use(built: RelWorkspace, how: str) -> None:
    m = _obj(built, "read:demo") / "manifest.json"
    _writable(m)
    m.write_text("not json {" if how == "garbage" else m.read_text()[:40])
    _rebuilt_on_use(built, f"manifest {how}")


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_unreadable_manifest_is_found_by_verify(built: RelWorkspace, how: str) -> None:
    m = _obj(built, "read:demo") / "manifest.json"
    _writable(m)
    m.write_text("not json {" if how == "garbage" else m.read_text()[:40])
    r = built.cli("cache", "verify")
    out = one_logical_line(r.out)
    ok = r.code == 1 and "manifest missing or unreadable" in out and "1 quarantined" in out
    record("corruption", f"manifest {how} (cache verify)", ok)
    assert ok, r.out + r.err
    assert built.cli().code == 0 and built.cli("cache", "verify").code == 0


@pytest.mark.parametrize("escape", ["../../../../../../etc/hostname", "/etc/hostname", "../manifest.json"])
def test_manifest_path_escaping_the_object_is_quarantined(built: RelWorkspace, escape: str) -> None:
    obj = _obj(built, "read:demo")
    mp = obj / "manifest.json"
    _writable(mp)
    m = json.loads(mp.read_text())
    m["outputs"][0]["path"] = escape
    mp.write_text(json.dumps(m))
    r = built.cli("cache", "verify")
    out = one_logical_line(r.out)
    ok = r.code == 1 and "escapes the object" in out and "1 quarantined" in out
    record("path_safety", f"manifest path {escape!r} (cache verify)", ok)
    assert ok, r.out
    assert built.cli().code == 0
    # and before use
    obj = _obj(built, "read:demo")
    mp = obj / "manifest.json"
    _writable(mp)
    m = json.loads(mp.read_text())
    m["outputs"][0]["path"] = escape
    mp.write_text(json.dumps(m))
    _rebuilt_on_use(built, f"manifest path {escape!r} (before use)")


def test_data_file_swapped_for_a_symlink_is_caught(built: RelWorkspace, tmp_path: Path) -> None:
    f = _obj(built, "read:demo") / "data" / "all.txt"
    outside = tmp_path / "same-bytes.txt"
    shutil.copy(f, outside)
    os.chmod(f.parent, 0o755)
    f.unlink()
    os.symlink(outside, f)
    r = built.cli("cache", "verify", _obj(built, "read:demo").name)
    ok = r.code == 1 and "is a symlink" in one_logical_line(r.out)
    record("path_safety", "data file swapped for a symlink (cache verify)", ok)
    assert ok, r.out
    assert built.cli().code == 0
    f = _obj(built, "read:demo") / "data" / "all.txt"
    os.chmod(f.parent, 0o755)
    f.unlink()
    os.symlink(outside, f)
    _rebuilt_on_use(built, "data file swapped for a symlink (before use)")


def test_unlisted_file_in_an_object_is_found_by_verify(built: RelWorkspace) -> None:
    data = _obj(built, "read:demo") / "data"
    os.chmod(data, 0o755)
    (data / "smuggled.txt").write_text("not from the stage\n")
    r = built.cli("cache", "verify")
    ok = r.code == 1 and "smuggled.txt: not in manifest" in one_logical_line(r.out)
    record("corruption", "unlisted file in an object (cache verify)", ok)
    assert ok, r.out
    assert built.cli().code == 0 and built.cli("cache", "verify").code == 0


def test_same_size_byte_flip_is_caught_before_a_consumer_reads_it(built: RelWorkspace) -> None:
    f = _obj(built, "read:demo") / "data" / "all.txt"
    _writable(f)
    data = bytearray(f.read_bytes())
    i = data.index(b"a")  # 'apple' → 'xpple': words containing 'a' drop by one if this is read
    data[i] = ord("x")
    f.write_bytes(bytes(data))
    want = _expected_words_a(built)
    r = built.cli("--force", "words:demo/a")
    caught = "quarantined" in one_logical_line(r.out) and _expected_words_a(built) == want
    record("corruption", "same-size byte flip (before use)", caught)
    assert caught, f"consumer used the corrupted input: n={_expected_words_a(built)} (want {want}); {r.out}"




def test_verify_names_the_corrupt_node(built: RelWorkspace) -> None:
    f = _obj(built, "read:demo") / "data" / "all.txt"
    _writable(f)
    f.write_text("x" * len(f.read_text()))
    r = built.cli("cache", "verify")
    assert r.code == 1 and "(read:demo)" in r.out, r.out
