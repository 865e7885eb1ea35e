"""Chat with an exported model in the terminal, using the tokenizer's chat template.

    genesis-build chat export-aligned:tiny           # the lead's CLI wiring
    python -m stages.serving.chat out/export:tiny --system "Be brief."
    printf 'hello\\n/reset\\nhi\\n' | python -m stages.serving.chat MODEL_DIR   # piped input works

Each line you type is a user turn; the reply streams as it is generated. The whole conversation is
sent every turn (the template renders it); when it no longer fits the context, the oldest turns
are dropped. Commands: ``/reset`` (new conversation), ``/system TEXT`` (set the system prompt and
reset), ``/exit`` (or end of input).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO


class ChatSession:
    """A conversation with one model (the testable core of :func:`chat`)."""

    def __init__(self, chat_model: Any, system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.7,
                 top_p: float = 0.95, seed: int | None = None) -> None:
        self.cm = chat_model
        self.system = system
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (keeps the system prompt)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def _fit(self) -> str:
        """The rendered prompt, dropping the oldest turns while it leaves no room to answer."""
        while True:
            prompt = self.cm.render_chat(self.messages)
            n = len(self.cm.encode(prompt, chat=True))
            first_turn = 1 if self.system else 0
            if n + min(self.max_new_tokens, 16) <= self.cm.context_length or len(self.messages) - first_turn <= 1:
                return prompt
            del self.messages[first_turn: first_turn + 2]  # the oldest user/assistant pair

    def send(self, text: str, out: TextIO | None = None) -> str:
        """Add a user turn, stream the reply to ``out``, record and return it."""
        self.messages.append({"role": "user", "content": text})
        prompt = self._fit()
        pieces = []
        for piece in self.cm.stream(prompt, chat=True, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                    top_p=self.top_p, seed=self.seed):
            pieces.append(piece)
            if out is not None:
                out.write(piece)
                out.flush()
        reply = "".join(pieces).strip()
        self.messages.append({"role": "assistant", "content": reply})
        return reply


def run_loop(session: ChatSession, stdin: TextIO, stdout: TextIO, name: str = "model") -> int:
    """Read user lines from ``stdin`` until EOF or ``/exit``; returns the number of turns."""
    interactive = stdin.isatty()
    turns = 0
    stdout.write(f"chatting with {name} — /reset, /system TEXT, /exit\n")
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            session.reset()
            stdout.write("[conversation reset]\n")
            continue
        if text.startswith("/system"):
            session.system = text[len("/system"):].strip() or None
            session.reset()
            stdout.write("[system prompt set; conversation reset]\n")
            continue
        if not interactive:
            stdout.write(f"you> {text}\n")  # echo piped input so the transcript reads as a chat
        stdout.write(f"{name}> ")
        stdout.flush()
        session.send(text, stdout)
        stdout.write("\n")
        stdout.flush()
        turns += 1
    return turns


def chat(model_dir: str | Path, system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.7,
         top_p: float = 0.95, seed: int | None = None, device: str = "auto", dtype: str = "auto",
         stdin: TextIO | None = None, stdout: TextIO | None = None, name: str | None = None) -> int:
    """Interactive chat with ``model_dir`` on the terminal (or the given streams); returns turns."""
    from stages.serving.model import ChatModel

    cm = ChatModel(model_dir, device=device, dtype=dtype, name=name)
    session = ChatSession(cm, system, max_new_tokens, temperature, top_p, seed)
    try:
        return run_loop(session, stdin or sys.stdin, stdout or sys.stdout, cm.name)
    except KeyboardInterrupt:
        return len([m for m in session.messages if m["role"] == "assistant"])


def main(argv: list[str] | None = None) -> None:
    """``python -m stages.serving.chat MODEL_DIR [--system TEXT] [--max-new-tokens N] [--temperature T]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--system", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    chat(a.model_dir, a.system, a.max_new_tokens, a.temperature, a.top_p, a.seed, a.device)


if __name__ == "__main__":
    main()
