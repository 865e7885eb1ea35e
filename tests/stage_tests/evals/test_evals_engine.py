"""``eval-data``, ``eval`` and ``report`` through the real CLI in a temp workspace.

Upstream stages are stand-ins (evals_standins.py) that publish prebuilt tiny models and a metrics
log, so the whole eval/report part of the graph runs in seconds: keys, per-suite incrementality,
the suite-result cache, the results layout and the report's diff against the previous build.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from evals_testlib import SHARED_EVALS
from genesis_testlib import RepoWorkspace
from test_report_render import write_metrics

EVALS = """
[runtime]
device = "cpu"
batch_size = 4

[truthfulqa]
limit = 3

[harmbench]
limit = 4
decoding = {{ max_new_tokens = {hb_tokens} }}

[xstest]
{xstest_path}
limit = 4
decoding = {{ max_new_tokens = 6 }}

[engagement]
limit = 4
decoding = {{ max_new_tokens = 6 }}
"""
MODEL = """extends = "model:tiny"            # the repo's tiny model (its upstream is stood in for)
constitution = "constitution:genesis"
evals = "evals:t"
"""


class EvalWorkspace(RepoWorkspace):
    """The repo's specs plus ``model:t`` and ``evals:t``, with the upstream stages stood in for."""

    timeout = 900

    def __init__(self, root: Path, base: Path, aligned: Path, metrics: Path) -> None:
        super().__init__(root, default="report:t", plugins=("stages", "evals_standins"),
                         allow=(base, aligned, metrics.parent, SHARED_EVALS))
        shutil.copy(Path(__file__).parent / "evals_standins.py", root / "evals_standins.py")
        self.write("specs/model/t.toml", MODEL)
        self.models = {"EVT_BASE": str(base), "EVT_ALIGNED": str(aligned), "EVT_METRICS": str(metrics)}

    def extra_env(self) -> dict[str, str]:
        """Where the stand-ins find the prebuilt models and the metrics log."""
        return self.models

    def write_evals(self, hb_tokens: int = 6, xstest_path: str = "") -> None:
        """specs/evals/t.toml with the given HarmBench length and XSTest file."""
        self.write("specs/evals/t.toml", EVALS.format(hb_tokens=hb_tokens, xstest_path=xstest_path))

    def manifest_of_link(self, link: str) -> dict:
        """The manifest of the object ``out/<link>`` points into."""
        return json.loads(((self.root / "out" / link).resolve().parent / "manifest.json").read_text())


@pytest.mark.slow
def test_eval_and_report_through_the_engine(tmp_path: Path, eval_lm: Path, yes_lm: Path) -> None:
    (tmp_path / "m").mkdir()
    ws = EvalWorkspace(tmp_path / "ws", eval_lm, yes_lm, write_metrics(tmp_path / "m" / "metrics.jsonl"))
    ws.write_evals()
    st = ws.status("report:t")
    suites = ["truthfulqa", "harmbench", "xstest", "engagement"]
    assert {f"eval-data:t/{s}" for s in suites} | {"eval:t/base", "eval:t/instruct", "eval:t/aligned", "report:t"} <= set(st)

    r = ws.cli("report:t", "eval:t/base", "eval:t/aligned")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    base = json.loads((ws.root / "out" / "eval:t__base" / "results.json").read_text())
    assert set(base) >= {"results", "n-samples", "config"}
    assert base["config"]["model"] == "export:t" and base["config"]["variant"] == "base"
    assert base["n-samples"]["truthfulqa_mc1"] == {"original": 24, "effective": 3}
    assert base["config"]["suites"]["harmbench"]["source"]["kind"] == "builtin" and "built-in" in base["config"]["note"]
    aligned = json.loads((ws.root / "out" / "eval:t__aligned" / "results.json").read_text())
    assert aligned["results"]["harmbench"]["asr"] == 1.0  # the stand-in "aligned" model answers "yes" to everything
    assert (ws.root / "out" / "eval:t__base" / "samples" / "xstest.jsonl").is_file()
    m = ws.manifest_of_link("eval:t__base")
    assert m["stats"]["reused"] == [] and "truthfulqa_mc1/acc" in m["stats"]
    html = (ws.root / "out" / "report:t" / "index.html").read_text()
    assert "First build of this target" in html and "resumed at step 15, 25" in html
    assert "cai-generate:t" in html and "cai-preferences:t" in html and "aligned − instruct" in html

    # nothing changed: everything cached
    assert all(n["state"] == "cached" for n in ws.status("report:t").values())

    # one suite's setting changes: only its data node, the three eval nodes and the report are stale;
    # the eval nodes recompute harmbench only (the other suites come from the suite cache)
    ws.write_evals(hb_tokens=5)
    stale = {k for k, n in ws.status("report:t").items() if n["state"] != "cached"}
    assert stale == {"eval-data:t/harmbench", "eval:t/base", "eval:t/instruct", "eval:t/aligned", "report:t"}
    r = ws.cli("report:t", "eval:t/base")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ws.manifest_of_link("eval:t__base")["stats"]["reused"] == ["truthfulqa", "xstest", "engagement"]
    html = (ws.root / "out" / "report:t" / "index.html").read_text()
    assert "Compared with the build of" in html
    assert "eval-data:t/harmbench" in html and "<code>evals.harmbench.decoding.max_new_tokens</code></td><td>6</td><td>5</td>" in html

    # a --set variant (issue 18): its report links the base model's report and plots both loss curves
    r = ws.cli("report:t", "--set", "evals.harmbench.decoding.max_new_tokens=4")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    links = [e for e in os.listdir(ws.root / "out") if e.startswith("report:t@")]
    assert links == ["report:t@evals.harmbench.decoding.max_new_tokens=4"], links
    vdir = (ws.root / "out" / links[0]).resolve()
    html = (vdir / "index.html").read_text()
    assert "model:t@evals.harmbench.decoding.max_new_tokens=4" in html and "Variants of this model" in html
    href = html.split("<h2>Variants of this model</h2>", 1)[1].split("<a href='", 1)[1].split("'", 1)[0]
    assert (vdir / href).resolve() == (ws.root / "out" / "report:t" / "index.html").resolve()
    assert (vdir / "variants.png").is_file()

    # a data file path (the shared XSTest file beside the repository): its content is part of the key;
    # a missing file is a one-line error
    ws.write_evals(hb_tokens=5, xstest_path=f'path = "{SHARED_EVALS / "xstest/xstest_prompts.csv"}"')
    stale = {k for k, n in ws.status("eval:t/base").items() if n["state"] != "cached"}
    assert stale == {"eval-data:t/xstest", "eval:t/base"}
    ws.write_evals(hb_tokens=5, xstest_path='path = "missing.csv"')
    r = ws.cli("--dry-run", "eval:t/base")
    assert r.returncode == 2 and "missing.csv" in (r.stdout + r.stderr)
