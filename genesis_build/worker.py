"""Runs one stage from a JSON payload: ``python -m genesis_build.worker payload.json``.

Used for heavy stages (a subprocess per node, so a crash or a torch import never touches the
engine) and, through ``run_payload``, for light stages in process.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import GenesisError


def run_payload(payload: dict[str, Any], log: Any = None, progress: Callable[[dict], None] | None = None) -> None:
    """Load the workspace's stages and run the payload's node into its ``out`` dir."""
    from .executor import make_context
    from .graph import Project
    from .stage import get_stage

    project = Project(Path(payload["workspace"]), payload["plugins"], [Path(p) for p in payload.get("allow_paths", [])])
    ctx = make_context(payload, project)
    ctx.progress_cb = progress
    fd = os.environ.get("GENESIS_PROGRESS_FD")
    if progress is None and fd:
        ctx.progress_fd = int(fd)
    ctx.log_file = log
    get_stage(payload["stage"]).run(ctx)
    Path(payload["stats_path"]).write_text(json.dumps(ctx.recorded_stats, default=str))


def main(argv: list[str]) -> int:
    """Subprocess entry point; writes ``error.json`` for the engine on failure."""
    payload = json.loads(Path(argv[0]).read_text())
    try:
        run_payload(payload, log=sys.stdout)
        return 0
    except GenesisError as e:
        Path(payload["error_path"]).write_text(json.dumps({"user_error": True, "message": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        Path(payload["error_path"]).write_text(json.dumps({"user_error": False, "message": "interrupted"}))
        return 130
    except BaseException as e:  # noqa: BLE001 — recorded for the engine, traceback into the log
        traceback.print_exc()
        Path(payload["error_path"]).write_text(json.dumps({"user_error": False, "message": f"{type(e).__name__}: {e}"}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
