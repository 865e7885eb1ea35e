"""The terminal chat: piped stdin through the real module, and the session's history handling."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals_testlib import ROOT


def test_piped_chat_session(eval_lm: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "stages.serving.chat", str(eval_lm), "--max-new-tokens", "6", "--temperature", "0",
                        "--device", "cpu"], input="hello\n\n/system Be terse.\nsecond question\n/exit\nnever read\n",
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    name = eval_lm.name
    assert out.startswith(f"chatting with {name}")
    assert "you> hello\n" in out and "you> second question\n" in out and "never read" not in out
    assert out.count(f"{name}> ") == 2
    assert "[system prompt set; conversation reset]" in out


@pytest.fixture(scope="module")
def cm(eval_lm: Path):
    from stages.serving.model import ChatModel

    return ChatModel(eval_lm, device="cpu")


def test_session_keeps_history_and_streams(cm) -> None:
    from stages.serving.chat import ChatSession, run_loop

    s = ChatSession(cm, system="sys", max_new_tokens=5, temperature=0)
    buf = io.StringIO()
    reply = s.send("first", buf)
    assert buf.getvalue().strip() == reply
    s.send("second")
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    # the second prompt rendered the whole conversation through the chat template
    prompt = cm.render_chat(s.messages[:4])
    assert prompt.index("<|user|>first<|end|>") < prompt.index("<|user|>second<|end|>")
    s.reset()
    assert s.messages == [{"role": "system", "content": "sys"}]
    turns = run_loop(s, io.StringIO("a\n/reset\nb\n"), io.StringIO())
    assert turns == 2 and [m["content"] for m in s.messages if m["role"] == "user"] == ["b"]


def test_oldest_turns_are_dropped_when_the_context_is_full(cm, monkeypatch) -> None:
    from stages.serving.chat import ChatSession

    s = ChatSession(cm, max_new_tokens=4, temperature=0)
    for i in range(3):
        s.send(f"message number {i} " + "padding " * 10)
    n_tokens = len(cm.encode(cm.render_chat(s.messages), chat=True))
    monkeypatch.setattr(cm, "context_length", n_tokens)  # the next turn no longer fits
    s.send("last")
    users = [m["content"] for m in s.messages if m["role"] == "user"]
    assert users[-1] == "last" and not users[0].startswith("message number 0")
