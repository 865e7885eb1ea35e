"""cai-generate through the real CLI and engine: the key follows the constitution's principles
(the dry-run reason names the edited principle), only that principle's samples regenerate, and
bad input fails before any work with nothing half-written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from genesis_testlib import free_port
from cai_testlib import CaiWorkspace

pytestmark = pytest.mark.slow


def _cai(model: str, n: int = 21, extra: str = "") -> str:
    return (f'[cai]\ngenerator = "hf:{model}"\nnum_prompts = {n}\nprinciples_per_prompt = 1\n{extra}'
            '[cai.decoding]\ntemperature = 0.8\nmax_new_tokens = 4\n[cai.runtime]\nbatch_size = 32\ndevice = "cpu"\n')


@pytest.fixture
def ws(tmp_path: Path, tiny_lm: Path) -> CaiWorkspace:
    return CaiWorkspace(tmp_path / "ws", _cai(str(tiny_lm)), allow=[tiny_lm])


def test_edit_one_principle_rebuilds_with_named_reason_and_only_its_samples(ws: CaiWorkspace) -> None:
    r = ws.cli("cai-generate:caitest")
    assert r.returncode == 0, r.stdout + r.stderr
    m = ws.manifest("cai-generate:caitest")
    assert m["stats"]["generated"] == 21 and m["stats"]["cached"] == 0 and m["stats"]["total"] == 21
    out = ws.root / "out" / "cai-generate:caitest"
    rows = [json.loads(l) for l in (out / "sft.jsonl").read_text().splitlines()]
    meta = json.loads((out / "meta.json").read_text())
    assert len(rows) + meta["skipped_empty"] == 21
    assert all(r["messages"][0]["role"] == "user" and r["messages"][-1]["role"] == "assistant" for r in rows)
    assert all(s["state"] == "cached" for s in ws.status("cai-generate:caitest").values())

    genesis = ws.root / "specs/constitution/genesis.toml"
    genesis.write_text(genesis.read_text().replace(
        'text = "Be curious. Ask follow-up questions. Engage with ideas. Have opinions."',
        'text = "Be curious. Ask one good follow-up question. Have opinions."'))
    st = ws.status("cai-generate:caitest")["cai-generate:caitest"]
    assert st["state"] == "stale"
    assert "constitution.principles.curious.text changed" in st["reason"], st["reason"]
    assert st["reason"].count("principles.") == 1  # no other principle is named

    r = ws.cli("cai-generate:caitest")
    assert r.returncode == 0, r.stdout + r.stderr
    m2 = ws.manifest("cai-generate:caitest")
    curious = meta["per_principle"].get("curious", 0)
    assert m2["stats"]["generated"] == curious and m2["stats"]["cached"] == 21 - curious
    assert 0 < curious < 21

    # a comment / description edit changes no key
    genesis.write_text("# a new comment\n" + genesis.read_text().replace('description = "Genesis:', 'description = "The Genesis:'))
    assert all(s["state"] == "cached" for s in ws.status("cai-generate:caitest").values())


@pytest.mark.parametrize("edit, message", [
    (('Identify specific ways in which the answer could', 'Identify {harms} in which the answer could'),
     r"specs/constitution/genesis\.toml:\d+: constitution\.principles\.safe\.critique: unknown placeholder \{harms\}"),
    (('text = "Be honest. Never', 'text = " " #'), r"specs/constitution/genesis\.toml:\d+: constitution\.principles\.honest\.text: the principle text is empty"),
])
def test_bad_constitution_fails_before_any_work(ws: CaiWorkspace, edit: tuple[str, str], message: str) -> None:
    genesis = ws.root / "specs/constitution/genesis.toml"
    text = genesis.read_text()
    assert edit[0] in text
    genesis.write_text(text.replace(edit[0], edit[1], 1))
    r = ws.cli("cai-generate:caitest")
    assert r.returncode == 2
    assert re.search(message, r.stdout + r.stderr), r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not (ws.root / "cache" / "objects").exists() or ws.objects() == set()
    assert ws.samples() == set()


def test_too_many_principles_per_prompt_names_the_model_field(ws: CaiWorkspace, tiny_lm: Path) -> None:
    ws.write_model(_cai(str(tiny_lm)).replace("principles_per_prompt = 1", "principles_per_prompt = 8"))
    r = ws.cli("--dry-run", "cai-generate:caitest")
    assert r.returncode == 2
    assert re.search(r"specs/model/caitest\.toml:\d+: model\.cai\.principles_per_prompt: 8 principles per prompt, "
                     r"but constitution:genesis has only 7 enabled", r.stdout + r.stderr), r.stdout + r.stderr


@pytest.mark.parametrize("section", ["sft", "dpo"])
def test_batch_the_ranks_cannot_split_fails_on_dry_run(ws: CaiWorkspace, tiny_lm: Path, section: str) -> None:
    """Caught by the stage's check before anything runs, not when training starts after CAI. (A parallel
    spec with ``layout = "auto"`` picks a micro-batch that divides the batch: only a given layout can fail.)"""
    (ws.root / "specs/parallel/two-ranks.toml").write_text('nproc_per_node = 2\nmicro_batch_size = 4\nbackend = "gloo"\n')
    ws.write_model(_cai(str(tiny_lm)) + f"[{section}]\nbatch_size = 6\n",
                   top='constitution = "constitution:genesis"\nprompts = "prompts:builtin"\nparallel = "parallel:two-ranks"\n')
    r = ws.cli("--dry-run", "model:caitest")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and len(out.strip().splitlines()) == 1, out
    assert re.search(rf"specs/model/caitest\.toml:\d+: model\.{section}\.batch_size: 6 sequences per step cannot "
                     r"be split over world size 2 × micro_batch_size 4; use 8", out), out
    assert not (ws.root / "cache" / "objects").exists() or not list((ws.root / "cache" / "objects").iterdir())


def test_missing_hf_dir_is_a_spec_error(ws: CaiWorkspace, tmp_path: Path) -> None:
    ws.write_model(_cai(str(tmp_path / "nope")))
    r = ws.cli("--dry-run", "cai-generate:caitest")
    assert r.returncode == 2 and "model.cai.generator:" in r.stdout + r.stderr and "does not exist" in r.stdout + r.stderr


def test_unreachable_generator_url_fails_clearly_with_nothing_written(ws: CaiWorkspace) -> None:
    port = free_port()
    ws.write_model(_cai("x").replace('generator = "hf:x"', f'generator = "openai:http://127.0.0.1:{port}"\nmodel = "m"'))
    assert ws.cli("prompts:builtin").returncode == 0
    before = ws.objects()
    r = ws.cli("cai-generate:caitest")
    assert r.returncode != 0
    log = r.stdout + r.stderr
    logs = list((ws.root / "cache" / "logs").glob("*.log"))
    log += "".join(p.read_text() for p in logs)
    assert f"generator openai:http://127.0.0.1:{port} is unreachable" in log, log[-3000:]
    assert ws.objects() == before and ws.samples() == set()
    assert not list((ws.root / "cache" / "tmp").glob("*")) or all(".replaced." not in p.name for p in (ws.root / "cache" / "tmp").iterdir())
