"""The build report: one HTML page plus PNG curves (matplotlib, Agg canvas; no pyplot state).

:func:`render_report` is pure (inputs → files in ``out_dir`` + a summary dict); the ``report``
stage gathers its inputs from the cache. Sections:

1. training curves from ``metrics.jsonl`` files — loss with validation loss, grad norm, learning
   rate, tokens/s — each with a dashed marker at every resume (an event ``{"event": "resume",
   "step": N}``, or a ``start`` event at a step > 0, which is how the trainer logs a resumed session);
2. the eval table: every task/metric for base, instruct and aligned side by side (± stderr), the
   change between consecutive variants (instruct − base, aligned − instruct; aligned − base when
   there is no instruct model) coloured by whether it is an improvement (``higher_is_better``); suites that ran
   on a built-in set are flagged, and every HarmBench / XSTest row (and engagement, with a rubric
   judge) names the judge that scored it;
3. CAI data: generated vs cached samples per CAI node (from their manifests' stats);
4. changes since the previous build of the same target: spec values that changed (per node), eval
   numbers that moved, final training loss.

The summary returned (and written as ``summary.json``) is what the next build compares against.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

CURVES = (("loss", "Loss", ("loss", "val_loss")), ("grad_norm", "Gradient norm", ("grad_norm",)),
          ("lr", "Learning rate", ("lr",)), ("tokens_per_s", "Throughput (tokens/s)", ("tokens_per_s",)))


# --------------------------------------------------------------------------------------------
# inputs


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (a killed run) is skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def resume_steps(records: Iterable[dict[str, Any]]) -> list[int]:
    """Steps at which training resumed."""
    steps = []
    for r in records:
        ev = r.get("event")
        if ev == "resume" or (ev == "start" and int(r.get("step") or 0) > 0):
            steps.append(int(r.get("step") or 0))
    return sorted(set(steps))


def series(records: Iterable[dict[str, Any]], field: str) -> tuple[list[int], list[float]]:
    """(steps, values) of a numeric field over non-event records (last value per step wins)."""
    by_step: dict[int, float] = {}
    for r in records:
        if "event" in r or "step" not in r:
            continue
        v = r.get(field)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            by_step[int(r["step"])] = float(v)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → {"a.b.c": leaf}."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def eval_metrics(eval_results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{"<variant>/<task>/<metric>": value} of every numeric metric (no stderr, no counts)."""
    out = {}
    for variant, res in (eval_results or {}).items():
        for task, metrics in (res.get("results") or {}).items():
            for m, v in metrics.items():
                if m in ("alias", "prompts_truncated") or m.endswith(("_stderr", "_unparsed")) or v is None:
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{variant}/{task}/{m}"] = float(v)
    return out


# --------------------------------------------------------------------------------------------
# plots


def _plot(out: Path, title: str, fields: tuple[str, ...], runs: dict[str, list[dict[str, Any]]]) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for label, recs in runs.items():
        for f in fields:
            xs, ys = series(recs, f)
            if not xs:
                continue
            name = f if len(runs) == 1 else f"{label}: {f}"
            style = {"marker": "o", "markersize": 3, "linestyle": "--"} if f.startswith("val_") else {"linewidth": 1.2}
            ax.plot(xs, ys, label=name, **style)
            drawn = True
        for i, s in enumerate(resume_steps(recs)):
            ax.axvline(s, color="tab:red", linestyle=":", linewidth=1.2, label="resume" if i == 0 else None)
            ax.annotate(f"resume @{s}", xy=(s, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=7, color="tab:red")
    if not drawn:
        return False
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out)
    return True


# --------------------------------------------------------------------------------------------
# html


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def _e(v: Any) -> str:
    return html.escape(str(v))


def judge_label(suite: str, config: dict[str, Any]) -> str | None:
    """Who scored a suite's numbers, from the suite's config in results.json: HarmBench and XSTest
    always have a judge (the refusal detector or an endpoint); engagement only with a rubric judge."""
    if suite in ("harmbench", "xstest"):
        judge = config.get("judge") or "refusal"
    elif suite == "engagement" and config.get("rubric_judge"):
        judge = config["rubric_judge"]
    else:
        return None
    if judge == "refusal":
        return "refusal detector (phrase list)"
    model = config.get("rubric_model" if suite == "engagement" else "judge_model")
    out = judge + (f" model {model}" if model else "")
    if suite == "harmbench" and config.get("judge_template"):
        out += f", template {config['judge_template']}"
    return out


