"""``render_report`` on synthetic inputs (and a headless-browser screenshot when chromium exists)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stages.evals_lib.report_render import diff_metrics, diff_specs, render_report, resume_steps, series


def write_metrics(path: Path) -> Path:
    """A run of 30 steps, killed after 20 and resumed from the checkpoint at step 15."""
    recs = [{"kind": "event", "event": "start", "step": 0, "session": 1}]
    for s in range(1, 31):
        if s == 16:
            recs.append({"kind": "event", "event": "start", "step": 15, "session": 2, "reason": "resumed"})
        r = {"kind": "train", "step": s, "loss": 5.0 / s, "grad_norm": 1.0 + 0.01 * s, "lr": 1e-3 * min(1, s / 5),
             "tokens_per_s": 1000.0 + s}
        if s % 10 == 0:
            r["val_loss"] = 5.5 / s
        recs.append(r)
    recs.append({"event": "resume", "step": 25})
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n{torn line")
    return path


def results(mc1: float, asr: float, source: str = "path") -> dict:
    return {"results": {"truthfulqa_mc1": {"alias": "truthfulqa_mc1", "acc": mc1, "acc_stderr": 0.05},
                        "harmbench": {"alias": "harmbench", "asr": asr, "asr_stderr": 0.1, "judge_unparsed": 0},
                        "harmbench/illegal": {"alias": "harmbench/illegal", "asr": asr, "asr_stderr": None}},
            "n-samples": {"truthfulqa_mc1": {"original": 817, "effective": 40}},
            "higher_is_better": {"truthfulqa_mc1": {"acc": True}, "harmbench": {"asr": False}},
            "config": {"suites": {"truthfulqa": {"source": {"kind": source}}, "harmbench": {"source": {"kind": "path"}}}}}


def test_series_and_resumes(tmp_path: Path) -> None:
    from stages.evals_lib.report_render import read_metrics

    recs = read_metrics(write_metrics(tmp_path / "m.jsonl"))
    assert resume_steps(recs) == [15, 25]  # a "start" at step > 0 and an explicit resume event
    steps, vals = series(recs, "val_loss")
    assert steps == [10, 20, 30] and vals[0] == pytest.approx(0.55)
    assert series(recs, "loss")[0] == list(range(1, 31))


def test_render_report_first_and_second_build(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "metrics.jsonl")
    specs1 = {"pretrain:t": {"model.training.lr": 0.001, "model.architecture": {"hidden_size": 64}},
              "eval-data:t/harmbench": {"evals.harmbench": {"judge": "refusal"}}}
    cai = {"cai-generate:t": {"generated": 3, "cached": 9, "total": 12}}
    first = render_report(tmp_path / "r1", {"pretrain": metrics}, {"base": results(0.2, 0.8, "builtin"), "aligned": results(0.3, 0.4)},
                          cai, None, specs=specs1, title="report t", key="k1")
    html = (tmp_path / "r1" / "index.html").read_text()
    for png in ("loss.png", "grad_norm.png", "lr.png", "tokens_per_s.png"):
        data = (tmp_path / "r1" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
        assert f"src='{png}'" in html
    assert "resumed at step 15, 25" in html
    assert "First build of this target" in html
    # eval table: base vs aligned with the signed change, coloured by direction
    assert "<td class='num good'>+0.1000</td>" in html  # mc1 up: good
    assert "<td class='num good'>-0.4000</td>" in html  # ASR down: good
    assert "built-in set" in html and "± 0.0500" in html
    assert "<details><summary>per category / type (1 rows)" in html
    assert "<td class='num'>3</td><td class='num'>9</td><td class='num'>12</td><td class='num'>25%</td>" in html
    assert first["metrics"]["aligned/truthfulqa_mc1/acc"] == 0.3 and "base/harmbench/judge_unparsed" not in first["metrics"]
    assert first["training"]["final_loss"] == pytest.approx(5 / 30) and first["training"]["resumes"] == 2
    assert json.loads((tmp_path / "r1" / "summary.json").read_text())["key"] == "k1"

    # second build: lr changed, a judge changed, mc1 moved
    specs2 = {"pretrain:t": {"model.training.lr": 0.002, "model.architecture": {"hidden_size": 64}},
              "eval-data:t/harmbench": {"evals.harmbench": {"judge": "openai:http://x"}}}
    second = render_report(tmp_path / "r2", [metrics], {"base": results(0.25, 0.8), "aligned": results(0.3, 0.4)},
                           None, first, specs=specs2, key="k2")
    html2 = (tmp_path / "r2" / "index.html").read_text()
    assert "Spec changes (2)" in html2
    assert "<code>model.training.lr</code></td><td>0.001</td><td>0.002</td>" in html2
    assert "evals.harmbench.judge" in html2
    assert "Numbers that moved (1)" in html2 and "base/truthfulqa_mc1/acc" in html2 and "+0.0500" in html2
    assert "No CAI nodes" in html2 and second["key"] == "k2"


def _judged(asr: float, harmbench_judge: dict, xstest_judge: dict) -> dict:
    r = results(0.2, asr)
    r["results"]["xstest_safe"] = {"alias": "xstest_safe", "refusal_rate": 0.1, "judge_unparsed": 0}
    r["config"]["suites"]["harmbench"]["config"] = harmbench_judge
    r["config"]["suites"]["xstest"] = {"source": {"kind": "path"}, "config": xstest_judge}
    r["config"]["suites"]["truthfulqa"]["config"] = {"tasks": ["mc1"]}
    return r


def _rows(html: str, task: str) -> list[str]:
    import re

    return [row for row in re.findall(r"<tr>(.*?)</tr>", html) if row.startswith(f"<td>{task}")]


def test_eval_table_names_each_suites_judge(tmp_path: Path) -> None:
    endpoint = {"judge": "openai:http://127.0.0.1:9/v1", "judge_model": "cls", "judge_template": "hb.txt"}
    both = {"base": _judged(0.8, endpoint, {"judge": "refusal"}), "aligned": _judged(0.4, endpoint, {})}
    render_report(tmp_path / "r", {}, both, None, None)
    html = (tmp_path / "r" / "index.html").read_text()
    hb = "judge: openai:http://127.0.0.1:9/v1 model cls, template hb.txt"
    assert _rows(html, "harmbench") and all(hb in row for row in _rows(html, "harmbench")), html
    assert all(hb in row for row in _rows(html, "harmbench/illegal"))  # the per-category numbers too
    assert all("judge: refusal detector" in row for row in _rows(html, "xstest_safe"))  # the default judge
    assert _rows(html, "truthfulqa_mc1") and not any("judge:" in row for row in _rows(html, "truthfulqa_mc1"))

    # base and aligned judged differently: both judges named, never one for both columns
    mixed = {"base": _judged(0.8, {"judge": "refusal"}, {}), "aligned": _judged(0.4, endpoint, {})}
    render_report(tmp_path / "m", {}, mixed, None, None)
    rows = _rows((tmp_path / "m" / "index.html").read_text(), "harmbench")
    assert rows and all(f"judge: base: refusal detector (phrase list); aligned: {hb[7:]}" in row for row in rows), rows


def test_diff_helpers() -> None:
    assert diff_specs({"a": {"x": 1, "y": {"z": 2}}}, {"a": {"x": 1, "y": {"z": 3}}, "b": {"q": 1}}) == [
        ("a", "y.z", 3, 2), ("b", "q", 1, "<unset>")]
    moved = diff_metrics({"m1": 0.5, "m2": 0.9, "new": 1.0}, {"m1": 0.5, "m2": 0.1, "gone": 0.3})
    assert [m for m, _, _ in moved[:1]] == ["m2"] and {m for m, _, _ in moved} == {"m2", "new", "gone"}


def test_empty_inputs_still_render(tmp_path: Path) -> None:
    s = render_report(tmp_path, {}, {}, None, None)
    html = (tmp_path / "index.html").read_text()
    assert "No training metrics" in html and "No eval results" in html and s["plots"] == []


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="chromium not installed")
def test_report_renders_in_a_headless_browser(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "metrics.jsonl")
    render_report(tmp_path / "r", {"pretrain": metrics}, {"base": results(0.2, 0.8), "aligned": results(0.3, 0.4)},
                  {"cai-generate:t": {"generated": 3, "cached": 9, "total": 12}}, None)
    shot = tmp_path / "shot.png"
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
                        "--window-size=1200,1600", (tmp_path / "r" / "index.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), p.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # the page is not blank: plots and tables put plenty of non-white pixels on it
    assert (img[..., :3].mean(axis=-1) < 0.9).mean() > 0.02


def test_variants_section_plots_and_links_the_other_variants(tmp_path: Path) -> None:
    own = write_metrics(tmp_path / "own.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps({"step": s, "loss": 9.0 / s, **({"val_loss": 8.0} if s == 30 else {})})
                               for s in range(1, 31)) + "\n")
    out = tmp_path / "report"
    summary = render_report(out, {"pretrain": own}, {}, None, None, title="genesis-build report: model:tiny@training.lr=0.001",
                            variants={"tiny": {"metrics": str(other), "href": "../../ab/abcd/data/index.html"},
                                      "tiny@training.lr=0.01": {"metrics": str(tmp_path / "gone.jsonl"), "href": None}})
    html = (out / "index.html").read_text()
    assert "variants.png" in summary["plots"] and (out / "variants.png").stat().st_size > 1000
    assert summary["variants"] == ["tiny", "tiny@training.lr=0.01"]
    assert "<h2>Variants of this model</h2>" in html
    assert "<a href='../../ab/abcd/data/index.html'>tiny</a>" in html
    assert "<td class='num'>0.3000</td><td class='num'>8.0000</td>" in html  # tiny's final loss 9/30 and val loss
    assert "tiny@training.lr=0.01</td>" in html  # listed without curve or link when its files are gone
    alone = render_report(tmp_path / "alone", {"pretrain": own}, {}, None, None)
    assert "variants.png" not in alone["plots"] and "Variants of this model" not in (tmp_path / "alone" / "index.html").read_text()


def test_sibling_variants_are_found_from_report_histories(tmp_path: Path) -> None:
    from genesis_build.cache import Cache
    from genesis_build.stage import Context
    from stages.report import sibling_variants

    cache = Cache(tmp_path / "cache")
    hist = tmp_path / "cache" / "samples" / "report"

    def report_obj(key: str, pre: str) -> None:
        cache.data_dir(pre).mkdir(parents=True)
        (cache.data_dir(pre) / "metrics.jsonl").write_text("{}\n")
        (cache.object_dir(pre) / "manifest.json").write_text(json.dumps({"key": pre}))
        cache.data_dir(key).mkdir(parents=True)
        (cache.object_dir(key) / "manifest.json").write_text(json.dumps({"key": key, "inputs": {"pretrain": {"key": pre}}}))

    for name, key, pre, ws in (("tiny", "aa11", "bb11", "ws1"), ("tiny@lr=0.01", "aa22", "bb22", "ws1"),
                               ("tiny@lr=0.1", "aa33", "bb33", "ws2"), ("small@lr=0.01", "aa44", "bb44", "ws1"),
                               ("tiny@lr=0.5", "aa55", "bb55", "ws1")):
        if name != "tiny@lr=0.5":  # its object was gc'd: history left, object gone
            report_obj(key, pre)
        (hist / f"{name}-{ws}").mkdir(parents=True)
        (hist / f"{name}-{ws}" / "previous.json").write_text(json.dumps({"builds": [{"key": "old"}, {"key": key}]}))
    def ctx(spec_name: str) -> Context:
        return Context(node=f"report:{spec_name}", stage="report", spec=None, spec_name=spec_name, part=None,
                       out=tmp_path / "out", inputs={}, files=[], workspace=tmp_path, cache_root=cache.root, key="ff99")

    found = sibling_variants(ctx("tiny@lr=0.001"), hist, "ws1")
    assert sorted(found) == ["tiny", "tiny@lr=0.01"]  # same base name, this workspace, still cached
    assert found["tiny@lr=0.01"]["metrics"] == str(cache.data_dir("bb22") / "metrics.jsonl")
    assert found["tiny"]["href"] == "../../../aa/aa11/data/index.html"
    assert sorted(sibling_variants(ctx("tiny"), hist, "ws1")) == ["tiny@lr=0.01"]


def test_eval_table_base_instruct_aligned_side_by_side(tmp_path: Path) -> None:
    """With an instruct model: three columns in pipeline order (whatever order the results come in),
    and the change each step made (instruct − base, aligned − instruct)."""
    import re

    evals = {"aligned": results(0.35, 0.2), "base": results(0.2, 0.8), "instruct": results(0.3, 0.5)}
    render_report(tmp_path / "r", {}, evals, None, None, title="report t")
    html = (tmp_path / "r" / "index.html").read_text()
    assert "<h2>Evals: base → instruct → aligned</h2>" in html
    head = re.search(r"<tr><th>task</th><th>metric</th>(.*?)</tr>", html).group(1)
    assert head == "<th>base</th><th>instruct</th><th>aligned</th><th>instruct − base</th><th>aligned − instruct</th>"
    row = re.search(r"<tr><td>truthfulqa_mc1.*?</tr>", html).group(0)
    cells = [c.strip() for c in re.findall(r"<td class='num[^']*'>([^<]*)", row)]
    assert cells[:3] == ["0.2000", "0.3000", "0.3500"] and cells[3:] == ["+0.1000", "+0.0500"], cells
    asr = re.search(r"<tr><td>harmbench <span.*?</tr>|<tr><td>harmbench</td>.*?</tr>", html).group(0)
    assert "<td class='num good'>-0.3000</td><td class='num good'>-0.3000</td>" in asr, asr
