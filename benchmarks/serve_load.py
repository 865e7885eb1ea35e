"""Bounded load on the OpenAI-compatible server: p50/p99 latency of a fixed mix of requests.

    python benchmarks/serve_load.py                           # a random tiny model (context 256)
    python benchmarks/serve_load.py --model out/export:tiny   # an exported model
    python benchmarks/serve_load.py --requests 60 --clients 8 --max-queue 8

Loopback only (127.0.0.1, a free port). The mix (see ``stages/serving/load.py``): short and long
completions, chat with sampling, streaming, prompt scoring within the context, and over-long
scoring prompts that must be refused (400) at once. Prints p50/p99 per kind and overall, and how
many requests did not complete as expected (must be 0: nothing starved). There is no peer here:
this measures our server's latency under a bounded mixed load, not a speed goal against another
server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    """Run the load and print the figures; exit 1 if any request did not complete as expected."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir (default: a random tiny Llama built here)")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from stages.serving.load import percentiles, plan, run
    from stages.serving.openai_server import make_server

    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if model is None:
            sys.path.insert(0, str(ROOT / "tests" / "reliability"))
            from relserve import make_lm

            model = str(make_lm(Path(tmp) / "tiny", context=256))
        httpd = make_server(model, "127.0.0.1", 0, model_name="bench", device="cpu", max_queue=a.max_queue)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            out = run(base, plan(a.requests, "bench", httpd.api.cm.context_length, a.seed), clients=a.clients)
        finally:
            httpd.shutdown()
            httpd.server_close()
    by = defaultdict(list)
    for o in out:
        by[o.kind].append(o.seconds)
    print(f"serve load: {len(out)} requests, {a.clients} clients, max_queue {a.max_queue}, model {a.model or 'random tiny (context 256)'}")
    print(f"{'kind':10} {'n':>4} {'p50 s':>8} {'p99 s':>8}")
    for kind, vals in sorted(by.items()):
        p = percentiles(vals)
        print(f"{kind:10} {len(vals):4d} {p['p50']:8.3f} {p['p99']:8.3f}")
    p = percentiles([o.seconds for o in out])
    bad = [o for o in out if o.status != o.expected]
    print(f"{'all':10} {len(out):4d} {p['p50']:8.3f} {p['p99']:8.3f}")
    print(f"not completed as expected: {len(bad)}" + "".join(f"\n  {o.kind}: {o.status} (want {o.expected}) {o.error}" for o in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
