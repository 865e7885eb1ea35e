"""Invalid build options fail the same way with and without the stat-only no-op fast path (finding 7)
and ``genesis.toml`` values of the wrong type give one located line, never a traceback (finding 5)."""

from __future__ import annotations

import pytest

from rel_helpers import RelWorkspace, assert_no_traceback, one_logical_line, record, rws  # noqa: F401 (fixture)

BAD_JOBS = [("-j", "0"), ("--jobs", "-3"), ("-j", "abc"), ("--jobs=0",), ("-j", "2.5"), ("-w", "0"), ("--workers=x",)]


@pytest.mark.parametrize("args", BAD_JOBS, ids=lambda a: " ".join(a))
def test_bad_jobs_rejected_on_both_paths(rws: RelWorkspace, args: tuple[str, ...]) -> None:
    rws.write_spec("demo", 'files = ["data/*.txt"]\n')
    assert rws.cli().code == 0
    assert rws.cli().code == 0  # the second (no-op) build records the fast-path answer
    ok = True
    try:
        for env in ({}, {"GENESIS_NO_FASTPATH": "1"}):
            r = rws.cli(*args, env=env)
            assert r.code == 2, (env, r.code, r.out, r.err)
            assert_no_traceback(r.out, r.err)
            option = "workers" if args[0].startswith(("-w", "--workers")) else "jobs"
            assert option in r.err and "at least 1" in one_logical_line(r.err), r.err
            assert r.ran == []
        # a valid value still takes the fast path answer
        assert rws.cli("-j", "2").code == 0 and rws.cli("-w", "2").code == 0
    except AssertionError:
        ok = False
        raise
    finally:
        record("cli_options", f"jobs {' '.join(args)}", ok)


BAD_TOML = [
    ('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "relstages"]\ncache = 5\n', 4, "workspace.cache"),
    ('[workspace]\ndefault = 5\nplugins = ["teststages", "relstages"]\n', 2, "workspace.default"),
    ('[workspace]\ndefault = "text:demo"\nplugins = "stages"\n', 3, "workspace.plugins"),
    ('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "relstages"]\nallow_paths = 3\n', 4, "workspace.allow_paths"),
    ('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", 7]\n', 3, "workspace.plugins[1]"),
    ('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "relstages"]\n\n[remote]\nurl = 5\n', 6, "remote.url"),
    ('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "relstages"]\n\n[remote]\nurl = "file:///tmp/x"\npush = "yes"\n',
     7, "remote.push"),
    ('[workspace]\ndefault = "text:demo"\nplugins = ["teststages", "relstages"]\n\n[remote]\nurl = "file:///tmp/x"\noptions = 3\n',
     7, "remote.options"),
    ('workspace = 3\n', 1, "workspace"),
]


@pytest.mark.parametrize("text,line,field", BAD_TOML, ids=[b[2] for b in BAD_TOML])
@pytest.mark.parametrize("command", [(), ("--dry-run",), ("cache", "ls")], ids=["build", "dry-run", "cache-ls"])
def test_wrong_types_in_genesis_toml_give_one_located_line(rws: RelWorkspace, text: str, line: int, field: str,
                                                            command: tuple[str, ...]) -> None:
    (rws.root / "genesis.toml").write_text(text)
    r = rws.cli(*command)
    ok = False
    try:
        assert r.code == 2, (r.code, r.out, r.err)
        assert_no_traceback(r.out, r.err)
        msg = one_logical_line(r.err)
        assert msg.startswith(f"error: genesis.toml:{line}: {field}: "), msg
        assert len(r.err.strip().splitlines()) <= 2, r.err  # one line (rich may wrap it once)
        assert not (rws.root / "cache").exists()
        ok = True
    finally:
        record("config", f"genesis.toml {field} {' '.join(command) or 'build'}", ok)
