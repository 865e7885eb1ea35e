"""The whole product through the real CLI: `genesis-build` with no argument builds the workspace
default — corpus → tokenizer → tokenize → pretrain → export → instruct → CAI → SFT → DPO → evals →
report — on 2 CPU cores, prints where the report is, and a second run is a no-op. Then the headline
CAI case: edit the text of one of the seven principles and only that principle's samples are
generated again, followed by SFT → preferences → DPO → aligned evals → report; nothing upstream of
the CAI data runs. Last, editing the chat data makes instruct and everything after it stale, and
nothing of pretraining (dry-run states).

The workspace is the repo's own specs plus ``model:e2e``, which ``extends`` the default
``model:tiny`` with smaller step and sample counts so the test takes minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from genesis_testlib import RepoWorkspace
pytestmark = pytest.mark.slow

E2E_MODEL = """extends = "model:tiny"
# model:tiny with fewer steps and samples (the pipeline is the same)

[training]
steps = 40
warmup_steps = 4
eval_every = 20
checkpoint_every = 20

[instruct]
data = "chat:e2e"
steps = 4
warmup_steps = 1
batch_size = 8

[cai]
num_prompts = 28
[cai.decoding]
max_new_tokens = 12
[cai.preferences]
num_prompts = 12
[cai.preferences.decoding]
max_new_tokens = 12

[sft]
steps = 4
warmup_steps = 1
batch_size = 8

[dpo]
steps = 2
warmup_steps = 1
batch_size = 8
"""

E2E_EVALS = """extends = "evals:tiny"
[truthfulqa]
limit = 8
[harmbench]
limit = 8
decoding = { max_new_tokens = 8 }
[xstest]
limit = 8
decoding = { max_new_tokens = 8 }
[engagement]
limit = 8
decoding = { max_new_tokens = 8 }
"""

# the built-in dialogues plus a local file the test edits
E2E_CHAT = """[validation]
min_conversations = 8

[[sources]]
name = "ours"
type = "builtin"

[[sources]]
name = "local"
type = "jsonl"
path = "data/chat.jsonl"
"""
LOCAL_CHAT = '{"messages": [{"role": "user", "content": "Who made you?"}, {"role": "assistant", "content": "The genesis-build project."}]}\n'

UPSTREAM = {"corpus", "corpus-source", "tokenizer", "tokenize", "pretrain", "export", "prompts"}
INSTRUCT = {"chat", "instruct", "export-instruct"}
CAI_CHAIN = {"cai-generate", "sft", "cai-preferences", "dpo", "export-aligned"}


class Product(RepoWorkspace):
    """A workspace holding the repo's specs, with ``model:e2e`` as its default target."""

    timeout = 1800

    def __init__(self, root: Path) -> None:
        super().__init__(root, default="model:e2e")
        model = E2E_MODEL.replace('extends = "model:tiny"\n', 'extends = "model:tiny"\nevals = "evals:e2e"\n')
        self.write("specs/model/e2e.toml", model)
        self.write("specs/evals/e2e.toml", E2E_EVALS)
        self.write("specs/chat/e2e.toml", E2E_CHAT)
        self.write("data/chat.jsonl", LOCAL_CHAT)


def _stage(node: str) -> str:
    return node.split(":", 1)[0]


