"""The ``pin`` stage hook: key material from outside the workspace (e.g. the commit a hub branch points
at), resolved once per command, shown by ``--dry-run``, recorded in the manifest and given to ``run``
as ``ctx.external``; ``Unresolved`` plans (state ``unresolved``) but makes a build refuse before
anything runs. ``describe(view, part)`` and ``view.lookup`` are exercised by the same plugin."""

from __future__ import annotations

import json

import pytest

PLUGIN = '''
import json
from genesis_build.errors import Unresolved
from genesis_build.stage import stage


def _pin(view, part):
    # upstream.txt stands for something outside the workspace (a hub branch): not a file input
    f = view.workspace / "upstream.txt"
    with open(view.workspace / "pin-calls.txt", "a") as log:
        log.write(view.address + "\\n")
    if not f.exists():
        raise Unresolved("upstream unreachable; pin it: commit = \\"<sha>\\"")
    return {"commit": f.read_text().strip()}


def _describe(view, part):
    last = view.lookup("pinned:" + view.name)
    return [("part", str(part)), ("last commit", last.manifest["external"]["commit"] if last else "-")]


@stage("pinned", version=1, kind="text", fields=("note",), pin=_pin, describe=_describe)
def pinned(ctx):
    """Write what the pin resolved."""
    (ctx.out / "got.json").write_text(json.dumps(ctx.external))


@stage("after", version=1, kind="text", fields=("note",), inputs=lambda view, part: {"p": f"pinned:{view.name}"})
def after(ctx):
    """Downstream of a pinned node."""
    (ctx.out / "x.txt").write_text("x")
'''


@pytest.fixture
def pin_ws(ws):
    (ws.root / "pinplug.py").write_text(PLUGIN)
    (ws.root / "genesis.toml").write_text('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "pinplug"]\n')
    return ws


def _calls(ws) -> int:
    f = ws.root / "pin-calls.txt"
    return len(f.read_text().splitlines()) if f.exists() else 0


def test_unresolved_plans_but_the_build_refuses_with_one_line(pin_ws) -> None:
    both = pin_ws.status("after:demo")
    st = both["pinned:demo"]
    assert st["state"] == "unresolved" and st["key"] is None
    assert 'pin it: commit = "<sha>"' in st["reason"]
    assert both["after:demo"]["state"] == "waiting" and "unresolved input pinned:demo" in both["after:demo"]["reason"]
    r = pin_ws.cli("pinned:demo")
    assert r.code == 2, r.out + r.err
    assert r.err.strip().count("\n") == 0 and "Traceback" not in r.err
    assert 'pinned:demo: upstream unreachable; pin it: commit = "<sha>"' in r.err
    assert not (pin_ws.root / "cache").exists() and pin_ws.cache_snapshot() == {}  # cache untouched


def test_pin_is_key_material_resolved_once_per_command_and_reaches_run(pin_ws) -> None:
    (pin_ws.root / "upstream.txt").write_text("aaa\n")
    r = pin_ws.cli("pinned:demo")
    assert r.code == 0, r.err
    assert _calls(pin_ws) == 1  # preflight, key, refs: one call
    assert json.loads((pin_ws.root / "out" / "pinned:demo" / "got.json").read_text()) == {"commit": "aaa"}
    manifest = json.loads((pin_ws.root / "out" / "pinned:demo").resolve().parent.joinpath("manifest.json").read_text())
    assert manifest["external"] == {"commit": "aaa"}
    st = pin_ws.status("pinned:demo")["pinned:demo"]
    assert st["state"] == "cached"
    assert {"label": "last commit", "value": "aaa"} in st["details"] and {"label": "part", "value": "None"} in st["details"]
    # the outside thing moves: a new key, and `why`-style reason naming it
    (pin_ws.root / "upstream.txt").write_text("bbb\n")
    calls = _calls(pin_ws)
    st2 = pin_ws.status("pinned:demo")["pinned:demo"]
    assert _calls(pin_ws) == calls + 1  # no stat-only fast path answered: it cannot see upstream move
    assert st2["state"] == "stale" and st2["key"] != st["key"]
    assert "external commit changed 'aaa'→'bbb'" in st2["reason"]


def test_stages_without_pin_keep_their_keys(pin_ws) -> None:
    r = pin_ws.cli("count:demo")
    assert r.code == 0, r.err
    manifest = json.loads((pin_ws.root / "out" / "count:demo").resolve().parent.joinpath("manifest.json").read_text())
    assert "external" not in manifest
    from genesis_build.graph import Project

    project = Project(pin_ws.root, ["teststages", "pinplug"])
    node = project.node("count:demo")
    assert "external" not in project.key_material(node, {}, {})
