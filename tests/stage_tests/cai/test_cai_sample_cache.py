"""Per-sample caching of critique/revision samples on a tiny real model: only the samples whose
dependencies changed are generated again, and a killed run keeps every finished sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cai_testlib import ROOT, builtin_prompts, cai_section, generate, genesis_constitution

from stages.cai_lib.samples import SampleStore


def test_edit_one_of_seven_principles_regenerates_only_its_samples(tiny_lm: Path, tmp_path: Path) -> None:
    constitution = genesis_constitution()
    assert len(constitution.active()) == 7
    prompts = builtin_prompts(70)
    cai = cai_section()
    first, jobs = generate(tiny_lm, tmp_path, constitution, prompts, cai)
    assert first == len(jobs) == 70

    store = SampleStore(tmp_path)
    rec = store.get(jobs[0].key)
    assert rec["prompt"] == jobs[0].prompt and rec["principle"] == jobs[0].principle_id
    assert len(rec["rounds"]) == 1 and rec["final"] == rec["rounds"][-1]["revision"]
    assert jobs[0].principle.text in rec["rounds"][0]["critique_request"]

    again, _ = generate(tiny_lm, tmp_path, constitution, prompts, cai)
    assert again == 0  # everything cached

    edited = constitution.model_copy(deep=True)
    edited.principles["curious"].text = "Be curious. Ask exactly one good follow-up question."
    regenerated, jobs2 = generate(tiny_lm, tmp_path, edited, prompts, cai)
    curious = sum(j.principle_id == "curious" for j in jobs2)
    assert regenerated == curious, (regenerated, curious)
    assert 0 < curious < 70 / 7 * 2  # ~1/7 of the samples
    assert [j.principle_id for j in jobs2] == [j.principle_id for j in jobs]  # assignment unchanged by a text edit
    changed = {j.key for j in jobs2} - {j.key for j in jobs}
    assert len(changed) == curious

    # a template edit also counts; a decoding change regenerates everything
    edited.principles["honest"].revision += "\nKeep it short."
    honest = sum(j.principle_id == "honest" for j in jobs2)
    assert generate(tiny_lm, tmp_path, edited, prompts, cai)[0] == honest
    hotter = cai_section(decoding={"temperature": 0.9})
    assert generate(tiny_lm, tmp_path, edited, prompts, hotter)[0] == 70


def test_removing_a_principle_regenerates_only_its_prompts(tiny_lm: Path, tmp_path: Path) -> None:
    constitution = genesis_constitution()
    prompts = builtin_prompts(42)
    cai = cai_section()
    _, jobs = generate(tiny_lm, tmp_path, constitution, prompts, cai)
    fewer = constitution.model_copy(deep=True)
    fewer.principles["interesting"].enabled = False
    n, jobs2 = generate(tiny_lm, tmp_path, fewer, prompts, cai)
    had_it = {j.prompt_id for j in jobs if j.principle_id == "interesting"}
    assert n == len(had_it) > 0
    moved = {j.prompt_id for j in jobs2} & had_it
    assert moved == had_it and all(j.principle_id != "interesting" for j in jobs2)


def test_kill_midway_then_rerun_generates_no_finished_sample_twice(tiny_lm: Path, tmp_path: Path) -> None:
    n = 12
    store_dir = tmp_path / "samples"
    script = Path(__file__).with_name("cai_testlib.py")
    # the script imports ``tinylm`` (tests/) and ``stages`` (the repository root) through PYTHONPATH
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_lm), str(store_dir), str(n)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    files: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        files = list(store_dir.glob("*/*.json"))
        if len(files) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"generation ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in store_dir.glob("*/*.json")}
    assert 2 <= len(finished) < n
    for p in finished:  # every finished sample is complete JSON
        assert json.loads(p.read_text())["final"] is not None

    # the rerun batches differently (batching is an execution detail, not part of a sample's key)
    cai = cai_section(decoding={"max_new_tokens": 32}, runtime={"batch_size": 16})
    generated, jobs = generate(tiny_lm, store_dir, genesis_constitution(), builtin_prompts(n), cai)
    assert generated == n - len(finished)
    for p, ident in finished.items():  # untouched: not regenerated, not rewritten
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == ident
    assert len(list(store_dir.glob("*/*.json"))) == n
    # temp files of the killed writer (one planted, named as atomic_write names them, so there is
    # always one) are removed by clean_temp; a finished sample is never touched
    planted = next(iter(finished)).with_name(f".planted.json.{proc.pid}.{time.monotonic_ns()}.tmp")
    planted.write_text("{")
    dead = list(store_dir.glob("*/.*.tmp"))
    assert SampleStore(store_dir).clean_temp() == len(dead) >= 1
    assert not list(store_dir.glob("*/.*.tmp"))
    assert len(list(store_dir.glob("*/*.json"))) == n
    assert generate(tiny_lm, store_dir, genesis_constitution(), builtin_prompts(n), cai)[0] == 0
