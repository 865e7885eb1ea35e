"""``launcher = "slurm"`` for a corpus source: the shard work as a SLURM job array, the merge as a
second job, through the real CLI.

There is no SLURM here, so stand-ins for SLURM's own commands go first on PATH (as in
``tests/stage_tests/training/test_slurm_launcher.py``): ``sbatch`` hands out job ids 5001, 5002 …,
and with ``--array=0-K`` runs the script once per task as separate background processes with
``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` / ``SLURM_ARRAY_JOB_ID`` set, waits for all and
exits with the highest exit code (``sbatch --wait`` semantics); without ``--array`` it runs the script
once. ``srun`` runs its command in place; ``scancel`` (the Ctrl-C test) sends SIGTERM to the task
processes that the ``srun`` stand-in recorded; ``squeue`` is not needed (no job is left queued). Everything of ours is real: the build plans the shards, writes job.json and both scripts,
submits them, each task runs ``python -m stages.data_lib.shard_job run`` on its shards i mod N, the
merge job merges, and the build publishes; the output digest equals a local build's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import data_testlib as d
from genesis_testlib import process_alive
import pytest

NODE = "corpus-source:t/j"
FILES = 12

CORPUS = """\
seed = 1
shard_mb = 0.01           # each ~8 KB file is one shard (10.5 KB)
workers = 2
{launcher}

[[sources]]
name = "j"
type = "jsonl"
glob = "data/*.jsonl"
language_field = "lang"
"""

SLURM = """launcher = "slurm"

[slurm]
array_tasks = 3
workers_per_task = 2
partition = "cpu"
time = "01:00:00"
"""

FAKE_SBATCH = r"""#!/bin/bash
# stand-in for SLURM's sbatch --wait [--array=0-K]: each submission gets the next job id (5001, …);
# an array runs one background process per task and exits with the highest task exit code
n=$(( $(cat "$FAKE_SLURM_DIR/count" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$FAKE_SLURM_DIR/count"
printf '%s\n' "$@" > "$FAKE_SLURM_DIR/sbatch.$n.args"
job=$((5000 + n)); out=""; script=""; wait=0; array=""
for a in "$@"; do
  case "$a" in
    --wait) wait=1 ;;
    --output=*) out="${a#--output=}" ;;
    --array=*) array="${a#--array=}" ;;
    -*) ;;
    *) script="$a" ;;
  esac
done
[ "$wait" = 1 ] || { echo "this stand-in only knows sbatch --wait" >&2; exit 1; }
echo "$job"
export SLURM_JOB_NODELIST=fakenode SLURM_NNODES=1 SLURM_JOB_NUM_NODES=1
if [ -z "$array" ]; then
  SLURM_JOB_ID=$job bash "$script" > "${out//%j/$job}" 2>&1
  exit $?