def suite_judges(eval_results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{suite: judge label} over the variants; when base and aligned were judged differently, both
    are named ("base: …; aligned: …") so a difference in numbers is never read as the model's alone."""
    per: dict[str, dict[str, str]] = {}
    for v, res in eval_results.items():
        for suite, c in ((res.get("config") or {}).get("suites") or {}).items():
            label = judge_label(suite, (c or {}).get("config") or {})
            if label:
                per.setdefault(suite, {})[v] = label
    return {s: next(iter(d.values())) if len(set(d.values())) == 1 else "; ".join(f"{v}: {j}" for v, j in d.items())
            for s, d in per.items()}


PIPELINE = ("base", "instruct", "aligned")  # the models of one build, in the order they are made


def ordered_variants(eval_results: dict[str, Any]) -> list[str]:
    """Variants in pipeline order (base → instruct → aligned), then any others."""
    return [v for v in PIPELINE if v in eval_results] + [v for v in eval_results if v not in PIPELINE]


def _eval_table(eval_results: dict[str, dict[str, Any]]) -> str:
    variants = ordered_variants(eval_results)
    if not variants:
        return "<p class='muted'>No eval results (the model spec has no <code>evals</code> reference).</p>"
    tasks: list[str] = []
    hib: dict[str, dict[str, bool]] = {}
    for v in variants:
        for t in eval_results[v].get("results", {}):
            if t not in tasks:
                tasks.append(t)
        for t, d in (eval_results[v].get("higher_is_better") or {}).items():
            hib.setdefault(t, {}).update(d)
    builtin = set()
    for v in variants:
        for suite, c in ((eval_results[v].get("config") or {}).get("suites") or {}).items():
            if (c.get("source") or {}).get("kind") == "builtin":
                builtin.add(suite)
    judges = suite_judges({v: eval_results[v] for v in variants})
    head = "".join(f"<th>{_e(v)}</th>" for v in variants)
    # the change each pipeline step made: consecutive pairs of the pipeline's variants
    steps = [(a, b) for a, b in zip(variants, variants[1:]) if a in PIPELINE and b in PIPELINE]
    rows_main, rows_sub = [], []
    for t in tasks:
        metrics: list[str] = []
        for v in variants:
            for m, val in eval_results[v]["results"].get(t, {}).items():
                if m != "alias" and not m.endswith("_stderr") and m not in metrics and not isinstance(val, str):
                    metrics.append(m)
        for m in metrics:
            cells = []
            vals = []
            for v in variants:
                r = eval_results[v]["results"].get(t, {})
                val, se = r.get(m), r.get(f"{m}_stderr")
                vals.append(val)
                cells.append(f"<td class='num'>{_fmt(val)}" + (f" <span class='se'>± {_fmt(se)}</span>" if se is not None else "") + "</td>")
            d_cell = ""
            by = dict(zip(variants, vals))
            for a, b in steps:
                x, y = by[a], by[b]
                d = y - x if all(isinstance(z, (int, float)) for z in (x, y)) else None
                better = hib.get(t, {}).get(m)
                cls = "" if d is None or better is None or abs(d) < 1e-12 else ("good" if (d > 0) == better else "bad")
                d_cell += f"<td class='num {cls}'>{'' if d is None else f'{d:+.4f}'}</td>"
            arrow = {True: "↑", False: "↓"}.get(hib.get(t, {}).get(m), "")
            suite = t.split("/")[0].split("_")[0]
            flag = " <span class='tag'>built-in set</span>" if suite in builtin else ""
            if suite in judges:  # the judge belongs next to every number it produced
                flag += f" <span class='judge'>judge: {_e(judges[suite])}</span>"
            row = f"<tr><td>{_e(t)}{flag}</td><td>{_e(m)} {arrow}</td>{''.join(cells)}{d_cell}</tr>"
            (rows_sub if "/" in t else rows_main).append(row)
    th = f"<tr><th>task</th><th>metric</th>{head}{''.join(f'<th>{_e(b)} − {_e(a)}</th>' for a, b in steps)}</tr>"
    out = f"<table>{th}{''.join(rows_main)}</table>"
    if rows_sub:
        out += f"<details><summary>per category / type ({len(rows_sub)} rows)</summary><table>{th}{''.join(rows_sub)}</table></details>"
    if builtin:
        out += ("<p class='muted'>Suites tagged <span class='tag'>built-in set</span> ran on genesis-build's own small sets, "
                "not the benchmarks: smoke-test numbers only.</p>")
    return out


def _cai_table(cai_stats: dict[str, dict[str, Any]] | None) -> str:
    if not cai_stats:
        return "<p class='muted'>No CAI nodes for this model.</p>"
    rows = []
    for node, st in cai_stats.items():
        gen, cached, total = st.get("generated"), st.get("cached"), st.get("total")
        share = f"{gen / total:.0%}" if isinstance(gen, int) and total else "—"
        extra = ", ".join(f"{_e(k)}={_fmt(v)}" for k, v in st.items() if k not in ("generated", "cached", "total", "summary")
                          and isinstance(v, (int, float, str)))
        rows.append(f"<tr><td>{_e(node)}</td><td class='num'>{_fmt(gen)}</td><td class='num'>{_fmt(cached)}</td>"
                    f"<td class='num'>{_fmt(total)}</td><td class='num'>{share}</td><td class='muted'>{extra}</td></tr>")
    return ("<table><tr><th>node</th><th>generated</th><th>cached</th><th>total</th><th>generated share</th><th>other stats</th></tr>"
            + "".join(rows) + "</table>")


def diff_specs(current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    """(node, field, old, new) for every spec value that differs between two snapshots."""
    out = []
    for node in sorted(set(current) | set(previous)):
        cur, prev = flatten(current.get(node) or {}), flatten(previous.get(node) or {})
        for k in sorted(set(cur) | set(prev)):
            if cur.get(k, "<unset>") != prev.get(k, "<unset>"):
                out.append((node, k, prev.get(k, "<unset>"), cur.get(k, "<unset>")))
    return out


def diff_metrics(current: dict[str, float], previous: dict[str, float], tol: float = 1e-9) -> list[tuple[str, float | None, float | None]]:
    """(metric, old, new) for metrics that moved (biggest first), then those that appeared or disappeared."""
    out = []
    for k in set(current) | set(previous):
        a, b = previous.get(k), current.get(k)
        if a is None or b is None or abs(a - b) > tol:
            out.append((k, a, b))
    both = lambda r: r[1] is not None and r[2] is not None  # noqa: E731
    return sorted(out, key=lambda r: (not both(r), -abs(r[2] - r[1]) if both(r) else 0.0, r[0]))


def _diff_section(summary: dict[str, Any], previous: dict[str, Any] | None) -> str:
    if not previous:
        return "<p class='muted'>First build of this target: nothing to compare against.</p>"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(previous.get("created", 0)))
    parts = [f"<p>Compared with the build of {_e(when)} (key <code>{_e(str(previous.get('key', ''))[:16])}</code>).</p>"]
    specs = diff_specs(summary.get("specs") or {}, previous.get("specs") or {})
    if specs:
        rows = "".join(f"<tr><td>{_e(n)}</td><td><code>{_e(k)}</code></td><td>{_e(json.dumps(a))}</td><td>{_e(json.dumps(b))}</td></tr>"
                       for n, k, a, b in specs)
        parts.append(f"<h3>Spec changes ({len(specs)})</h3><table><tr><th>node</th><th>field</th><th>before</th><th>now</th></tr>{rows}</table>")
    else:
        parts.append("<h3>Spec changes</h3><p class='muted'>No spec value changed.</p>")
    moved = diff_metrics(summary.get("metrics") or {}, previous.get("metrics") or {})
    if moved:
        rows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_fmt(a)}</td><td class='num'>{_fmt(b)}</td>"
                       f"<td class='num'>{'' if a is None or b is None else f'{b - a:+.4f}'}</td></tr>" for k, a, b in moved)
        parts.append(f"<h3>Numbers that moved ({len(moved)})</h3><table><tr><th>metric</th><th>before</th><th>now</th><th>Δ</th></tr>{rows}</table>")
    else:
        parts.append("<h3>Numbers that moved</h3><p class='muted'>No eval number changed.</p>")
    tr_now, tr_prev = summary.get("training") or {}, previous.get("training") or {}
    trows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_fmt(tr_prev.get(k))}</td><td class='num'>{_fmt(tr_now.get(k))}</td></tr>"
                    for k in sorted(set(tr_now) | set(tr_prev)) if tr_now.get(k) != tr_prev.get(k))
    if trows:
        parts.append(f"<h3>Training</h3><table><tr><th></th><th>before</th><th>now</th></tr>{trows}</table>")
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem} h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem} th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums} .se{color:#888;font-size:.75rem}
.good{background:#e6f4ea;color:#137333} .bad{background:#fce8e6;color:#a50e0e} .muted{color:#777}
.tag{background:#fff4ce;border:1px solid #e0c46c;border-radius:3px;font-size:.7rem;padding:0 .3rem}
.judge{color:#555;font-size:.75rem;white-space:nowrap}
.plots img{max-width:48%;margin:.2rem;border:1px solid #eee} code{background:#f3f3f3;padding:0 .2rem}
"""


def _variants_section(out_dir: Path, title: str, runs: dict[str, list[dict[str, Any]]],
                      variants: dict[str, dict[str, Any]], pngs: list[str]) -> str:
    """Loss curves of this build and the other variants of its model together, and links to them."""
    if not variants:
        return ""
    own = title.rsplit(":", 1)[-1].strip()  # "genesis-build report: model:tiny@lr=0.001" → "tiny@lr=0.001"
    curves: dict[str, list[dict[str, Any]]] = {}
    if runs:
        curves[f"{own} (this report)"] = next(iter(runs.values()))
    rows = []
    for name in sorted(variants):
        v = variants[name]
        path = Path(v["metrics"]) if v.get("metrics") else None
        recs = read_metrics(path) if path is not None and path.is_file() else []
        if recs:
            curves[name] = recs
        finals = {f: (series(recs, f)[1] or [None])[-1] for f in ("loss", "val_loss")}
        link = f"<a href='{_e(v['href'])}'>{_e(name)}</a>" if v.get("href") else _e(name)
        rows.append(f"<tr><td>{link}</td><td class='num'>{_fmt(finals['loss'])}</td>"
                    f"<td class='num'>{_fmt(finals['val_loss'])}</td></tr>")
    img = ""
    if len(curves) > 1 and _plot(out_dir / "variants.png", "Loss of the variants of this model", ("loss", "val_loss"), curves):
        pngs.append("variants.png")
        img = "<div class='plots'><img src='variants.png' alt='variants.png'></div>"
    return (f"<h2>Variants of this model</h2>{img}<table><tr><th>variant</th><th>final loss</th><th>final val loss</th></tr>"
            + "".join(rows) + "</table>")


def render_report(out_dir: Path, metrics_jsonl_paths: dict[str, Path] | list[Path], eval_results: dict[str, dict[str, Any]],
                  cai_stats: dict[str, dict[str, Any]] | None, previous: dict[str, Any] | None, *,
                  specs: dict[str, dict[str, Any]] | None = None, title: str = "genesis-build report",
                  key: str | None = None, variants: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``index.html``, the PNG curves and ``summary.json`` into ``out_dir``; return the summary.

    ``variants``: other builds of the same model (``--set``/``--sweep`` variants and the base), as
    ``{name: {"metrics": metrics.jsonl path, "href": link to its report or None}}``; this build's
    own curve is drawn with theirs in ``variants.png`` and each gets a row with its final losses.

    ``metrics_jsonl_paths``: ``{label: path}`` (or a list, labelled by file stem) of trainer logs;
    ``eval_results``: ``{variant: results.json dict}``; ``cai_stats``: ``{node: manifest stats}``;
    ``previous``: the summary of the previous build (or None); ``specs``: ``{node: spec values}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = metrics_jsonl_paths if isinstance(metrics_jsonl_paths, dict) else {Path(p).stem: p for p in metrics_jsonl_paths}
    runs = {label: read_metrics(Path(p)) for label, p in paths.items() if Path(p).is_file()}
    pngs = []
    for fname, ttl, fields in CURVES:
        if runs and _plot(out_dir / f"{fname}.png", ttl, fields, runs):
            pngs.append(f"{fname}.png")
    training: dict[str, Any] = {}
    for label, recs in runs.items():
        prefix = "" if len(runs) == 1 else f"{label}/"
        for f in ("loss", "val_loss"):
            xs, ys = series(recs, f)
            if xs:
                training[f"{prefix}final_{f}"] = ys[-1]
                training[f"{prefix}steps"] = max(training.get(f"{prefix}steps", 0), xs[-1])
        training[f"{prefix}resumes"] = len(resume_steps(recs))
    variants_html = _variants_section(out_dir, title, runs, variants or {}, pngs)
    # no wall-clock time in the outputs: the same inputs must give the same bytes (the build time is in
    # the object's manifest; report.py stamps its history entry with it for the "compared with" line)
    summary = {"title": title, "key": key, "metrics": eval_metrics(eval_results),
               "specs": specs or {}, "training": training, "cai": cai_stats or {}, "plots": pngs,
               "variants": sorted(variants or {})}
    resumes = {label: resume_steps(recs) for label, recs in runs.items()}
    resume_note = "; ".join(f"{_e(k)}: resumed at step {', '.join(map(str, v))}" for k, v in resumes.items() if v)
    plots = ("".join(f"<img src='{_e(p)}' alt='{_e(p)}'>" for p in pngs) if pngs
             else "<p class='muted'>No training metrics.</p>")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="muted">{f'Build key <code>{_e(key[:16])}</code>' if key else ''}</p>
<h2>Training</h2>
<div class="plots">{plots}</div>
<p class="muted">{resume_note or 'No resume in these runs.'}</p>
{('<table>' + ''.join(f'<tr><td>{_e(k)}</td><td class="num">{_fmt(v)}</td></tr>' for k, v in training.items()) + '</table>') if training else ''}
{variants_html}
<h2>Evals: {' → '.join(_e(v) for v in ordered_variants(eval_results or {})) or 'none'}</h2>
{_eval_table(eval_results or {})}
<h2>Constitutional AI data</h2>
{_cai_table(cai_stats)}
<h2>Changes since the previous build</h2>
{_diff_section(summary, previous)}
</body></html>
"""
    (out_dir / "index.html").write_text(body, encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
