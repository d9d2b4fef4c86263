"""The study report as one self-contained HTML page: tables, and charts drawn as inline SVG (no script, no font,
no stylesheet or image fetched from anywhere; images the trials logged are embedded as ``data:`` URIs), so it
reads the same in a browser, offline, and in MLflow's artifact viewer. Pure functions of :class:`ReportData`,
which :mod:`search.tracking.study_report` gathers."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from search.study.loss_params import LOSS_PARAMS
from search.study.results import VERDICT_MARK, plus_minus

# the score chart's interval: +/- 2 corrected SEs (about 95% for a normal estimate; with 4 degrees of freedom,
# 5 folds x 1 repeat, Student's t would widen it by about 40%: the chart is a picture of the noise, the verdicts
# are the test)
INTERVAL_SES = 2.0
PHASE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
STYLE = """
body{font-family:system-ui,"Noto Sans CJK JP","Hiragino Sans","Yu Gothic",Meiryo,sans-serif;margin:1.5em;
color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td.text{text-align:left}tr.best td{background:#fff3c4;font-weight:600}
tr.reference td{background:#e8f1fb}.note{color:#555;font-size:13px}svg text{font-size:11px}
h2{margin-top:1.6em;border-bottom:1px solid #ddd}
pre#summary{font-size:13px;white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:6px}
"""


@dataclass
class TrialCurves:
    """What a trial logged that the report shows: its learning curves (mean over its folds, per epoch) and its
    precision-recall / metric-versus-threshold figure (PNG bytes), either missing when it was not logged."""

    number: int
    role: str  # "best", "reference" or "best and reference"
    threshold: float | None
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    threshold_png: bytes | None = None


@dataclass
class ReportData:
    study: str
    metric: str
    generated: str
    rows: list[dict[str, Any]]  # search.study.results.results_rows, with the study's reference
    best: int | None
    best_rule: str | None
    best_why: str | None
    reference: int | None
    choices: list[str]
    curves: list[TrialCurves]
    data_lines: list[tuple[str, str]]  # (what, value): the data file, target, positive label, features
    summary: list[str]  # search.study.week_summary.summary_lines: what status says of the best trial, etc.


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(d: ReportData) -> str:
    best = next((r for r in d.rows if r["trial"] == d.best), None)
    head = (
        f"<p><b>Best trial: t{d.best:03d}</b> (chosen by <b>{esc(d.best_rule)}</b>: {esc(d.best_why)}); "
        f"threshold <b>{_num(best.get('threshold'), 4)}</b>; reference: "
        f"{'none yet' if d.reference is None else f't{d.reference:03d}'}.</p>"
        if best is not None and d.best is not None
        else "<p>No complete trial yet.</p>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>losstune study {esc(d.study)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Study {esc(d.study)}</h1>",
        f'<p class="note">{esc(d.metric)}; report written {esc(d.generated)} by losstune from the stored trials.</p>',
        head,
        "<h2>What the trials say</h2>",
        '<p class="note">As <code>losstune status</code> says it: how sure the choice is, the estimate for '
        "unseen data, the week's ensemble and the gradient-boosting yardstick.</p>",
        f'<pre id="summary">{esc(chr(10).join(d.summary)) or "No complete trial yet."}</pre>',
        "<h2>Data</h2>",
        _kv_table(d.data_lines),
        "<h2>Trials</h2>",
        _record_table(d.rows, d.best, d.reference),
        "<h2>Scores with their noise</h2>",
        score_chart(d.rows, d.best, d.reference),
        "<h2>The plan's choices</h2>",
        _choices_table(d.choices),
        "<h2>Best and reference</h2>",
        *(_trial_section(c, d.metric) for c in d.curves),
        "</body></html>",
    ]
    return "\n".join(parts)


def _num(value: object, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def _kv_table(lines: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f'<tr><th>{esc(k)}</th><td class="text">{esc(v)}</td></tr>' for k, v in lines)
    return f'<table id="data">{rows}</table>'


def _record_table(rows: list[dict[str, Any]], best: int | None, reference: int | None) -> str:
    columns = ["trial", "phase", *LOSS_PARAMS, "score ± SE", "vs reference", "state", "memo"]
    out = ['<table id="record"><tr>', *(f"<th>{esc(c)}</th>" for c in columns), "</tr>"]
    for r in rows:
        classes = [c for c, n in (("best", best), ("reference", reference)) if r["trial"] == n]
        loss = [
            "none" if r.get(k) is None or (isinstance(r[k], float) and math.isnan(r[k])) else f"{r[k]:g}"
            for k in LOSS_PARAMS
        ]
        vs = ""
        if r.get("diff_vs_reference") is not None:
            mark = VERDICT_MARK.get(r.get("verdict_vs_reference") or "", r.get("verdict_vs_reference"))
            vs = f"{plus_minus(r['diff_vs_reference'], r.get('diff_vs_reference_se'), signed=True)} {mark}"
        cells = [
            f"t{r['trial']:03d}" + (" ★" if r["trial"] == best else ""),
            r.get("phase", ""),
            *loss,
            plus_minus(r.get("cv_score"), r.get("cv_score_se")),
            vs,
            r.get("state", ""),
            r.get("memo") or "",
        ]
        tds = "".join(
            f'<td class="{"text" if i in (1, len(cells) - 1) else ""}">{esc(c)}</td>' for i, c in enumerate(cells)
        )
        out.append(f'<tr class="{" ".join(classes)}" data-trial="{r["trial"]}">{tds}</tr>')
    out.append("</table>")
    return "".join(out)


def within_noise(line: str) -> str:
    """Whether a plan-choice line's comparison was within noise: ``yes``, ``no``, or ``n/a`` (no comparison)."""
    if "not distinguishable" in line:
        return "yes"
    if line.rstrip().endswith(("better", "worse")):
        return "no"
    return "n/a"


def _choices_table(choices: list[str]) -> str:
    if not choices:
        return "<p>No phase has finished a trial yet.</p>"
    rows = "".join(
        f'<tr><td class="text">{esc(c.split(":", 1)[0])}</td><td class="text">{esc(c.split(":", 1)[1].strip())}</td>'
        f"<td>{within_noise(c)}</td></tr>"
        for c in choices
    )
    return f'<table id="choices"><tr><th>phase</th><th>what it chose</th><th>within noise</th></tr>{rows}</table>'


def score_chart(rows: list[dict[str, Any]], best: int | None, reference: int | None) -> str:
    """Each complete trial's score as a dot with a bar of +/- INTERVAL_SES corrected SEs; trials on another
    seed (confirm phases) hollow; the best starred, the reference ringed."""
    scored = [r for r in rows if r.get("cv_score") is not None and not _nan(r["cv_score"])]
    if not scored:
        return "<p>No complete trial yet.</p>"
    lows, highs = [], []
    for r in scored:
        se = 0.0 if _nan(r.get("cv_score_se")) else float(r["cv_score_se"])
        lows.append(max(0.0, r["cv_score"] - INTERVAL_SES * se))  # a score lies in [0, 1]: so does its bar
        highs.append(min(1.0, r["cv_score"] + INTERVAL_SES * se))
    lo, hi = min(lows), max(highs)
    lo, hi = (lo - 0.01, hi + 0.01) if hi - lo < 1e-9 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    width, height, left, bottom, top = max(420, 40 + 28 * len(scored)), 300, 60, 40, 15
    phases = list(dict.fromkeys(r.get("phase", "?") for r in scored))

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    parts = [_axes(width, height, left, bottom, top, lo, hi, y)]
    for i, (r, a, b) in enumerate(zip(scored, lows, highs)):
        x = left + 20 + 28 * i
        colour = PHASE_COLOURS[phases.index(r.get("phase", "?")) % len(PHASE_COLOURS)]
        hollow = r.get("cv_seed") is not None and r.get("repeats") not in (None, 1)
        fill = "white" if hollow else colour
        parts.append(f'<line x1="{x}" x2="{x}" y1="{y(a):.1f}" y2="{y(b):.1f}" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<circle cx="{x}" cy="{y(r["cv_score"]):.1f}" r="4" fill="{fill}" stroke="{colour}" '
            f'data-trial="{r["trial"]}"><title>t{r["trial"]:03d} {esc(r.get("phase"))}: '
            f"{plus_minus(r['cv_score'], r.get('cv_score_se'))}</title></circle>"
        )
        if r["trial"] == best:
            parts.append(f'<text x="{x}" y="{y(b) - 6:.1f}" text-anchor="middle" fill="#b8860b">★ best</text>')
        if r["trial"] == reference:
            parts.append(f'<circle cx="{x}" cy="{y(r["cv_score"]):.1f}" r="8" fill="none" stroke="#444"/>')
        parts.append(f'<text x="{x}" y="{height - bottom + 14}" text-anchor="middle">{r["trial"]}</text>')
    legend = " ".join(
        f'<tspan fill="{PHASE_COLOURS[i % len(PHASE_COLOURS)]}">● {esc(p)}</tspan>' for i, p in enumerate(phases)
    )
    parts.append(f'<text x="{left}" y="{height - 6}">trial; {legend}</text>')
    caption = (
        f'<p class="note">OOF score ± {INTERVAL_SES:g} corrected SEs (Nadeau-Bengio) per trial (cut at 0 and 1); '
        "hollow: repeated on a confirm phase's own seed (not comparable with the others' seed); ringed: the "
        "reference. Trials whose bars overlap widely are within the noise of each other: the verdicts (paired, "
        "same splits) decide.</p>"
    )
    return f'<svg id="scores" width="{width}" height="{height}" role="img">{"".join(parts)}</svg>{caption}'


def _axes(width: int, height: int, left: int, bottom: int, top: int, lo: float, hi: float, y: Any) -> str:
    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    out = [f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="#888"/>']
    out.append(f'<line x1="{left}" x2="{width - 5}" y1="{height - bottom}" y2="{height - bottom}" stroke="#888"/>')
    for t in ticks:
        out.append(f'<text x="{left - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.3f}</text>')
        out.append(f'<line x1="{left}" x2="{width - 5}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>')
    return "".join(out)


def _nan(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _trial_section(c: TrialCurves, metric: str) -> str:
    title = f"<h3>t{c.number:03d} ({esc(c.role)}), threshold {_num(c.threshold, 4)}</h3>"
    if c.epochs:
        curves = learning_chart(c)
    else:
        curves = '<p class="note">No learning curves stored for this trial.</p>'
    if c.threshold_png:
        data = base64.b64encode(c.threshold_png).decode("ascii")
        image = (
            f'<p><img class="threshold-curves" alt="precision-recall and {esc(metric)} versus threshold of '
            f't{c.number:03d}" src="data:image/png;base64,{data}" style="max-width:100%"></p>'
            '<p class="note">Precision-recall and metric-versus-threshold curves on the trial\'s OOF probabilities, '
            "as the trial logged them (the chosen threshold marked).</p>"
        )
    else:
        image = (
            '<p class="note">No precision-recall curve stored for this trial (its OOF probabilities are not kept: '
            "the curves are drawn when a trial is recorded).</p>"
        )
    return f'<section class="trial" data-trial="{c.number}">{title}{curves}{image}</section>'


def learning_chart(c: TrialCurves) -> str:
    """Training and validation loss per epoch (mean over the trial's folds and repeats), one SVG."""
    values = [v for v in [*c.train_loss, *c.val_loss] if not math.isnan(v)]
    if not values:
        return '<p class="note">Learning curves are all NaN.</p>'
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    width, height, left, bottom, top = 420, 220, 60, 35, 10
    first, last = c.epochs[0], c.epochs[-1]
    span = max(last - first, 1)

    def x(e: int) -> float:
        return left + (e - first) / span * (width - left - 10)

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    parts = [_axes(width, height, left, bottom, top, lo, hi, y)]
    for name, series, colour in (("train", c.train_loss, "#1f77b4"), ("validation", c.val_loss, "#d62728")):
        points = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in zip(c.epochs, series) if not math.isnan(v))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"><title>{name}</title>'
        )
        parts.append("</polyline>")
    parts.append(f'<text x="{left}" y="{height - 18}">epoch {first}…{last}</text>')
    parts.append(
        f'<text x="{left}" y="{height - 4}"><tspan fill="#1f77b4">— training loss</tspan> '
        '<tspan fill="#d62728">— validation loss</tspan> (mean over folds)</text>'
    )
    return f'<svg class="learning" width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'