fi
first=${array%-*}; last=${array#*-}; pids=()
for ((i = first; i <= last; i++)); do
  f=${out//%A/$job}; f=${f//%a/$i}
  SLURM_JOB_ID=$((job + 100 + i)) SLURM_ARRAY_JOB_ID=$job SLURM_ARRAY_TASK_ID=$i \
    SLURM_ARRAY_TASK_COUNT=$((last - first + 1)) bash "$script" > "$f" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p"; r=$?; [ "$r" -gt "$rc" ] && rc=$r; done
exit $rc
"""

FAKE_SRUN = r"""#!/bin/bash
# stand-in for srun with one task: run the command in place
printf '%s\n' "$@" >> "$FAKE_SLURM_DIR/srun.args"
while [[ "$1" == -* ]]; do shift; done
exec "$@"
"""


def _workspace(root: Path, launcher: str) -> d.CliWorkspace:
    ws = d.CliWorkspace(root)
    (root / "data").mkdir(parents=True)
    for k in range(FILES):
        lines = []
        for i in range(40):
            n = k * 1000 + i
            doc = d.sentence_doc(n % 50 if i % 10 == 0 else n, sentences=3)  # duplicates across shards
            lines.append(json.dumps({"text": doc, "lang": "de" if n % 4 == 0 else "en"}) + "\n")
        (root / "data" / f"part{k:03d}.jsonl").write_text("".join(lines))
    ws.spec("corpus", "t", CORPUS.format(launcher=launcher))
    return ws


def _fake_slurm(tmp: Path) -> Path:
    fake = tmp / "fake-slurm"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    return fake


def _cli(ws: d.CliWorkspace, fake: Path | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", COLUMNS="300")
    if fake is not None:
        env["PATH"] = os.pathsep.join([str(fake), env.get("PATH", "")])
        env["FAKE_SLURM_DIR"] = str(fake)
    else:
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=ws.root, env=env,
                          capture_output=True, text=True, timeout=300)


def _slurm_dir(ws: d.CliWorkspace) -> Path:
    found = list((ws.root / "cache" / "runs").glob("*/slurm"))
    assert len(found) == 1, found
    return found[0]


def _local_reference(tmp: Path) -> dict:
    ref = _workspace(tmp / "ref", "")
    p = _cli(ref, None, NODE)
    assert p.returncode == 0, p.stderr
    return ref.manifest(NODE)


def test_array_of_three_tasks_builds_the_local_bytes(tmp_path: Path) -> None:
    want = _local_reference(tmp_path)
    assert want["stats"]["run"]["shards"] == FILES
    ref = d.CliWorkspace(tmp_path / "ref")  # built locally: switching it to SLURM keeps its key
    ref.spec("corpus", "t", CORPUS.format(launcher=SLURM))
    p = _cli(ref, None, "--dry-run", NODE)
    assert p.returncode == 0 and "will run" not in p.stdout and "1 nodes: 1 cached" in p.stdout, p.stdout + p.stderr
    fake = _fake_slurm(tmp_path)
    ws = _workspace(tmp_path / "ws", SLURM)
    p = _cli(ws, fake, "corpus:t")  # the source on SLURM, the mixture here
    sd = _slurm_dir(ws)
    assert p.returncode == 0, p.stderr + p.stdout + "".join(f.read_text() for f in sd.glob("slurm-*.out"))
    got = ws.manifest(NODE)
    assert got["output_digest"] == want["output_digest"] and got["key"] == want["key"]
    run = got["stats"]["run"]
    assert run["launcher"] == "slurm" and run["array_tasks"] == 3 and run["workers_per_task"] == 2
    assert run["shards"] == FILES and run["shards_redone"] == FILES and run["slurm_jobs"] == ["5001", "5002"]

    # the first submission is the array, the second the 1-node merge job
    first = (fake / "sbatch.1.args").read_text().splitlines()
    assert first[:3] == ["--wait", "--parsable", "--array=0-2"] and first[-1] == str(sd / "array.sh")
    second = (fake / "sbatch.2.args").read_text().splitlines()
    assert not any(a.startswith("--array") for a in second) and second[-1] == str(sd / "merge.sh")
    assert "-m stages.data_lib.shard_job merge" in (sd / "merge.sh").read_text()
    assert "merged 12 shards" in (sd / "slurm-5002.out").read_text()
    for i in range(3):  # task i read exactly the shards i mod 3, each in its own process and output file
        rec = json.loads((sd / "tasks" / f"{i}.json").read_text())
        assert rec["ran"] == list(range(i, FILES, 3)) and rec["skipped"] == [] and rec["failed"] == []
        assert f"task {i} of 3" in (sd / f"slurm-5001_{i}.out").read_text()
    script = (sd / "array.sh").read_text()
    for want_line in ("#SBATCH --job-name=genesis-data-t-j", "#SBATCH --partition=cpu", "#SBATCH --time=01:00:00",
                      f"srun --kill-on-bad-exit=1 {sys.executable} -m stages.data_lib.shard_job run {sd / 'job.json'}"):
        assert want_line in script.splitlines(), (want_line, script)
    log = (ws.root / "cache" / "logs" / f"{got['key']}.log").read_text()
    assert "SLURM job 5001 submitted" in log and "SLURM job 5002 submitted" in log

    # launcher and [slurm] are in no key: back to local, every node is cached
    ws.spec("corpus", "t", CORPUS.format(launcher=""))
    p = _cli(ws, None, "--dry-run", "corpus:t")
    assert p.returncode == 0, p.stderr
    assert "will run" not in p.stdout and "2 nodes: 2 cached" in p.stdout, p.stdout


def test_bad_line_fails_one_line_keeps_shards_and_the_fixed_rerun_resumes(tmp_path: Path) -> None:
    fake = _fake_slurm(tmp_path)
    ws = _workspace(tmp_path / "ws", SLURM)
    bad = ws.root / "data" / "part007.jsonl"
    good = bad.read_bytes()
    lines = good.splitlines(keepends=True)
    bad.write_bytes(b"".join(lines[:4]) + b'{"text": "stra\xdfe", "lang": "de"}\n' + b"".join(lines[4:]))
    p = _cli(ws, fake, NODE)
    assert p.returncode == 2, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if "part007.jsonl" in ln]
    assert len(err) == 1 and "data/part007.jsonl:5" in err[0] and "not UTF-8" in err[0], p.stderr
    assert "Traceback" not in p.stderr
    sd = _slurm_dir(ws)
    assert len(list((ws.root / "cache" / "runs").glob("*/shards/*.json"))) == FILES - 1
    assert json.loads((sd / "tasks" / "1.json").read_text())["failed"] == [7]
    assert not (fake / "sbatch.2.args").exists()  # no merge job after a failed array

    bad.write_bytes(good)
    p = _cli(ws, fake, NODE)
    assert p.returncode == 0, p.stderr
    run = ws.manifest(NODE)["stats"]["run"]
    assert run["shards_redone"] == 1 and run["shards_reused"] == FILES - 1
    rec = json.loads((sd / "tasks" / "1.json").read_text())  # the rerun's task 1: only shard 7 ran
    assert rec["ran"] == [7] and rec["skipped"] == [1, 4, 10]
    assert ws.manifest(NODE)["output_digest"] == _local_reference(tmp_path)["output_digest"]


def test_dry_run_shows_the_array_script(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", SLURM)
    p = _cli(ws, None, "--dry-run", NODE)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert ("launch: sbatch --wait --array=0-2 <cache>/runs/<trajectory key>/slurm/array.sh (3 task(s) × 2 worker(s); "
            "task i reads shards i mod 3; 10 shards (≈ from file sizes) → ≤4 per task), then sbatch --wait merge.sh "
            "(1 node: the merge)") in out, out  # ≈: 101 kB / 10.5 kB; the packing makes it 12
    for want in ("sbatch script:", "#SBATCH --job-name=genesis-data-t-j", "#SBATCH --nodes=1", "#SBATCH --partition=cpu",
                 "-m stages.data_lib.shard_job run '<cache>/runs/<trajectory key>/slurm/job.json'"):
        assert want in out, (want, out)


def test_no_sbatch_is_a_clear_error(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", SLURM)
    if shutil.which("sbatch", path=os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])):
        pytest.skip("this machine has a real sbatch")
    p = _cli(ws, None, NODE)
    assert p.returncode == 2, p.stderr + p.stdout
    assert 'launcher = "slurm" but `sbatch` is not on PATH' in p.stderr and "array.sh" in p.stderr, p.stderr
    assert 'launcher = "local"' in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


FAKE_SCANCEL = r"""#!/bin/bash
# stand-in for scancel --signal=TERM <job>: SIGTERM to every job step (the srun stand-in records them)
printf '%s\n' "$@" > "$FAKE_SLURM_DIR/scancel.args"
for f in "$FAKE_SLURM_DIR"/step.*; do [ -e "$f" ] && kill -TERM "${f##*.}" 2>/dev/null; done
exit 0
"""


@pytest.mark.slow
def test_ctrl_c_cancels_the_array_keeps_shards_and_the_rerun_resumes(tmp_path: Path) -> None:
    fake = _fake_slurm(tmp_path)
    # the srun stand-in records its pid (exec keeps it) so the scancel stand-in can signal the step
    (fake / "srun").write_text(FAKE_SRUN.replace('exec "$@"', 'touch "$FAKE_SLURM_DIR/step.$$"\nexec "$@"'))
    (fake / "scancel").write_text(FAKE_SCANCEL)
    (fake / "scancel").chmod(0o755)
    ws = d.CliWorkspace(tmp_path / "ws")
    (ws.root / "data").mkdir()
    files = 24
    for k in range(files):  # ~1 MB a file: one shard each, long enough to interrupt midway
        lines = [json.dumps({"text": d.sentence_doc(k * 100_000 + i, sentences=8), "lang": "en"}) + "\n"
                 for i in range(2000)]
        (ws.root / "data" / f"part{k:03d}.jsonl").write_text("".join(lines))
    ws.spec("corpus", "t", CORPUS.replace("shard_mb = 0.01", "shard_mb = 1.5").format(
        launcher=SLURM.replace("workers_per_task = 2", "workers_per_task = 1").replace("array_tasks = 3",
                                                                                      "array_tasks = 2")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", FAKE_SLURM_DIR=str(fake),
               PATH=os.pathsep.join([str(fake), os.environ.get("PATH", "")]))
    p = subprocess.Popen([sys.executable, "-m", "genesis_build.cli", NODE], cwd=ws.root, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list((ws.root / "cache" / "runs").glob("*/shards/*.json"))) < 2:
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0, out + err
    assert "rerun to continue" in err and "Traceback" not in err, err
    assert (fake / "scancel.args").read_text().split() == ["--signal=TERM", "5001"]
    steps = [int(f.name.split(".")[1]) for f in fake.glob("step.*")]
    deadline = time.time() + 30
    while any(process_alive(pid) for pid in steps):  # every task stopped
        assert time.time() < deadline, "array tasks outlived the scancel"
        time.sleep(0.1)
    sd = _slurm_dir(ws)
    assert any("stopped (SIGTERM)" in f.read_text() for f in sd.glob("slurm-5001_*.out"))
    assert not (fake / "sbatch.2.args").exists()  # no merge job
    finished = len(list((ws.root / "cache" / "runs").glob("*/shards/*.json")))
    assert 2 <= finished < files, finished

    for f in fake.glob("step.*"):
        f.unlink()
    p2 = subprocess.run([sys.executable, "-m", "genesis_build.cli", NODE], cwd=ws.root, env=env,
                        capture_output=True, text=True, timeout=300)
    assert p2.returncode == 0, p2.stderr
    run = ws.manifest(NODE)["stats"]["run"]
    assert run["shards_reused"] == finished and run["shards_redone"] == files - finished

