"""Hub sources are pinned, preflighted and sized at plan time (issue 14, deliverables 3–5).

No real hub is reachable here, so every test talks to a LOCAL STAND-IN: a real HTTP server
(``http.server`` in a thread) answering the routes ``huggingface_hub`` calls —
``GET /api/datasets/{repo}/revision/{rev}`` (``HfApi.dataset_info``; 404 with ``X-Error-Code:
RepoNotFound`` / ``RevisionNotFound`` as the hub answers) and ``GET /api/datasets/{repo}/auth-check``
(``HfApi.auth_check``; 403 ``GatedRepo`` without a granted token) — with ``HF_ENDPOINT`` pointing at
it. The real ``huggingface_hub`` client does the requests and maps the errors.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import data_testlib as d
import pytest

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40
TOKEN = "hf_granted"

SPEC = """\
seed = 1

[[sources]]
name = "web"
type = "hub"
dataset = "org/web"
config = "en"
revision = "main"
max_documents = 500

[[sources]]
name = "code"
type = "hub"
dataset = "org/code"
data_dir = "python"
revision = "main"
text_field = "content"

[[sources]]
name = "local"
type = "text"
glob = "data/*.txt"
"""


class StandInHub:
    """The hub's dataset API, as far as ``dataset_info`` and ``auth_check`` use it."""

    def __init__(self) -> None:
        self.branches = {"org/web": {"main": SHA_A}, "org/code": {"main": SHA_C}}
        self.gated = {"org/code"}
        self.cards: dict[str, Any] = {
            "org/web": {"dataset_info": [{"config_name": "en", "splits": [
                {"name": "train", "num_bytes": 4_000_000, "num_examples": 1000}]}]},
            "org/code": {},
        }
        self.files = {"org/web": [("en/train-0.parquet", 10)],
                      "org/code": [("python/a.parquet", 3000), ("python/b.parquet", 5000), ("java/c.parquet", 999)]}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, code: int, body: Any, error: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if error:
                    self.send_header("X-Error-Code", error)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 — http.server's name
                path = unquote(urlparse(self.path).path)
                hub.requests.append(path)
                parts = path.split("/")  # '', api, datasets, org, name, revision|auth-check, rev
                if parts[:3] != ["", "api", "datasets"] or len(parts) < 6:
                    return self._send(404, {"error": "no route"})
                repo = f"{parts[3]}/{parts[4]}"
                if repo not in hub.branches:
                    return self._send(404, {"error": "Repository not found"}, "RepoNotFound")
                if parts[5] == "auth-check":
                    granted = self.headers.get("Authorization") == f"Bearer {TOKEN}"
                    if repo in hub.gated and not granted:
                        return self._send(403, {"error": "Access to this dataset is restricted"}, "GatedRepo")
                    return self._send(200, {})
                if parts[5] != "revision" or len(parts) < 7:
                    return self._send(404, {"error": "no route"})
                rev = "/".join(parts[6:])
                sha = hub.branches[repo].get(rev) or (rev if rev in hub.branches[repo].values() else None)
                if sha is None:
                    return self._send(404, {"error": f"Invalid rev id: {rev}"}, "RevisionNotFound")
                self._send(200, {"id": repo, "sha": sha, "private": False,
                                 "gated": "manual" if repo in hub.gated else False,
                                 "cardData": hub.cards[repo],
                                 "siblings": [{"rfilename": f, "size": s} for f, s in hub.files[repo]]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def info_requests(self, repo: str) -> int:
        """How many dataset_info requests ``repo`` got."""
        return sum(1 for p in self.requests if p.startswith(f"/api/datasets/{repo}/revision/"))


@pytest.fixture
def hub() -> Any:
    h = StandInHub()
    yield h
    h.server.shutdown()


@pytest.fixture
def ws(tmp_path: Path) -> d.CliWorkspace:
    w = d.CliWorkspace(tmp_path / "ws")
    d.write_docs(w.root / "data", {f"p{i}.txt": d.sentence_doc(i) for i in range(20)})
    w.spec("corpus", "t", SPEC)
    return w


def cli(ws: d.CliWorkspace, hub: StandInHub | None, *args: str, token: str | None = TOKEN,
        offline: bool = False, **env: str) -> subprocess.CompletedProcess:
    """``genesis-build ARGS`` with the stand-in as the hub (no login file: HF_HOME is the workspace's)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GENESIS_", "HF_", "TRANSFORMERS_"))}
    e.update(HF_HOME=str(ws.root / ".hf"), HF_DATASETS_OFFLINE="1", **env)
    if hub is not None:
        e["HF_ENDPOINT"] = hub.url
    if token:
        e["HF_TOKEN"] = token
    if offline:
        e["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "genesis_build.cli", *args], cwd=ws.root, env=e,
                          capture_output=True, text=True, timeout=120)


def status(ws: d.CliWorkspace, hub: StandInHub | None, **kw: Any) -> dict[str, dict[str, Any]]:
    p = cli(ws, hub, "--dry-run", "--format", "json", "corpus:t", **kw)
    assert p.returncode == 0, p.stderr
    return {n["id"]: n for n in json.loads(p.stdout)}


def details(node: dict[str, Any]) -> dict[str, str]:
    return {r["label"]: r["value"] for r in node["details"]}


def test_dry_run_pins_branches_to_shas_once_per_process_and_shows_sizes(ws: d.CliWorkspace, hub: StandInHub) -> None:
    st = status(ws, hub)
    web, code = st["corpus-source:t/web"], st["corpus-source:t/code"]
    assert web["state"] == code["state"] == "missing" and web["key"] and code["key"]
    assert details(web)["revision"] == f'main → {SHA_A} (pin it: revision = "{SHA_A}")'
    # the card's split size, cut to max_documents; ≈4 bytes a token
    assert details(web)["size"] == "500 documents, 2.0 MB, ≈500.00K tokens (dataset card, max_documents)"
    assert details(code)["size"] == "8.0 kB, ≈2.00K tokens (file sizes)"  # python/* only
    assert details(st["corpus-source:t/local"])["size"].endswith("(file sizes)")
    assert "sum of 3 of 3 sources" in details(st["corpus:t"])["size"]
    # 3 source nodes + the mixture's rows + keys: each hub source asked once in the process
    assert hub.info_requests("org/web") == 1 and hub.info_requests("org/code") == 1
    # the branch moves upstream: that source's key changes, the other's does not
    hub.branches["org/web"]["main"] = SHA_B
    st2 = status(ws, hub)
    assert st2["corpus-source:t/web"]["key"] != web["key"]
    assert st2["corpus-source:t/code"]["key"] == code["key"]
    assert st2["corpus-source:t/local"]["key"] == st["corpus-source:t/local"]["key"]


def test_offline_plans_unpinned_and_a_build_refuses_in_one_line(ws: d.CliWorkspace, hub: StandInHub) -> None:
    st = status(ws, hub, offline=True)
    web = st["corpus-source:t/web"]
    assert web["state"] == "unresolved" and web["key"] is None
    assert details(web)["revision"].startswith("main (unpinned: offline")
    assert st["corpus-source:t/local"]["state"] == "missing"  # local sources still plan normally
    assert hub.requests == []  # offline asks nothing
    p = cli(ws, hub, "corpus:t", offline=True)
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "corpus-source:t/code: source 'code': revision 'main' of org/code cannot be pinned" in err
    assert 'specs/corpus/t.toml: revision = "<sha>"' in err
    assert not (ws.root / "cache").exists()  # nothing ran, the cache is untouched
    # a commit sha is already pinned: plans offline with a key, no network needed
    ws.spec("corpus", "t", SPEC.replace('revision = "main"', f'revision = "{SHA_A}"'))
    st = status(ws, hub, offline=True)
    assert st["corpus-source:t/web"]["state"] == "missing" and st["corpus-source:t/web"]["key"]
    assert details(st["corpus-source:t/web"])["revision"] == f"{SHA_A} (pinned)"


def test_gated_source_without_a_token_fails_in_the_first_second(ws: d.CliWorkspace, hub: StandInHub) -> None:
    t0 = time.monotonic()
    p = cli(ws, hub, "corpus:t", token=None)
    elapsed = time.monotonic() - t0
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "corpus-source:t/code: source 'code': org/code is gated" in err
    assert "huggingface-cli login" in err and "HF_TOKEN" in err
    assert not (ws.root / "cache").exists()  # the local source did not run first
    assert elapsed < 10  # interpreter start + one round trip; never after other sources ran
    # the dry run plans it and says why
    st = status(ws, hub, token=None)
    assert st["corpus-source:t/code"]["state"] == "unresolved" and "is gated" in st["corpus-source:t/code"]["reason"]
    assert st["corpus-source:t/web"]["state"] == "missing"
    # with a granted token it is pinned
    assert status(ws, hub)["corpus-source:t/code"]["state"] == "missing"


@pytest.mark.parametrize("edit,expected", [
    (('dataset = "org/code"', 'dataset = "org/nope"'), "dataset org/nope does not exist on"),
    (('data_dir = "python"\nrevision = "main"', 'data_dir = "python"\nrevision = "v9"'), "org/code has no revision 'v9'"),
])
def test_missing_dataset_or_revision_is_a_one_line_error(ws: d.CliWorkspace, hub: StandInHub, edit: tuple[str, str],
                                                         expected: str) -> None:
    assert edit[0] in SPEC
    ws.spec("corpus", "t", SPEC.replace(*edit))
    p = cli(ws, hub, "corpus:t")
    assert p.returncode == 2 and expected in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr


def test_an_unanswering_hub_costs_one_bounded_timeout(ws: d.CliWorkspace) -> None:
    # a listening socket that never answers: connections succeed, reads hang
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        p = cli(ws, None, "--dry-run", "--format", "json", "corpus:t", HF_ENDPOINT=url, GENESIS_HUB_TIMEOUT="1")
        elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    web = {n["id"]: n for n in json.loads(p.stdout)}["corpus-source:t/web"]
    assert web["state"] == "unresolved" and "unpinned" in details(web)["revision"]
    assert elapsed < 8, elapsed  # two sources asked at once: one timeout (plus auth_check's), not one each


def test_the_run_reads_the_pinned_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ctx.external["hub_sha"]`` (what the key holds) is the revision the reader gets, not the branch."""
    import stages.data_lib.ingest as ingest
    from genesis_build.stage import Context
    from stages.corpus_source import corpus_source

    seen: list[str | None] = []

    def fake_read_hub(src: Any, where: str, shard: tuple[int, int] | None = None) -> Any:
        seen.append(src.revision)
        yield (d.sentence_doc(1), "en", "hub:0")

    monkeypatch.setattr(ingest, "read_hub", fake_read_hub)
    monkeypatch.setattr(ingest, "hub_shards", lambda src, where: 1)  # planning the shards would open the stream
    spec = d.corpus_spec([{"name": "web", "type": "hub", "dataset": "org/web", "revision": "main"}])
    out = tmp_path / "out"
    out.mkdir()
    ctx = Context(node="corpus-source:t/web", stage="corpus-source", spec=spec, spec_name="t", part="web", out=out,
                  inputs={}, files=[], workspace=tmp_path, cache_root=tmp_path / "cache", key="k",
                  run_dir=tmp_path / "run", external={"hub_sha": SHA_B})  # resumable: shards kept in the run dir
    corpus_source(ctx)
    assert seen == [SHA_B] and ctx.recorded_stats["hub_sha"] == SHA_B


@pytest.mark.slow
def test_planner_rows_show_measured_speed_and_eta_after_a_build(ws: d.CliWorkspace) -> None:
    ws.spec("corpus", "t", SPEC.split("[[sources]]\nname = \"web\"")[0] + "[[sources]]\nname = \"local\"\ntype = \"text\"\n"
            "glob = \"data/*.txt\"\n")
    before = details(status(ws, None, offline=True)["corpus-source:t/local"])
    assert before["speed"].startswith("not measured yet")
    p = cli(ws, None, "corpus-source:t/local", offline=True)
    assert p.returncode == 0, p.stderr
    after = details(status(ws, None, offline=True)["corpus-source:t/local"])
    assert re.search(r"MB/s with \d+ workers?\b.*\(last build\), ETA", after["speed"]), after["speed"]
    assert "20 documents" in after["size"]  # known from the last build's manifest
