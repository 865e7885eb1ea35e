"""Path safety and the cache trust model.

What tests/engine already covers (file inputs: absolute, ``..``, symlinks out of the workspace; remote
manifests escaping an object) is not repeated. Here: targets and spec references that try to climb
out of ``specs/``, globs that climb out of the workspace, stage outputs that are symlinks, and a
source scan of ``stages/`` for loaders that would unpickle cache contents.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from rel_helpers import REPO, RelWorkspace, assert_no_traceback, node_objects, record, tree_snapshot

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(tmp_path: Path) -> RelWorkspace:
    w = RelWorkspace(tmp_path / "ws")
    w.write_spec("demo", 'files = ["data/*.txt"]\n')
    assert w.cli("read:demo").code == 0
    return w


def _outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir(exist_ok=True)
    (d / "secret.txt").write_text("top secret\n")
    (d / "evil.toml").write_text('files = ["../outside/secret.txt"]\n')
    return d


BAD_TARGETS = ["read:../../outside/evil", "text:..", "read:demo/../../x", "words:demo/../../../x",
               "count:..%2f..", "read:.", "read:~root"]


def test_targets_that_climb_out_of_specs_are_rejected(ws: RelWorkspace, tmp_path: Path) -> None:
    _outside(tmp_path)
    parent = tree_snapshot(tmp_path)
    for i, t in enumerate(BAD_TARGETS):
        for args in (("--dry-run", t),) + (((t,),) if i < 2 else ()):  # two of them as real builds too
            r = ws.cli(*args)
            ok = r.code == 2 and len(r.err.strip().splitlines()) == 1 and r.err.startswith("error:")
            record("path_safety", f"target {' '.join(args)}", ok)
            assert ok, f"{args}: {r.code} {r.out}{r.err}"
            assert_no_traceback(r.out, r.err)
    after = tree_snapshot(tmp_path)
    changed = {k for k in after.keys() ^ parent.keys() if "/.genesis/" not in f"/{k}"}
    assert not [k for k in changed if not k.startswith("ws/")], changed


@pytest.mark.parametrize("case", ["target read:/etc/passwd", "spec value [/x]", "error on line 100",
                                  "file outside the workspace"])
def test_error_text_that_looks_like_markup_is_printed_verbatim(tmp_path: Path, case: str) -> None:
    ws = RelWorkspace(tmp_path / "ws")
    expect = {"spec value [/x]": "(got '[/x] [bold]')", "error on line 100": "specs/text/demo.toml:100: text.shape.uper",
              "file outside the workspace": "[workspace] allow_paths"}.get(case)
    if case.startswith("target"):
        r = ws.cli("--dry-run", case.split()[1])
    elif case.startswith("spec value"):
        ws.write_spec("demo", 'files = ["data/*.txt"]\n[shape]\nupper = "[/x] [bold]"\n')
        r = ws.cli("--dry-run")
    elif case.startswith("error on line"):
        ws.write_spec("demo", 'files = ["data/*.txt"]\n' + "# padding\n" * 97 + "[shape]\nuper = true\n")
        r = ws.cli("--dry-run")
    else:
        ws.write_spec("demo", f'files = ["{_outside(tmp_path)}/secret.txt"]\n')
        r = ws.cli("--dry-run")
    ok = r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.out + r.err \
        and (expect is None or expect in r.err)
    record("path_safety", f"error text printed verbatim: {case}", ok, rc=r.code)
    assert ok, r.err[-1500:]


SPEC_REFS = ['extends = "text:../../outside/evil"', 'extends = "text:/etc/passwd"', 'upstream = "text:../../outside/evil"']


def test_spec_references_that_climb_out_of_specs_are_rejected(ws: RelWorkspace, tmp_path: Path) -> None:
    _outside(tmp_path)
    before = ws.cache_snapshot()
    for line in SPEC_REFS:
        ws.write_spec("demo", f'{line}\nfiles = ["data/*.txt"]\n')
        r = ws.cli("--dry-run")
        ok = r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.out + r.err
        record("path_safety", f"spec reference {line}", ok)
        assert ok, r.out + r.err
        assert "top secret" not in r.out + r.err
    assert ws.cache_snapshot() == before


GLOBS = ["data/../../outside/*.txt", "data/../../outside/**/*.txt", "../*/secret.txt", "data/../../outside"]


def test_globs_and_dirs_that_climb_out_of_the_workspace_are_rejected(tmp_path: Path) -> None:
    ws = RelWorkspace(tmp_path / "ws")
    _outside(tmp_path)
    for pattern in GLOBS:
        ws.write_spec("demo", f'files = ["{pattern}"]\n')
        r = ws.cli("read:demo")
        ok = r.code == 2 and "outside the workspace" in r.err and len(r.err.strip().splitlines()) == 1
        record("path_safety", f"file input {pattern}", ok)
        assert ok, r.out + r.err
    assert not (ws.root / "cache" / "objects").exists() or not any((ws.root / "cache" / "objects").iterdir())


def test_symlinked_directory_inside_an_input_dir_is_never_read(ws: RelWorkspace, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    os.symlink(out, ws.root / "data" / "linked")
    ws.write_spec("demo", 'files = ["data"]\n')
    r = ws.cli("read:demo")
    objs = node_objects(ws.cache)
    text = (ws.cache / "objects" / objs["read:demo"]["key"][:2] / objs["read:demo"]["key"] / "data" / "all.txt").read_text() \
        if r.code == 0 else ""
    ok = "top secret" not in text and (r.code == 0 or (r.code == 2 and "outside the workspace" in r.err))
    record("path_safety", "symlinked dir inside an input dir", ok, rc=r.code)
    assert ok, r.out + r.err


def test_stage_output_symlink_to_a_file_is_refused(ws: RelWorkspace) -> None:
    ws.write_blob("lnk", 'size = 1\nlink_to = "/etc/hostname"\n')
    r = ws.cli("linker:lnk")
    ok = r.code == 2 and "is a symlink; outputs must be regular files" in r.err and "linker:lnk" not in node_objects(ws.cache)
    record("path_safety", "stage output symlink to a file", ok)
    assert ok, r.out + r.err
    assert not any((ws.cache / "tmp").iterdir())


def test_stage_output_symlink_to_a_directory_is_refused(ws: RelWorkspace, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    ws.write_blob("lnk", f'size = 1\nlink_to = "{out}"\n')
    r = ws.cli("linker:lnk")
    published = node_objects(ws.cache).get("linker:lnk")
    escaped = published is not None and any(
        p.is_symlink() for p in (ws.cache / "objects" / published["key"][:2] / published["key"] / "data").rglob("*"))
    record("path_safety", "stage output symlink to a directory", not escaped, rc=r.code)
    assert not escaped, "an object was published holding a symlink out of the cache"
    assert r.code == 2 and "symlink" in r.err


# ------------------------------------------------------------------------------------------------
# trust model: nothing from the cache is unpickled (tensors via safetensors / torch.load(weights_only=True))

UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("cPickle", "loads"),
    ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
    ("pd", "read_pickle"), ("pandas", "read_pickle"), ("marshal", "loads"), ("shelve", "open"),
}


def _dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Calls in ``source`` that can unpickle data: torch.load without ``weights_only=True``, pickle & co.,
    ``numpy.load(allow_pickle=True)``, ``from_pretrained(trust_remote_code=True)``."""
    problems = []
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name → module.attr (from torch import load as tl)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted_name(node.func)
        name = aliases.get(name, name)
        parts = name.split(".")
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        where = f"{filename}:{node.lineno}: {name}("
        if parts[-1] == "load" and parts[0] == "torch" and not name.startswith("torch.distributed.checkpoint"):
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                problems.append(where + " without weights_only=True")
        elif len(parts) >= 2 and (parts[-2], parts[-1]) in UNSAFE_CALLS or name in {"pickle.load", "pickle.loads"}:
            problems.append(where + " unpickles")
        elif parts[-1] == "load" and parts[0] in ("np", "numpy"):
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True or (ap is not None and not isinstance(ap, ast.Constant)):
                problems.append(where + " allow_pickle")
        if "trust_remote_code" in kw:
            v = kw["trust_remote_code"]
            if not (isinstance(v, ast.Constant) and v.value is False):
                problems.append(where + " trust_remote_code")
    return problems


