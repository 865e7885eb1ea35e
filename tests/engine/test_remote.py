"""Remote cache against a real S3-API server (moto's server mode) through s3fs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genesis_testlib import Workspace, free_port

pytestmark = pytest.mark.slow
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")



@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    client.create_bucket(Bucket="genesis")
    yield url, client
    server.stop()


def _with_remote(ws: Workspace, endpoint: str, prefix: str) -> None:
    (ws.root / "genesis.toml").write_text(
        '[workspace]\ndefault = "text:demo"\nplugins = ["teststages"]\n\n[remote]\n'
        f'url = "s3://genesis/{prefix}"\noptions = {{ endpoint_url = "{endpoint}", key = "test", secret = "test" }}\n')


def test_second_workspace_pulls_everything_and_runs_nothing(s3, tmp_path: Path) -> None:
    endpoint, client = s3
    a, b = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    for w in (a, b):
        _with_remote(w, endpoint, "t1")
    r = a.cli()
    assert r.code == 0 and len(r.ran) == 4
    keys = client.list_objects_v2(Bucket="genesis", Prefix="t1/objects/")["Contents"]
    assert sum(k["Key"].endswith("manifest.json") for k in keys) == 4
    st = b.status()
    assert all(n["state"] == "cached" and "remote" in n["reason"] for n in st.values())
    r = b.cli()
    assert r.code == 0 and r.ran == [] and "4 pulled" in r.out
    assert json.loads((b.root / "out" / "text:demo" / "summary.json").read_text())["words"] == 6
    assert b.cli("cache", "verify").code == 0


def test_corrupted_remote_object_is_rejected_and_rebuilt(s3, tmp_path: Path) -> None:
    endpoint, client = s3
    a, c = Workspace(tmp_path / "a"), Workspace(tmp_path / "c")
    for w in (a, c):
        _with_remote(w, endpoint, "t2")
    assert a.cli().code == 0
    key = a.status()["read:demo"]["key"]
    client.put_object(Bucket="genesis", Key=f"t2/objects/{key[:2]}/{key}/data/all.txt", Body=b"tampered with!!")
    r = c.cli()
    assert r.code == 0 and r.ran == ["read:demo"]  # rebuilt locally; its consumers pulled
    assert "3 pulled" in r.out
    assert (c.root / "out" / "text:demo").exists()


def test_push_and_pull_by_hand(s3, tmp_path: Path) -> None:
    endpoint, client = s3
    a = Workspace(tmp_path / "a")
    assert a.cli().code == 0  # no remote configured yet: nothing pushed
    _with_remote(a, endpoint, "t3")
    r = a.cli("cache", "push")
    assert r.code == 0 and "pushed 4 objects" in r.out
    d = Workspace(tmp_path / "d")
    _with_remote(d, endpoint, "t3")
    r = d.cli("cache", "pull")
    assert r.code == 0 and "pulled 4 objects" in r.out
    assert d.cli().ran == []


def test_manifest_path_escaping_the_object_is_rejected(s3, tmp_path: Path) -> None:
    endpoint, client = s3
    a, e = Workspace(tmp_path / "a"), Workspace(tmp_path / "e")
    for w in (a, e):
        _with_remote(w, endpoint, "t4")
    assert a.cli("read:demo").code == 0
    key = a.status("read:demo")["read:demo"]["key"]
    mkey = f"t4/objects/{key[:2]}/{key}/manifest.json"
    m = json.loads(client.get_object(Bucket="genesis", Key=mkey)["Body"].read())
    m["outputs"][0]["path"] = "../../../../escape.txt"
    client.put_object(Bucket="genesis", Key=mkey, Body=json.dumps(m).encode())
    r = e.cli("read:demo")
    assert r.code == 0 and r.ran == ["read:demo"]
    assert not list(tmp_path.rglob("escape.txt"))
