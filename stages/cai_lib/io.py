"""Small I/O helpers shared by the CAI stages (stdlib only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped); a bad line is an error naming file and line."""
    from genesis_build.errors import GenesisError

    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise GenesisError(f"{path}:{i}: invalid JSON line ({e})") from None
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL (stable key order, so identical data gives identical bytes)."""
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def write_json(path: Path, value: Any) -> None:
    """Write pretty, key-sorted JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def local_model(ctx: Any, input_name: str, subdir: str = "") -> tuple[Path, str]:
    """(HF model dir, content digest) of a built input: its output digest identifies the weights."""
    ref = ctx.inputs[input_name]
    return (ref.path / subdir if subdir else ref.path), str(ref.manifest.get("output_digest") or ref.manifest.get("key"))
