"""End-to-end: the real CLI on the engine's test stages."""

from __future__ import annotations

import json
import os
import time
import subprocess
import sys
from pathlib import Path

from genesis_build.state import RACY_NS
from genesis_testlib import Workspace

NODES = {"read:demo", "words:demo/a", "words:demo/e", "count:demo"}


def test_build_then_noop(ws: Workspace) -> None:
    r = ws.cli()
    assert r.code == 0, r.err
    assert set(r.ran) == NODES
    summary = json.loads((ws.root / "out" / "text:demo" / "summary.json").read_text())
    assert summary == {"words": 6, "per_letter": {"a": 3, "e": 4}}
    again = ws.cli()
    assert again.code == 0 and again.ran == []
    assert {n["state"] for n in ws.status().values()} == {"cached"}


def test_build_line_shows_the_stages_summary_stat_only_when_it_ran(ws: Workspace) -> None:
    r = ws.cli()
    assert r.code == 0, r.err
    line = next(ln for ln in r.out.splitlines() if "count:demo" in ln and "built" in ln)
    assert line.startswith("✓ count:demo built in") and line.endswith("s: 6 words, 2 letters counted"), line
    # a stage without a summary stat gets the plain line
    read = next(ln for ln in r.out.splitlines() if "read:demo" in ln and "built" in ln)
    assert read.startswith("✓ read:demo built in") and read.endswith("s"), read
    # read reruns with identical output, so count stays cached and claims no work it did not do
    again = ws.cli("--force", "read:demo")
    assert again.code == 0 and "letters counted" not in again.out, again.out


def test_spec_edit_reruns_only_what_reads_it_with_named_reason(ws: Workspace) -> None:
    assert ws.cli().code == 0
    ws.write_spec("demo", '# a comment\nfiles = ["data/*.txt"]\nnote = "another note"   # not read by any stage\n\n[shape]\nupper = false\n')
    assert all(n["state"] == "cached" for n in ws.status().values())  # comments/unread fields change no key
    ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nupper = false\nrepeat = 2\n')
    st = ws.status()
    assert st["read:demo"]["state"] == "stale"
    assert st["read:demo"]["reason"] == "spec field text.shape.repeat changed 1→2"
    assert st["count:demo"]["state"] == "waiting" and st["count:demo"]["key"] is None
    why = ws.cli("why", "read:demo")
    assert "spec field text.shape.repeat changed 1→2" in why.out
    r = ws.cli()
    assert r.code == 0 and set(r.ran) == NODES


def test_dry_run_says_plainly_why_a_node_waits(ws: Workspace) -> None:
    assert ws.cli().code == 0
    ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nupper = false\nrepeat = 2\n')
    st = ws.status()
    assert st["words:demo/a"]["reason"] == "because input read:demo will be rebuilt"
    assert st["count:demo"]["reason"] == "because inputs read:demo, words:demo/a and 1 more will be rebuilt"
    tree = ws.cli("--dry-run", env={"COLUMNS": "200"}).out
    # the label comes first, then the node: the node is not mistaken for one of its inputs
    assert "will run (after its inputs) count:demo — because inputs read:demo, words:demo/a and 1 more will be rebuilt" in tree, tree
    assert "stale → will run read:demo" in tree, tree
    why = ws.cli("why", "count:demo", env={"COLUMNS": "200"}).out
    assert why.startswith("count:demo: will run (after its inputs)") and "- input read:demo: stale → will run" in why, why


def test_early_cutoff_when_output_is_identical(ws: Workspace) -> None:
    assert ws.cli().code == 0
    # same words in a different file split: read's output is the concatenation, identical bytes
    (ws.root / "data" / "a.txt").write_text("apple banana cherry\ndate ")
    (ws.root / "data" / "b.txt").write_text("elderberry fig\n")
    r = ws.cli()
    assert r.code == 0 and r.ran == ["read:demo"]


def test_touch_rehashes_but_reruns_nothing(ws: Workspace) -> None:
    assert ws.cli().code == 0
    for f in (ws.root / "data").iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert all(n["state"] == "cached" for n in ws.status().values())
    assert ws.cli().ran == []


