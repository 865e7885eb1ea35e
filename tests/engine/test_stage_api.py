"""The stage API a plugin sees: hooks get a read-only SpecView, ``run`` gets ``ctx.resolve`` /
``ctx.lookup``, commands get a Session, and declared ``fields`` are checked when a stage registers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from genesis_build.errors import StageDefinitionError
from genesis_build.stage import SpecView, kinds, register_kind, stage, stages

PLUGIN = '''
import json
from genesis_build.stage import command, stage


def _inputs(view, part):
    return {"text": f"read:{view.name}"}


def _describe(view):
    other = view.resolve(view.spec.upstream) if view.spec.upstream else None
    return [("view", f"{view.address} name={view.name} kind={view.kind} ws={view.workspace.name}"),
            ("upstream note", other.note if other else "-")]


@stage("peek", version=1, kind="text", fields=("note",), inputs=_inputs, describe=_describe)
def peek(ctx):
    """Record what the run-time Context offers beyond the inputs."""
    text = ctx.inputs["text"]
    by_key = ctx.lookup(key=text.manifest["key"])
    last = ctx.lookup("read:" + ctx.spec_name)
    (ctx.out / "peek.json").write_text(json.dumps({
        "address": ctx.address,
        "upstream_note": ctx.resolve(ctx.spec.upstream).note if ctx.spec.upstream else None,
        "by_key": [by_key.node, str(by_key.path)],
        "last_read": str(last.path),
        "input_path": str(text.path),
        "missing": ctx.lookup("read:never") is None,
        "view_name": ctx.view.name,
    }))


def _args(p):
    p.add_argument("target")
    p.add_argument("--upstream-of", default=None)


@command("peek-info", help="print what a command's session sees", configure=_args)
def peek_info(args, session):
    node = session.node(args.target)
    built = session.built(args.target)
    session.print(f"node={node.id} stage={node.stage} name={node.view.name} [not markup]")
    session.print("built=" + json.loads((built.path / "peek.json").read_text())["address"])
    session.print(f"lookup={session.lookup(node.id).path == built.path} missing={session.lookup('peek:nope') is None}")
    session.print(f"resolve={session.resolve('text:other').note} ws={session.workspace.name}")
    return 3
'''


@pytest.fixture
def api_ws(ws):
    (ws.root / "apiplug.py").write_text(PLUGIN)
    (ws.root / "genesis.toml").write_text('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "apiplug"]\n')
    ws.write_spec("other", 'note = "from other"\n')
    ws.write_spec("demo", 'files = ["data/*.txt"]\nnote = "hello"\nupstream = "text:other"\n')
    return ws


def test_hooks_get_a_view_and_run_gets_resolve_and_lookup(api_ws) -> None:
    r = api_ws.cli("--dry-run", "peek:demo")
    assert r.code == 0, r.err
    assert "view: text:demo name=demo kind=text ws=ws" in r.out
    assert "upstream note: from other" in r.out
    r = api_ws.cli("peek:demo")
    assert r.code == 0, r.err + r.out
    got = json.loads((api_ws.root / "out" / "peek:demo" / "peek.json").read_text())
    assert got["address"] == "text:demo" and got["view_name"] == "demo"
    assert got["upstream_note"] == "from other"  # ctx.resolve: the engine's loader, in the worker
    assert got["by_key"] == ["read:demo", got["input_path"]]  # lookup(key=…) finds the input's object
    assert got["last_read"] == got["input_path"]  # lookup(node) finds what this workspace last built
    assert got["missing"] is True


def test_plugin_command_gets_a_session(api_ws) -> None:
    r = api_ws.cli("peek-info", "peek:demo")
    assert r.code == 2 and "peek:demo is not built" in r.err and "genesis-build peek:demo" in r.err
    assert api_ws.cli("peek:demo").code == 0
    r = api_ws.cli("peek-info", "peek:demo")
    assert r.code == 3, r.err  # the command's exit code is the CLI's
    assert "node=peek:demo stage=peek name=demo [not markup]" in r.out
    assert "built=text:demo" in r.out
    assert "lookup=True missing=True" in r.out
    assert "resolve=from other ws=ws" in r.out
    r = api_ws.cli("peek-info", "--help")
    assert r.code == 0 and "print what a command's session sees" in r.out and "--upstream-of" in r.out
    r = api_ws.cli("peek-inf", "peek:demo")
    assert r.code == 2 and "did you mean peek-info?" in r.err and "Traceback" not in r.err


def test_a_mistyped_field_is_one_line_naming_the_stage_and_field(ws) -> None:
    (ws.root / "badplug.py").write_text('from genesis_build.stage import stage\n\n'
                                        '@stage("bad", version=1, kind="text", fields=("shape.repeet",))\n'
                                        'def bad(ctx):\n    """Never runs."""\n')
    (ws.root / "genesis.toml").write_text('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "badplug"]\n')
    before = ws.cache_snapshot()
    r = ws.cli("--dry-run")
    assert r.code == 2 and "Traceback" not in r.err
    assert "stage bad (badplug): fields: 'shape.repeet': no field 'repeet' in shape (did you mean repeat?)" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert ws.cache_snapshot() == before


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = 1
    table: dict = {}


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: _Inner = _Inner()
    items: list[_Inner] = []
    ref: str | None = None


def _cleanup(*names: str) -> None:
    for n in names:
        stages().pop(n, None)
        kinds().pop(n, None)


def test_fields_are_checked_at_registration_including_nested_and_referenced_models() -> None:
    try:
        register_kind("apitest", _Outer)

        @stage("apitest-ok", version=1, kind="apitest", fields=("inner.depth", "items.0.depth", "inner.table.anything"))
        def ok(ctx) -> None:
            """Fine: nested model, list index, below a plain dict."""

        assert "apitest-ok" in stages()
        with pytest.raises(StageDefinitionError, match=r"stage apitest-bad .*'inner\.dept': no field 'dept' in inner "
                                                       r"\(did you mean depth\?\)"):
            @stage("apitest-bad", version=1, kind="apitest", fields=("inner.dept",))
            def bad(ctx) -> None:
                """Typo."""
        assert "apitest-bad" not in stages()  # not left half-registered

        # the stage registers before its kind (plugin import order): checked when the kind arrives
        @stage("apitest-early", version=1, kind="apitest2", fields=("innr",))
        def early(ctx) -> None:
            """Its kind is not registered yet."""

        with pytest.raises(StageDefinitionError, match=r"stage apitest-early .*'innr'.*did you mean inner\?"):
            register_kind("apitest2", _Outer)
        assert "apitest-early" not in stages()

        # @ref.path: the path is checked in the kind the reference names
        @stage("apitest-ref", version=1, kind="apitest", fields=("@ref.depht",))
        def ref(ctx) -> None:
            """References a kind called `ref`."""

        assert "apitest-ref" in stages()  # kind `ref` unknown yet
        with pytest.raises(StageDefinitionError, match=r"'@ref\.depht': no field 'depht' in _Inner"):
            register_kind("ref", _Inner)
    finally:
        _cleanup("apitest", "apitest2", "ref", "apitest-ok", "apitest-bad", "apitest-early", "apitest-ref")


def test_spec_view_of_a_spec_built_outside_the_engine(tmp_path: Path) -> None:
    seen = []
    view = SpecView.of(_Outer(), "apitest:demo", tmp_path, resolve=lambda a: seen.append(a) or _Inner(depth=7))
    assert (view.name, view.kind, view.address, view.workspace) == ("demo", "apitest", "apitest:demo", tmp_path)
    assert view.resolve("x:y").depth == 7 and seen == ["x:y"]
    with pytest.raises(Exception):
        view.name = "other"  # read-only
