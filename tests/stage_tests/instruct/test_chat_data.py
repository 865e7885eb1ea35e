"""The ``chat`` kind: sources in the ``messages`` layout (JSONL, Parquet, a datasets dir, the
built-in set), filters, dedup, weights and the validation split; bad rows and bad references
fail with one line naming file, line and field (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genesis_testlib import RepoWorkspace
from instruct_testlib import DIALOGUES, write_jsonl

from stages.chat_lib.data import build, normalize, InvalidConversation
from stages.chat_lib.spec import ChatSpec


def _spec(**kw) -> ChatSpec:
    return ChatSpec.model_validate(kw)


def test_builtin_set_is_ours_reproducible_and_short() -> None:
    from stages.chat_lib import builtin

    # the shipped file is exactly what the project's own generator writes
    assert builtin.BUILTIN_FILE.read_text(encoding="utf-8") == builtin.render_jsonl()
    rows = [json.loads(l)["messages"] for l in builtin.BUILTIN_FILE.read_text().splitlines()]
    assert len(rows) == 400
    for msgs in rows:
        assert normalize(msgs) == msgs and msgs[-1]["role"] == "assistant"
        assert sum(len(m["content"]) for m in msgs) < 300  # fits model:tiny's 128-token context


def test_filters_dedup_weights_and_split(tmp_path: Path) -> None:
    convs = DIALOGUES + [DIALOGUES[0]] + [[{"role": "user", "content": "unanswered"}],
                                          [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y" * 60}]]
    f = write_jsonl(tmp_path / "a.jsonl", convs)
    spec = _spec(sources=[{"name": "a", "type": "jsonl", "path": str(f), "weight": 2.0}],
                 filters={"max_turns": 1, "max_chars": 100}, validation={"fraction": 0.0, "min_conversations": 2})
    train, val, stats = build(spec, tmp_path, "chat:t")
    st = stats["sources"]["a"]
    # one exact duplicate, one without an answer, one two-turn dialogue (max_turns 1), one too long
    assert (st["duplicate"], st["no_answer"], st["turns"], st["chars"]) == (1, 1, 1, 1), st
    assert st["kept"] == len(DIALOGUES) - 1 and len(val) == 2
    assert len(train) == 2 * (len(DIALOGUES) - 1 - 2)  # weight 2: every train conversation twice
    assert not {r["id"] for r in val} & {r["id"] for r in train}  # a validation conversation is never trained on
    # decisions depend on the conversation, not on its position: a shuffled file gives the same split
    g = write_jsonl(tmp_path / "b.jsonl", list(reversed(convs)))
    spec2 = spec.model_copy(update={"sources": [spec.sources[0].model_copy(update={"path": str(g)})]})
    assert {r["id"] for r in build(spec2, tmp_path, "chat:t")[1]} == {r["id"] for r in val}


def test_fractional_weight_keeps_a_seeded_share(tmp_path: Path) -> None:
    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(400)]
    f = write_jsonl(tmp_path / "a.jsonl", convs)
    spec = _spec(sources=[{"name": "a", "type": "jsonl", "path": str(f), "weight": 0.25}],
                 validation={"fraction": 0.0, "min_conversations": 0})
    train, _, _ = build(spec, tmp_path, "chat:t")
    assert 70 < len(train) < 130
    assert train == build(spec, tmp_path, "chat:t")[0]


def test_parquet_and_datasets_dir_sources(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"conversation": DIALOGUES[:4]}), tmp_path / "c.parquet")
    datasets.Dataset.from_dict({"messages": DIALOGUES[4:]}).save_to_disk(str(tmp_path / "ds"))
    spec = _spec(sources=[{"name": "p", "type": "parquet", "path": "c.parquet", "messages_field": "conversation"},
                          {"name": "d", "type": "disk", "path": "ds"}],
                 validation={"fraction": 0.0, "min_conversations": 0})
    train, _, stats = build(spec, tmp_path, "chat:t")
    assert stats["sources"]["p"]["kept"] == 4 and stats["sources"]["d"]["kept"] == 4
    assert [r["messages"] for r in train] == [normalize(c) for c in DIALOGUES]


@pytest.mark.parametrize("turns, field", [
    ([{"role": "bot", "content": "hi"}], "messages[0].role: 'bot' is not one of system, user, assistant"),
    ([{"role": "user", "content": "hi"}, {"role": "asistant", "content": "x"}], "did you mean assistant"),
    ([{"role": "user", "content": 3}], "messages[0].content: expected a string"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "messages[1].role: a system turn may only come first"),
])
def test_bad_turn_names_the_field(turns: list, field: str) -> None:
    with pytest.raises(InvalidConversation, match=field.replace("[", r"\[").replace("]", r"\]")):
        normalize(turns)


def test_hub_sources_must_be_pinned() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="pin the hub dataset with `revision`"):
        _spec(sources=[{"name": "h", "type": "hub", "dataset": "org/set"}])


def test_cli_bad_row_and_bad_references_are_one_line_errors(tmp_path: Path) -> None:
    ws = RepoWorkspace(tmp_path / "ws")
    rows = [{"messages": c} for c in DIALOGUES[:3]] + [{"messages": [{"role": "user", "content": "q"},
                                                                      {"role": "assitant", "content": "a"}]}]
    ws.write("data/chat.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ws.write("specs/chat/local.toml", '[[sources]]\nname = "mine"\ntype = "jsonl"\npath = "data/chat.jsonl"\n')
    r = ws.cli("chat:local")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    err = (r.stdout + r.stderr).strip().splitlines()
    line = next(l for l in err if "data/chat.jsonl:4" in l)
    assert "messages[1].role: 'assitant'" in line and "did you mean assistant" in line, line

    # a missing path is found at plan time and points into the spec file
    ws.write("specs/chat/gone.toml", '[[sources]]\nname = "x"\ntype = "jsonl"\npath = "data/nope.jsonl"\n')
    r = ws.cli("--dry-run", "chat:gone")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "specs/chat/gone.toml:4" in r.stderr and "chat.sources[0].path" in r.stderr and "does not exist" in r.stderr, r.stderr

    # a model whose [instruct] names a chat spec that does not exist: file, line, field, did-you-mean
    ws.write("specs/model/m.toml", 'extends = "model:tiny"\n[instruct]\ndata = "chat:bultin"\n')
    r = ws.cli("--dry-run", "instruct:m")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "specs/model/m.toml:3" in r.stderr and "instruct.data" in r.stderr and "did you mean builtin" in r.stderr, r.stderr

    # a CAI role naming the instruct model without an [instruct] section
    ws.write("specs/model/n.toml", 'tokenizer = "tokenizer:tiny"\nconstitution = "constitution:genesis"\n'
             'prompts = "prompts:builtin"\n[architecture]\nhidden_size = 32\nnum_layers = 1\nnum_heads = 2\n'
             'ffn_size = 64\ncontext_length = 64\n[training]\nglobal_batch_tokens = 1024\nsteps = 2\nlr = 1e-3\n'
             '[cai]\ngenerator = "instruct"\n')
    r = ws.cli("--dry-run", "cai-generate:n")
    assert r.returncode == 2 and "cai.generator" in r.stderr and "no [instruct]" in r.stderr, r.stderr


def test_cli_builds_the_builtin_set(tmp_path: Path) -> None:
    ws = RepoWorkspace(tmp_path / "ws")
    r = ws.cli("chat:builtin")
    assert r.returncode == 0, r.stdout + r.stderr
    data = ws.data("chat:builtin")
    stats = json.loads((data / "stats.json").read_text())
    assert stats["unique"] == stats["train"] + stats["validation"] > 300 and stats["validation"] >= 8
