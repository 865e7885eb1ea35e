"""Runs one stage from a JSON payload: ``python -m genesis_build.worker payload.json``.

Used for heavy stages (a subprocess per node, so a crash or a torch import never touches the
engine) and, through ``run_payload``, for light stages in process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import DISK_FULL, DISK_FULL_EXIT, GenesisError


def run_payload(payload: dict[str, Any], log: Any = None, progress: Callable[[dict], None] | None = None) -> None:
    """Load the workspace's stages and run the payload's node into its ``out`` dir."""
    from .context import make_context
    from .graph import Project
    from .stage import get_stage

    project = Project(Path(payload["workspace"]), payload["plugins"], [Path(p) for p in payload.get("allow_paths", [])])
    ctx = make_context(payload, project, progress)
    fd = os.environ.get("GENESIS_PROGRESS_FD")
    if progress is None and fd:
        ctx.progress_fd = int(fd)
    ctx.log_file = log
    get_stage(payload["stage"]).run(ctx)
    Path(payload["stats_path"]).write_text(json.dumps(ctx.recorded_stats, default=str))


KILL_GRACE_S = 30  # after the engine dies: SIGTERM (trainers checkpoint), then SIGKILL


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reaper_script(pgid: int, grace_s: float) -> str:
    """Shell that SIGKILLs process group ``pgid`` after ``grace_s`` — unless the number now belongs to
    another process. Pids wrap: once our whole group is gone, its number can be handed to an unrelated
    process (another build's stage) that leads its own group; killing ``-pgid`` blindly then kills
    that innocent group. While any member of our group lives the kernel does not reuse the number, so:
    kill when the leader is gone (members may remain) or is still the same process (same start time).
    ``kill -s KILL -- -PGID`` is the form dash (Debian's /bin/sh) accepts; ``kill -KILL -- -PGID`` is
    refused there ("Illegal number"), so the reaper used to kill nothing."""
    started = start_time(pgid) or ""
    return (f"sleep {grace_s}; st=$(sed 's/.*) //' /proc/{pgid}/stat 2>/dev/null | cut -d' ' -f20); "
            f"if [ -z \"$st\" ] || [ \"$st\" = \"{started}\" ]; then kill -s KILL -- -{pgid} 2>/dev/null; fi")


def watch_lifeline(fd: int) -> None:
    """Block on the engine's lifeline pipe; at EOF (the engine died, even by SIGKILL) terminate this
    stage's whole process group, so no orphan keeps writing a run dir whose lock died with it."""

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        pgid = os.getpgid(0)
        # a detached reaper outlives us: SIGKILL whatever ignored the SIGTERM after the grace period
        subprocess.Popen(["/bin/sh", "-c", reaper_script(pgid, KILL_GRACE_S)],
                         cwd="/", start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.killpg(pgid, signal.SIGTERM)

    threading.Thread(target=watch, name="genesis-lifeline", daemon=True).start()


def _record_error(payload: dict[str, Any], err: dict[str, Any]) -> bool:
    try:
        Path(payload["error_path"]).write_text(json.dumps(err))
        return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Subprocess entry point; writes ``error.json`` for the engine on failure."""
    payload = json.loads(Path(argv[0]).read_text())
    fd = os.environ.pop("GENESIS_LIFELINE_FD", None)
    if fd:
        watch_lifeline(int(fd))
    try:
        run_payload(payload, log=sys.stdout)
        return 0
    except GenesisError as e:
        _record_error(payload, {"user_error": True, "message": str(e)})
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _record_error(payload, {"user_error": False, "message": "interrupted"})
        return 130
    except OSError as e:
        traceback.print_exc()
        if e.errno in DISK_FULL:
            recorded = _record_error(payload, {"user_error": False, "errno": e.errno, "filename": e.filename,
                                               "message": f"{type(e).__name__}: {e}"})
            return 1 if recorded else DISK_FULL_EXIT
        _record_error(payload, {"user_error": False, "message": f"{type(e).__name__}: {e}"})
        return 1
    except BaseException as e:  # noqa: BLE001 — recorded for the engine, traceback into the log
        traceback.print_exc()
        _record_error(payload, {"user_error": False, "message": f"{type(e).__name__}: {e}"})
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
