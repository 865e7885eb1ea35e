"""Importing the built-in stages (what --dry-run does) must not import the ML stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "tokenizers", "numpy", "pyarrow", "matplotlib")


def test_importing_stages_pulls_in_no_ml_library() -> None:
    code = f"import sys, stages; print([m for m in {HEAVY!r} if m in sys.modules])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_every_builtin_stage_declares_a_kind_that_exists() -> None:
    code = ("import stages\nfrom genesis_build.stage import stages as S, kinds as K\n"
            "bad = [n for n, s in S().items() if s.kind not in K()]\nprint(len(S()), bad)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    n, bad = p.stdout.split(" ", 1)
    assert int(n) > 0 and bad.strip() == "[]"


def test_dry_run_of_the_real_models_imports_no_ml_library() -> None:
    """The planner rows, checks and keys of the whole pipeline come from specs alone."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import sys, io, contextlib\nfrom genesis_build.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    rcs = [main(['--dry-run', '--cache', sys.argv[1], t]) for t in ('model:tiny', 'model:1b')]\n"
            f"print(rcs, [m for m in {HEAVY!r} if m in sys.modules], 'params' in out.getvalue())")
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        p = subprocess.run([sys.executable, "-c", code, cache], capture_output=True, text=True, cwd=root,
                           env={**__import__("os").environ, "GENESIS_NO_FASTPATH": "1"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[0, 0] [] True", p.stdout + p.stderr
