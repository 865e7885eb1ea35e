"""Bounded load test of ``serve`` (loopback only): a fixed number of requests of mixed sizes from
concurrent clients; every request must complete with its expected status (none starved, none
answered 503 while the clients fit the queue), and p50/p99 latency is reported (not asserted)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rel_helpers import record
from relserve import make_lm, start

pytestmark = pytest.mark.slow
CONTEXT = 256
REQUESTS, CLIENTS, QUEUE = 36, 6, 8


def test_mixed_load_every_request_completes(tmp_path: Path) -> None:
    from stages.serving.load import percentiles, plan, run

    httpd, base = start(make_lm(tmp_path / "m", context=CONTEXT), max_queue=QUEUE)
    ok, lat = False, {}
    try:
        reqs = plan(REQUESTS, "tiny", CONTEXT, seed=1)
        out = run(base, reqs, clients=CLIENTS)
        lat = percentiles([o.seconds for o in out])
        print(f"\nserve load: {len(out)} requests, {CLIENTS} clients: p50 {lat['p50']:.3f} s, p99 {lat['p99']:.3f} s; "
              f"{dict(Counter(o.kind for o in out))}")
        assert len(out) == REQUESTS
        wrong = [(o.kind, o.status, o.expected, o.error) for o in out if o.status != o.expected]
        assert not wrong, wrong  # every request completed as expected: nothing starved, timed out or got 503
        assert httpd.api.admitted == 0  # every slot was given back
        ok = True
    finally:
        httpd.shutdown()
        httpd.server_close()
        record("server", f"bounded load: {REQUESTS} mixed requests, {CLIENTS} clients, all complete", ok,
               **({"p50_s": round(lat["p50"], 4), "p99_s": round(lat["p99"], 4)} if ok else {}))
