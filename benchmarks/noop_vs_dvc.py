"""No-op and touch-rehash status: genesis-build vs DVC on the same files, in one run.

    pip install dvc            # for this benchmark only
    python benchmarks/noop_vs_dvc.py [--files 2000] [--mib 1] [--repeat 5] [--dvc PATH]

Creates N files of M MiB, a 3-stage pipeline over them in both tools (genesis-build: a small stage
module written next to the workspace; DVC: dvc.yaml with three `cmd` stages doing the same work),
builds both, then measures (median of --repeat):
  no-op status      `genesis-build --dry-run`  vs `dvc status`
  touch + status    the same after `touch` of every file (content unchanged): both must rehash
and checks that after the touch a build reruns zero stages in both tools.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

STAGES = '''
import json
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from genesis_build.stage import Context, register_kind, stage

class BenchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str = "data"

register_kind("bench", BenchSpec, default_stage="total")

@stage("sizes", version=1, kind="bench", files=lambda v, p: [v.spec.data])
def sizes(ctx: Context) -> None:
    """Stage 1: size of every input file."""
    (ctx.out / "sizes.json").write_text(json.dumps({p.name: p.stat().st_size for p in ctx.files}))

@stage("histogram", version=1, kind="bench", inputs=lambda v, p: {"sizes": f"sizes:{v.name}"})
def histogram(ctx: Context) -> None:
    """Stage 2: histogram of sizes."""
    sizes = json.loads((ctx.inputs["sizes"].path / "sizes.json").read_text())
    hist = {}
    for v in sizes.values():
        hist[v] = hist.get(v, 0) + 1
    (ctx.out / "hist.json").write_text(json.dumps(hist))

@stage("total", version=1, kind="bench", inputs=lambda v, p: {"hist": f"histogram:{v.name}"})
def total(ctx: Context) -> None:
    """Stage 3: total bytes."""
    hist = json.loads((ctx.inputs["hist"].path / "hist.json").read_text())
    (ctx.out / "total.txt").write_text(str(sum(int(k) * v for k, v in hist.items())))
'''

DVC_SCRIPTS = {
    "sizes.py": "import json, os, sys\nd = sys.argv[1]\njson.dump({f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}, open('sizes.json', 'w'))\n",
    "hist.py": "import json\ns = json.load(open('sizes.json'))\nh = {}\nfor v in s.values(): h[v] = h.get(v, 0) + 1\njson.dump(h, open('hist.json', 'w'))\n",
    "total.py": "import json\nh = json.load(open('hist.json'))\nopen('total.txt', 'w').write(str(sum(int(k) * v for k, v in h.items())))\n",
}

DVC_YAML = """stages:
  sizes:
    cmd: {py} sizes.py data
    deps: [data, sizes.py]
    outs: [sizes.json]
  histogram:
    cmd: {py} hist.py
    deps: [sizes.json, hist.py]
    outs: [hist.json]
  total:
    cmd: {py} total.py
    deps: [hist.json, total.py]
    outs: [total.txt]
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command, fail loudly, return (seconds, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{p.stdout}\n{p.stderr}")
    return dt, p.stdout + p.stderr


def make_data(d: Path, n: int, mib: int) -> None:
    """N files of random bytes."""
    d.mkdir(parents=True)
    for i in range(n):
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(mib << 20))


def write_genesis_workspace(g: Path, plugin: str = STAGES, default: str = "bench:files",
                            specs: dict[str, str] | None = None) -> None:
    """A genesis-build workspace at ``g`` (its data already there): the plugin module and specs."""
    (g / "bench_stages.py").write_text(textwrap.dedent(plugin))
    (g / "genesis.toml").write_text(f'[workspace]\ndefault = "{default}"\nplugins = ["bench_stages"]\n')
    for rel, text in (specs or {"bench/files.toml": 'data = "data"\n'}).items():
        (g / "specs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (g / "specs" / rel).write_text(text)


def write_dvc_project(v: Path, dvc: str, yaml: str | None = None, scripts: dict[str, str] | None = None) -> None:
    """A git + DVC project at ``v`` (its data already there): scripts, dvc.yaml, analytics off."""
    for name, code in (DVC_SCRIPTS if scripts is None else scripts).items():
        (v / name).write_text(code)
    (v / "dvc.yaml").write_text(DVC_YAML.format(py=sys.executable) if yaml is None else yaml)
    run(["git", "init", "-q"], v)
    run([dvc, "init", "-q"], v)
    run([dvc, "config", "core.analytics", "false"], v)


def touch_all(d: Path) -> None:
    """Change every file's mtime, not its content."""
    now = time.time_ns()
    for i, f in enumerate(sorted(d.iterdir())):
        os.utime(f, ns=(now + i, now + i))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--mib", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dvc", default=shutil.which("dvc") or "dvc")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    if not shutil.which(args.dvc) and not Path(args.dvc).is_file():
        sys.exit("dvc not found: pip install dvc (or pass --dvc PATH)")
    gb = [sys.executable, "-m", "genesis_build.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="noop-vs-dvc-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    try:
        g, v = tmp / "genesis", tmp / "dvc"
        print(f"creating {args.files} files of {args.mib} MiB …", flush=True)
        make_data(g / "data", args.files, args.mib)
        shutil.copytree(g / "data", v / "data")
        write_genesis_workspace(g)
        write_dvc_project(v, args.dvc)

        t_g_build, _ = run(gb, g, env)
        t_d_build, _ = run([args.dvc, "repro"], v)
        print(f"first build: genesis-build {t_g_build:.2f}s, dvc repro {t_d_build:.2f}s", flush=True)

        def median_status(cwd: Path, cmd: list[str], touch: bool) -> float:
            times = []
            for _ in range(args.repeat):
                if touch:
                    touch_all(cwd / "data")
                dt, out = run(cmd, cwd, env)
                times.append(dt)
            return statistics.median(times)

        results = {}
        run(gb + ["--dry-run"], g, env)  # first no-op status records the stat snapshot
        run([args.dvc, "status"], v)
        results["no-op status"] = (median_status(g, gb + ["--dry-run"], False), median_status(v, [args.dvc, "status"], False))
        results["touch + status"] = (median_status(g, gb + ["--dry-run"], True), median_status(v, [args.dvc, "status"], True))

        touch_all(g / "data")
        touch_all(v / "data")
        _, g_out = run(gb, g, {**env})
        _, d_out = run([args.dvc, "repro"], v)
        g_reran = "built" in g_out.split("nodes:")[-1]
        d_reran = "Running stage" in d_out
        print()
        print(f"{'':18} {'genesis-build':>14} {'dvc':>10} {'ratio':>8}")
        for name, (ours, theirs) in results.items():
            print(f"{name:18} {ours:>13.3f}s {theirs:>9.3f}s {theirs / ours:>7.1f}×")
        print(f"{'rerun after touch':18} {'yes' if g_reran else 'no':>14} {'yes' if d_reran else 'no':>10}")
        print(f"\n{args.files} files × {args.mib} MiB, median of {args.repeat}; goals: no-op ≤ 1/3 of dvc's time, "
              f"touch ≥ 5× faster, zero stages rerun")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