def test_added_file_names_the_file(ws: Workspace) -> None:
    assert ws.cli().code == 0
    (ws.root / "data" / "c.txt").write_text("grape\n")
    assert ws.status()["read:demo"]["reason"] == "file data/c.txt added"


def test_every_node_is_a_target_and_parts_expand(ws: Workspace) -> None:
    r = ws.cli("words:demo/a")
    assert r.code == 0 and sorted(r.ran) == ["read:demo", "words:demo/a"]
    r = ws.cli("words:demo")
    assert r.ran == ["words:demo/e"]
    bad = ws.cli("words:demo/z")
    assert bad.code == 2 and "no part 'z'" in bad.err


def test_force_rebuilds_only_that_node(ws: Workspace) -> None:
    assert ws.cli().code == 0
    r = ws.cli("--force", "words:demo/a")
    assert r.code == 0 and r.ran == ["words:demo/a"]


def test_failure_keep_going_and_no_partial_object(ws: Workspace) -> None:
    ws.write_spec("demo", 'files = ["data/*.txt"]\n')
    ws.write_spec("broken", 'files = ["data/a.txt"]\nfail = true\n')
    r = ws.cli("text:broken", "read:demo", "-k")
    assert r.code == 2 and "read:broken: asked to fail" in r.err
    assert "read:demo" in r.ran
    st = ws.status("text:broken")
    assert st["read:broken"]["state"] == "missing"
    assert not any((ws.root / "cache" / "tmp").iterdir())


def test_bad_spec_is_one_line_exit_2_and_cache_untouched(ws: Workspace) -> None:
    assert ws.cli().code == 0
    before = ws.cache_snapshot()
    ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nuper = true\n')
    r = ws.cli()
    assert r.code == 2
    assert r.err.strip() == "error: specs/text/demo.toml:3: text.shape.uper: unknown field (did you mean upper?)"
    assert "Traceback" not in r.err + r.out
    assert ws.cache_snapshot() == before
    ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nrepeat = 1000\n')  # the stage's own check hook
    r = ws.cli("--dry-run")
    assert r.code == 2 and r.err.strip() == "error: specs/text/demo.toml:3: text.shape.repeat: must be at most 100"


def test_graph_show_and_cache_commands(ws: Workspace) -> None:
    assert ws.cli().code == 0
    dot = ws.cli("graph", "--format", "dot").out
    assert '"read:demo" -> "words:demo/a"' in dot
    mer = ws.cli("graph", "--format", "mermaid").out
    assert mer.startswith("graph LR") and mer.count("-->") == 5
    js = json.loads(ws.cli("graph", "--format", "json").out)
    assert {n["id"] for n in js["nodes"]} == NODES
    show = ws.cli("show", "read:demo")
    assert show.code == 0 and "chars: 40" in show.out and str(ws.root / "cache" / "objects") in show.out
    ls = ws.cli("cache", "ls")
    assert ls.code == 0 and "count:demo" in ls.out
    du = ws.cli("cache", "du")
    assert "words" in du.out and "total" in du.out
    ver = ws.cli("cache", "verify")
    assert ver.code == 0 and "4 ok, 0 quarantined" in ver.out


def test_manifest_records_what_the_issue_lists(ws: Workspace) -> None:
    assert ws.cli().code == 0
    key = ws.status()["read:demo"]["key"]
    m = json.loads((ws.root / "cache" / "objects" / key[:2] / key / "manifest.json").read_text())
    for field in ("key", "stage", "version", "spec", "inputs", "files", "outputs", "wall_time_s", "peak_rss_mb",
                  "host", "genesis_build", "git_commit", "output_digest"):
        assert field in m, field
    assert m["spec"] == {"text.shape": {"upper": False, "repeat": 1}}
    assert set(m["files"]) == {"data/a.txt", "data/b.txt"}
    assert m["outputs"][0]["path"] == "all.txt" and m["outputs"][0]["size"] == 40


