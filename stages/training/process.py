"""Supervising a launcher subprocess (torchrun, ``sbatch --wait``): signal forwarding and progress tailing.

Shared by :mod:`stages.training.launch` and :mod:`stages.training.slurm` (it sits below both, so
neither imports the other for it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

SHUTDOWN_TIMEOUT_S = 300  # how long torchrun lets ranks checkpoint after SIGTERM before SIGKILL


def stages_root() -> Path:
    """Directory containing the ``stages`` package (put on the ranks' PYTHONPATH)."""
    import stages

    return Path(stages.__file__).resolve().parent.parent


def set_pdeathsig() -> None:
    """``preexec_fn``: the child gets SIGTERM when its parent dies (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _tail(path: Path, on_line: Callable[[dict[str, Any]], None], done: threading.Event) -> None:
    pos = 0
    while True:
        finished = done.is_set()
        if path.is_file():
            with open(path) as f:
                f.seek(pos)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            pos += len(complete.encode())
            for line in complete.splitlines():
                try:
                    on_line(json.loads(line))
                except ValueError:
                    continue
        if finished:
            return
        done.wait(0.5)


def supervise(proc: subprocess.Popen, stop: Callable[[], None], progress_file: Path | None,
               on_progress: Callable[[dict[str, Any]], None] | None) -> int:
    """Wait for ``proc``; the first SIGTERM/SIGINT calls ``stop`` once; progress lines go to ``on_progress``."""
    forwarded = threading.Event()

    def forward(signum: int, frame: Any) -> None:
        if not forwarded.is_set():
            forwarded.set()
            try:
                stop()
            except ProcessLookupError:
                pass

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, forward)
    done = threading.Event()
    tail = None
    if progress_file is not None and on_progress is not None:
        tail = threading.Thread(target=_tail, args=(progress_file, on_progress, done), daemon=True)
        tail.start()
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
    finally:
        done.set()
        if tail is not None:
            tail.join(timeout=5)
        for sig, h in old.items():
            signal.signal(sig, h)
    time.sleep(0)  # let a pending signal handler run before we report
    return rc