def test_default_target_end_to_end_then_one_principle_edit(tmp_path: Path) -> None:
    ws = Product(tmp_path / "ws")

    t0 = time.time()
    r = ws.cli()
    took = time.time() - t0
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    first = ws.manifests()
    built = {m["node"] for m in first.values()}
    stages_run = {_stage(n) for n in built}
    assert UPSTREAM | INSTRUCT | CAI_CHAIN | {"eval", "report"} <= stages_run, sorted(stages_run)
    assert {"eval:e2e/base", "eval:e2e/instruct", "eval:e2e/aligned"} <= built, sorted(built)
    # CAI ran on the instruct model (the default when the spec has [instruct])
    gen0 = next(m for m in first.values() if m["node"] == "cai-generate:e2e")
    assert "instruct" in gen0["inputs"] and "base" not in gen0["inputs"], sorted(gen0["inputs"])
    # the CLI says where the report is, and it is there
    assert "model:e2e → out/model:e2e/index.html" in r.stdout, r.stdout[-2000:]
    report = ws.root / "out" / "model:e2e" / "index.html"
    html = report.read_text()
    assert "<img" in html and "aligned" in html and "instruct − base" in html and "aligned − instruct" in html
    print(f"default target built in {took:.0f}s ({len(first)} objects)")

    # a second run: nothing runs, and the answer comes from the stat-only no-op path once the files
    # are older than the racy window
    r = ws.cli()
    assert r.returncode == 0 and "(no-op)" in r.stdout, r.stdout
    assert ws.manifests().keys() == first.keys()
    time.sleep(2.5)
    ws.cli()
    t1 = time.time()
    r = ws.cli()
    print(f"no-op run: {time.time() - t1:.2f}s")
    assert r.returncode == 0 and "cached (no-op)" in r.stdout and ws.manifests().keys() == first.keys()

    # edit the text of one principle: only the CAI data of that principle is generated again
    genesis = ws.root / "specs/constitution/genesis.toml"
    text = genesis.read_text()
    assert "Be interesting. A model nobody wants" in text
    genesis.write_text(text.replace("Be interesting. A model nobody wants", "Be interesting. A model no one wants"))
    st = ws.status()
    assert st["cai-generate:e2e"]["state"] == "stale"
    assert "constitution.principles.interesting.text changed" in st["cai-generate:e2e"]["reason"]
    for nid, rec in st.items():
        if _stage(nid) in UPSTREAM | INSTRUCT or nid in ("eval:e2e/base", "eval:e2e/instruct") or _stage(nid) == "eval-data":
            assert rec["state"] == "cached", (nid, rec)

    r = ws.cli()
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    after = ws.manifests()
    rerun = {after[k]["node"] for k in after.keys() - first.keys()}
    assert not {n for n in rerun if _stage(n) in UPSTREAM | INSTRUCT}, sorted(rerun)
    assert {"cai-generate:e2e", "sft:e2e", "cai-preferences:e2e", "dpo:e2e", "export-aligned:e2e",
            "eval:e2e/aligned", "report:e2e"} <= rerun, sorted(rerun)
    assert "eval:e2e/base" not in rerun and "eval:e2e/instruct" not in rerun
    gen = next(m for k, m in after.items() if k not in first and m["node"] == "cai-generate:e2e")
    data = ws.root / "cache" / "objects" / gen["key"][:2] / gen["key"] / "data"
    per = json.loads((data / "meta.json").read_text())["per_principle"]
    stats = gen["stats"]
    assert stats["total"] == 28 and stats["generated"] == per["interesting"], (stats, per)
    assert 0 < stats["generated"] <= 28 // 7 * 2 and stats["cached"] == 28 - stats["generated"]

    # edit the chat data: instruct and everything after it is stale, pretraining and the base are not
    (ws.root / "data/chat.jsonl").write_text(LOCAL_CHAT.replace("genesis-build project", "genesis-build team"))
    st = ws.status()
    assert st["chat:e2e"]["state"] == "stale", st["chat:e2e"]
    after_chat = {"instruct:e2e", "export-instruct:e2e", "cai-generate:e2e", "sft:e2e", "cai-preferences:e2e", "dpo:e2e",
                  "export-aligned:e2e", "eval:e2e/instruct", "eval:e2e/aligned", "report:e2e"}
    for nid in after_chat:  # stale, or waiting for a rebuilt input to know its key: both will run
        assert st[nid]["state"] in ("stale", "waiting"), (nid, st[nid])
    assert "chat:e2e" in st["instruct:e2e"]["reason"], st["instruct:e2e"]
    for nid, rec in st.items():
        if _stage(nid) in UPSTREAM or nid == "eval:e2e/base" or _stage(nid) == "eval-data":
            assert rec["state"] == "cached", (nid, rec)