def test_verify_quarantines_a_corrupted_object_and_build_replaces_it(ws: Workspace) -> None:
    assert ws.cli().code == 0
    key = ws.status()["read:demo"]["key"]
    f = ws.root / "cache" / "objects" / key[:2] / key / "data" / "all.txt"
    os.chmod(f, 0o644)
    data = bytearray(f.read_bytes())
    data[3] ^= 0xFF
    f.write_bytes(bytes(data))
    r = ws.cli("cache", "verify")
    assert r.code == 1 and "content digest mismatch" in r.out and "1 quarantined" in r.out
    assert any((ws.root / "cache" / "quarantine").iterdir())
    r = ws.cli()
    assert r.ran == ["read:demo"]  # rebuilt; its output equals the old one, so nothing downstream reruns


def test_truncated_object_is_caught_before_use(ws: Workspace) -> None:
    assert ws.cli().code == 0
    key = ws.status()["read:demo"]["key"]
    f = ws.root / "cache" / "objects" / key[:2] / key / "data" / "all.txt"
    os.chmod(f, 0o644)
    f.write_text("x")
    r = ws.cli()
    assert r.code == 0 and r.ran == ["read:demo"] and "quarantined" in r.out


def test_gc_keeps_referenced_objects(ws: Workspace) -> None:
    assert ws.cli().code == 0
    ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nupper = true\n')
    assert ws.cli().code == 0  # 4 new objects; the 4 old ones are no longer referenced
    young = ws.cli("cache", "gc", "--keep-days", "1", "--dry-run")
    assert "would delete 0 objects" in young.out
    dry = ws.cli("cache", "gc", "--dry-run")
    assert "would delete 4 objects" in dry.out and "kept 4 referenced" in dry.out
    assert len(list((ws.root / "cache" / "objects").glob("*/*"))) == 8  # dry run deleted nothing
    assert ws.cli("cache", "gc").code == 0
    assert len(list((ws.root / "cache" / "objects").glob("*/*"))) == 4
    assert ws.cli().ran == []  # what the workspace points at survived
    assert "would delete 4 objects" in ws.cli("cache", "gc", "--all", "--dry-run").out


def test_gc_removes_old_run_dirs_and_samples_but_not_a_locked_run(ws: Workspace) -> None:
    import fcntl

    assert ws.cli().code == 0
    cache = ws.root / "cache"
    old = time.time() - 3 * 86400
    runs = {}
    for name in ("abandoned", "training-now"):
        d = cache / "runs" / name / "checkpoints"
        d.mkdir(parents=True)
        (d / "shard.bin").write_bytes(b"x" * 1000)
        for p in (d / "shard.bin", d, d.parent):
            os.utime(p, (old, old))
        runs[name] = d.parent
    stale, reused = cache / "samples" / "cai" / "ab" / "stale.json", cache / "samples" / "cai" / "cd" / "reused.json"
    for f in (stale, reused):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
        os.utime(f, (old, old))
    os.utime(reused, (time.time(), old))  # a stage reused it today (atime)
    (cache / "locks").mkdir(exist_ok=True)
    fd = os.open(cache / "locks" / "run-training-now.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a trainer holds its run dir
    try:
        dry = ws.cli("cache", "gc", "--keep-days", "1", "--dry-run")
        assert "would delete runs/abandoned (run dir)" in dry.out and "training-now" not in dry.out, dry.out
        assert "1 run dirs and 1 samples" in dry.out and runs["abandoned"].is_dir() and stale.is_file()
        assert ws.cli("cache", "gc", "--keep-days", "1").code == 0
    finally:
        os.close(fd)
    assert not runs["abandoned"].exists() and runs["training-now"].is_dir()
    assert not stale.exists() and reused.is_file()


def test_source_change_without_version_bump_warns(ws: Workspace) -> None:
    assert ws.cli().code == 0
    src = ws.root / "teststages.py"
    src.write_text(src.read_text() + "\n# changed behaviour, forgot the version bump\n")
    r = ws.cli("--dry-run")
    assert "source changed" in r.out and "bump `version`" in r.out
    r = ws.cli()
    assert "source changed" in r.out and r.ran == []


def test_help_and_dry_run_do_not_import_torch(ws: Workspace) -> None:
    code = ("import sys, runpy; sys.argv=['genesis-build', '--dry-run'];\n"
            "from genesis_build.cli import main; rc = main(['--dry-run']); main(['--help']) if False else None;\n"
            "print('HEAVY', [m for m in ('torch','transformers','datasets','tokenizers') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], cwd=ws.root, capture_output=True, text=True)
    assert "HEAVY []" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", "import sys\nfrom genesis_build.cli import main\ntry:\n main(['--help'])\n"
                        "except SystemExit: pass\nprint('HEAVY', [m for m in ('torch','transformers') if m in sys.modules])"],
                       capture_output=True, text=True)
    assert "HEAVY []" in p.stdout and "genesis-build why NODE" in p.stdout


