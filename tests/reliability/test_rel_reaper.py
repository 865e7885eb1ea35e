"""The lifeline reaper of a stage whose engine died SIGKILLs the stage's process group after a grace
period — and must never kill an unrelated process group that got the same number after pids wrapped.

Found by the second reliability round while chasing an unexplained ``exit code -9``: pids wrap, so it is now
checked that a reused number is spared. It also found that the reaper never killed anything on Debian:
``/bin/sh`` is dash, which refuses ``kill -KILL -- -PGID``."""

from __future__ import annotations

import subprocess
import time

from genesis_build.worker import reaper_script, start_time
from rel_helpers import record


def _group() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _run(script: str) -> None:
    subprocess.run(["/bin/sh", "-c", script], timeout=30, check=False)


def test_reaper_kills_its_own_group() -> None:
    p = _group()
    try:
        _run(reaper_script(p.pid, 0.1))
        assert p.wait(timeout=10) == -9
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_reaper_spares_a_reused_number() -> None:
    p = _group()
    ok = False
    try:
        script = reaper_script(p.pid, 0.1)
        # what the reaper would see if the number had been reused: another start time for the leader
        real = start_time(p.pid)
        assert real is not None and f'"{real}"' in script
        _run(script.replace(f'"{real}"', '"1"'))
        time.sleep(0.2)
        assert p.poll() is None, "an unrelated process group was killed"
        ok = True
    finally:
        p.kill()
        p.wait()
        record("fault", "lifeline reaper spares a reused process-group number", ok)
