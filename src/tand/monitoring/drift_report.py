"""A drift result (tand.monitoring.drift.DriftResult) as one self-contained HTML page.

A table of every feature's PSI, missing and unseen shares (drifted ones first and marked), then one plot
per feature: the reference's and the live traffic's share in each bin, side by side. The plots are PNGs
embedded as base64 and the style sheet is the model card's, so the page opens offline with nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io

from tand.monitoring.card_render import STYLE
from tand.training.canvas import LABEL, TICK, Canvas, fit, nice_ticks

REFERENCE, LIVE, DRIFTED = "#9fb3c8", "#2f80ed", "#d64545"
EXTRA_STYLE = """
td.bad, .bad b { color:#d64545; font-weight:600; }
.verdict { font-size:15px; margin:4px 0 0; }
"""


def bins_png(shift, threshold: float) -> bytes:
    """Reference and live share per bin as horizontal bars, the first bin on top. Drawn on one Canvas
    (plain artists, no tick machinery): a report of many features renders in a fraction of the time."""
    from matplotlib.patches import Patch

    live_color = DRIFTED if shift.drifted else LIVE
    handles = [Patch(color=REFERENCE, label="reference (training)"), Patch(color=live_color, label="live (logged requests)")]
    verdict = "drifted" if shift.drifted else "stable"
    row, n = 0.3, len(shift.bins)
    canvas = Canvas(6.4, 0.55 + row * n, f"{shift.name}: PSI {shift.psi:.3f} ({verdict}; threshold {threshold:g})", handles)
    x0, x1, y0 = 1.9, 6.1, 0.45
    tallest = max(0.05, *shift.reference, *shift.live)
    ticks = nice_ticks(0, tallest, 4)
    high = float(ticks[-1] if ticks[-1] >= tallest else ticks[-1] + (ticks[1] - ticks[0]))  # the next round share
    scale = (x1 - x0) / high
    for i, (label, ref, live) in enumerate(zip(shift.bins, shift.reference, shift.live)):
        y = y0 + row * (n - 1 - i)
        canvas.text(x0 - 0.08, y + row / 2, fit(label, TICK, x0 - 0.2), ha="right", va="center")
        canvas.rect(REFERENCE, x0, y + row / 2, ref * scale, 0.11)
        canvas.rect(live_color, x0, y + row / 2 - 0.11, live * scale, 0.11)
    canvas.line([(x0, y0), (x0, y0 + row * n)])
    canvas.x_axis(x0, x1, y0, 0.0, high, label=lambda v: f"{v:.0%}", n=5)
    canvas.text((x0 + x1) / 2, 0.08, "share of rows", size=LABEL, ha="center", va="bottom")
    buffer = io.BytesIO()
    canvas.finish().savefig(buffer, format="png")
    return buffer.getvalue()


def _percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _row(shift) -> str:
    mark = ' class="num bad"' if shift.drifted else ' class="num"'
    cells = [
        f"<td>{html.escape(shift.name)}</td>",
        f"<td>{shift.kind}</td>",
        f"<td{mark}>{shift.psi:.3f}</td>",
        f'<td class="num">{_percent(shift.missing_reference)}</td>',
        f'<td class="num">{_percent(shift.missing_live)}</td>',
        f'<td class="num">{_percent(shift.unseen)}</td>',
        f"<td{' class=bad' if shift.drifted else ''}>{'drifted' if shift.drifted else 'stable'}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _figure(shift, threshold: float) -> str:
    png = base64.b64encode(bins_png(shift, threshold)).decode()
    return f'<figure><img alt="{html.escape(shift.name)}: reference and live shares per bin" src="data:image/png;base64,{png}"></figure>'


def to_html(result, model_name: str, run_id: str, written: str) -> str:
    shifts = [*result.features, result.prediction]
    title = f"Drift: {model_name} · version {result.version}"
    verdict = (
        f"Drifted (PSI above {result.threshold:g}): {', '.join(result.drifted)}" if result.drifted
        else f"No feature's PSI is above {result.threshold:g}."
    )
    summary = [
        ("rows compared", f"{result.rows:,}"),
        ("from", result.first),
        ("to", result.last),
        ("drifted", str(len(result.drifted))),
    ]
    boxes = "".join(
        f'<div{" class=bad" if k == "drifted" and result.drifted else ""}><span>{k}</span><b>{html.escape(v)}</b></div>' for k, v in summary
    )
    header = "".join(f"<th>{h}</th>" for h in ("feature", "kind", "PSI", "missing (reference)", "missing (live)", "unseen values", "verdict"))
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(map(_row, shifts))}</tbody></table>"
    how = (
        "Population stability index per feature over the training quantile bins (numeric) or the most frequent "
        "training values (categorical), with a bin for missing values; the predictions likewise against the test split's."
    )
    if result.not_logged:
        how += f" Not in the log (app.prediction_log.exclude), so not compared: {', '.join(result.not_logged)}."
    plots = "".join(_figure(s, result.threshold) for s in shifts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}{EXTRA_STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>MLflow run <code>{html.escape(run_id)}</code> · written {html.escape(written)}</p>"
        f'<p class="verdict">{html.escape(verdict)}</p><div class="summary">{boxes}</div></header>'
        f'<main><section><h2>Features</h2><p>{html.escape(how)}</p>{table}</section>'
        f'<section><h2>Reference and live, per bin</h2><div class="plots">{plots}</div></section></main>'
        f"<footer>Written by invoke drift (tand.monitoring.drift_report).</footer></body></html>\n"
    )