def test_init_writes_a_workspace(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "genesis_build.cli", "init", str(tmp_path / "new")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert 'default = "model:tiny"' in (tmp_path / "new" / "genesis.toml").read_text()
    again = subprocess.run([sys.executable, "-m", "genesis_build.cli", "init", str(tmp_path / "new")], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_cache_dir_overrides(ws: Workspace, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    r = ws.cli(env={"GENESIS_CACHE": str(other)})
    assert r.code == 0 and (other / "objects").is_dir() and not (ws.root / "cache").exists()
    r = ws.cli("--cache", str(tmp_path / "third"))
    assert (tmp_path / "third" / "objects").is_dir() and set(r.ran) == NODES


def test_noop_fast_path_answers_like_the_full_path_and_notices_changes(ws: Workspace) -> None:
    assert ws.cli().code == 0
    # just-written files are "racy" (a same-size edit in the same timestamp tick would not show):
    # no no-op record vouches for them until they are older than the window
    assert ws.cli("--dry-run", env={"GENESIS_NO_FASTPATH": "1"}).code == 0
    assert not list((ws.root / ".genesis" / "noop").glob("*.json"))
    time.sleep(RACY_NS / 1e9 + 0.2)
    full = ws.cli("--dry-run", env={"GENESIS_NO_FASTPATH": "1"})
    assert full.code == 0 and list((ws.root / ".genesis" / "noop").glob("*.json"))
    fast = ws.cli("--dry-run")
    assert fast.out == full.out
    # every kind of change must fall back to the full path: a new file in a globbed dir, a spec edit,
    # a stage source edit, a deleted object
    (ws.root / "data" / "c.txt").write_text("grape\n")
    assert ws.status()["read:demo"]["state"] == "stale"
    (ws.root / "data" / "c.txt").unlink()
    assert ws.status()["read:demo"]["state"] == "cached"
    ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nupper = true\n')
    assert ws.status()["read:demo"]["state"] == "stale"
    ws.write_spec("demo", 'files = ["data/*.txt"]\nnote = "hello"\n\n[shape]\nupper = false\n')
    assert ws.status()["read:demo"]["state"] == "cached"
    key = ws.status()["count:demo"]["key"]
    import shutil

    shutil.rmtree(ws.root / "cache" / "objects" / key[:2] / key)
    assert ws.status()["count:demo"]["state"] == "missing"


def test_file_inputs_may_not_escape_the_workspace(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    ws.write_spec("demo", f'files = ["{outside}/secret.txt"]\n')
    r = ws.cli("read:demo")
    assert r.code == 2 and "is outside the workspace" in r.err and "allow_paths" in r.err
    ws.write_spec("demo", 'files = ["../outside/secret.txt"]\n')
    assert "is outside the workspace" in ws.cli("read:demo").err
    os.symlink(outside / "secret.txt", ws.root / "data" / "link.txt")  # a symlink out of the workspace
    ws.write_spec("demo", 'files = ["data/*.txt"]\n')
    r = ws.cli("read:demo")
    assert r.code == 2 and "link.txt →" in r.err
    (ws.root / "data" / "link.txt").unlink()
    (ws.root / "genesis.toml").write_text((ws.root / "genesis.toml").read_text() + 'allow_paths = ["../outside"]\n')
    ws.write_spec("demo", f'files = ["{outside}/secret.txt"]\n')
    r = ws.cli("read:demo")
    assert r.code == 0 and r.ran == ["read:demo"]
