"""Temporary workspaces driven through the real CLI: ``Workspace`` on the engine's test stages,
``RepoWorkspace`` on a copy of the repo's specs and the real stages."""

from __future__ import annotations

import json
import socket
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTSTAGES = ROOT / "tests" / "engine" / "teststages.py"


@dataclass
class Run:
    """Result of one CLI run."""

    code: int
    out: str
    err: str
    ran: list[str]


class Workspace:
    """A temp workspace using the engine's test stages (kind ``text``)."""

    def __init__(self, root: Path, cache: Path | None = None) -> None:
        self.root = root
        self.runlog = root / "runlog.txt"
        (root / "specs" / "text").mkdir(parents=True, exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        shutil.copy(TESTSTAGES, root / "teststages.py")
        cache_line = f'cache = "{cache}"\n' if cache else ""
        (root / "genesis.toml").write_text(f'[workspace]\ndefault = "text:demo"\nplugins = ["teststages"]\n{cache_line}')
        self.write_spec("demo", 'files = ["data/*.txt"]\nnote = "hello"\n\n[shape]\nupper = false\n')
        (root / "data" / "a.txt").write_text("apple banana cherry\n")
        (root / "data" / "b.txt").write_text("date elderberry fig\n")

    def write_spec(self, name: str, text: str) -> Path:
        """Write specs/text/<name>.toml."""
        p = self.root / "specs" / "text" / f"{name}.toml"
        p.write_text(text)
        return p

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        """Run the real `genesis-build` CLI in this workspace; `ran` lists the nodes that ran."""
        before = self.runlog.read_text().splitlines() if self.runlog.exists() else []
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
        full_env.update({"GENESIS_TEST_RUNLOG": str(self.runlog), **(env or {})})
        p = subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=full_env,
                           capture_output=True, text=True, timeout=timeout)
        after = self.runlog.read_text().splitlines() if self.runlog.exists() else []
        return Run(p.returncode, p.stdout, p.stderr, after[len(before):])

    def status(self, *targets: str) -> dict[str, dict]:
        """`--dry-run --format json` as {node id: record}."""
        r = self.cli("--dry-run", "--format", "json", *targets)
        assert r.code == 0, r.err
        return {n["id"]: n for n in json.loads(r.out)}

    def cache_snapshot(self) -> dict[str, bytes]:
        """Every file under the cache's objects/ with its bytes (to prove nothing changed)."""
        objects = self.root / "cache" / "objects"
        if not objects.exists():
            return {}
        return {str(p.relative_to(objects)): p.read_bytes() for p in sorted(objects.rglob("*")) if p.is_file()}


class RepoWorkspace:
    """A temp workspace holding a copy of the repo's specs (plus what a test writes), driven through
    the real ``genesis-build`` with ``GENESIS_*`` variables cleared. Subclasses add specs, and may
    clear more variables (``drop_env``), set some (``extra_env``) or change the CLI ``timeout``."""

    drop_env: tuple[str, ...] = ("GENESIS_",)
    timeout: float = 600

    def __init__(self, root: Path, default: str = "model:tiny", plugins: tuple[str, ...] = ("stages",),
                 allow: tuple[Path, ...] | list[Path] = ()) -> None:
        self.root = root
        shutil.copytree(ROOT / "specs", root / "specs")
        self.write_config(default, plugins, allow)

    def write_config(self, default: str, plugins: tuple[str, ...] = ("stages",),
                     allow: tuple[Path, ...] | list[Path] = ()) -> None:
        """Write genesis.toml: the default target, the plugin modules and the allowed outside paths."""
        lines = ["[workspace]", f'default = "{default}"', f"plugins = {json.dumps(list(plugins))}"]
        if allow:
            lines.append(f"allow_paths = {json.dumps([str(p) for p in allow])}")
        (self.root / "genesis.toml").write_text("\n".join(lines) + "\n")

    def write(self, rel: str, text: str) -> Path:
        """Write a file under the workspace."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def extra_env(self) -> dict[str, str]:
        """Variables the CLI runs with on top of the cleared environment."""
        return {}

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run the real ``genesis-build ARGS`` in this workspace."""
        full = {k: v for k, v in os.environ.items() if not k.startswith(self.drop_env)}
        full.update({"PYTHONPATH": str(ROOT), **self.extra_env(), **(env or {})})
        return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=self.root, env=full,
                              capture_output=True, text=True, timeout=timeout or self.timeout)

    def status(self, *targets: str) -> dict[str, dict]:
        """``--dry-run --format json`` of ``targets`` (default: the workspace default) by node id."""
        r = self.cli("--dry-run", "--format", "json", *targets)
        assert r.returncode == 0, r.stdout + r.stderr
        return {n["id"]: n for n in json.loads(r.stdout)}

    def manifests(self) -> dict[str, dict]:
        """key → manifest of every published object."""
        return {m.parent.name: json.loads(m.read_text()) for m in (self.root / "cache" / "objects").glob("*/*/manifest.json")}

    def object_dir(self, node: str) -> Path:
        """The cached object of ``node`` at its current key."""
        st = self.status(node)
        key = st[node]["key"]
        assert key, {n: (r["state"], r["reason"]) for n, r in st.items()}
        return self.root / "cache" / "objects" / key[:2] / key

    def data(self, node: str) -> Path:
        """The data dir of ``node``'s cached object."""
        return self.object_dir(node) / "data"

    def manifest(self, node: str) -> dict:
        """The manifest of ``node``'s cached object."""
        return json.loads((self.object_dir(node) / "manifest.json").read_text())


def process_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a zombie still answers ``kill(pid, 0)``)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (a server or rendezvous binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
