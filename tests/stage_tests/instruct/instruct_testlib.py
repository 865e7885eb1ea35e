"""Helpers for the instruct tests: a few dialogues, a JSONL writer and a hand-made Context for
calling a stage's ``run`` directly (CLI workspaces: ``genesis_testlib.RepoWorkspace``)."""

from __future__ import annotations

import json
from pathlib import Path

DIALOGUES = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}],
    [{"role": "user", "content": "Spell cat."}, {"role": "assistant", "content": "C-A-T."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello. What shall we talk about?"}],
    [{"role": "user", "content": "Is 7 odd?"}, {"role": "assistant", "content": "Yes, 7 is odd."},
     {"role": "user", "content": "And 8?"}, {"role": "assistant", "content": "8 is even."}],
    [{"role": "user", "content": "Sort 3, 1, 2."}, {"role": "assistant", "content": "1, 2, 3."}],
    [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Teal. Do you like it?"}],
    [{"role": "user", "content": "How many days are in 2 weeks?"}, {"role": "assistant", "content": "14 days."}],
    [{"role": "user", "content": "Reverse: red blue"}, {"role": "assistant", "content": "blue red"}],
]


def write_jsonl(path: Path, conversations: list[list[dict]]) -> Path:
    """``{"messages": [...]}`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return path


def context(ws: Path, spec, stage: str, out: Path, inputs: dict[str, Path], run_dir: Path | None = None,
            name: str = "it"):
    """A Context for calling ``stage``'s run function by hand (inputs: name → data dir)."""
    from genesis_build.keys import digest_json
    from genesis_build.stage import Context, InputRef

    out.mkdir(parents=True, exist_ok=True)
    refs = {k: InputRef(f"{k}:{name}", p, {"output_digest": digest_json(str(p))}) for k, p in inputs.items()}
    return Context(node=f"{stage}:{name}", stage=stage, spec=spec, spec_name=name, part=None, out=out, inputs=refs,
                   files=[], workspace=ws, cache_root=ws / "cache", key="test", run_dir=run_dir)