def test_the_scanner_finds_unsafe_loads() -> None:
    bad = ("import torch, pickle\nimport numpy as np\nfrom torch import load as tl\n"
           "torch.load(p)\ntorch.load(p, map_location='cpu', weights_only=False)\ntl(p)\npickle.loads(b)\n"
           "np.load(f, allow_pickle=True)\nAutoModel.from_pretrained(d, trust_remote_code=True)\n"
           "with open(p, 'rb') as f: pickle.load(f)\n")
    found = unsafe_loads(bad)
    assert len(found) == 7, found
    good = ("import torch\nimport numpy as np\ntorch.load(p, weights_only=True, map_location='cpu')\n"
            "np.load(f)\nnp.load(f, mmap_mode='r')\nAutoModel.from_pretrained(d)\n"
            "import torch.distributed.checkpoint as dcp\ndcp.load(sd, checkpoint_id=d)\n")
    assert unsafe_loads(good) == []


def test_stages_never_unpickle_cache_contents() -> None:
    files = sorted((REPO / "stages").rglob("*.py"))
    assert len(files) > 10, files  # the scan must have found the stages to mean anything
    problems = []
    for f in files:
        problems += unsafe_loads(f.read_text(), str(f.relative_to(REPO)))
    record("trust", f"stages/ source scan ({len(files)} files)", not problems, problems=problems)
    assert not problems, "\n".join(problems)
