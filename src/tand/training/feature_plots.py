"""The per-feature plots: small multiples, one cell per feature, with the actual outcome beside the predicted one.

Drawn on a tand.training.canvas.Canvas (one Axes, cells as plain artists) to stay cheap with 30-40 features.
"""

from __future__ import annotations

import math
from collections import defaultdict

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch

from tand.schema import FeatureSchema
from tand.training.canvas import LABEL, TICK, TITLE, Canvas, fit, nice_ticks, short_number, text_width
from tand.training.evaluate import Predictions

MAX_WIDTH = 10.0  # inches: the MLflow UI's preview pane shows about 1,000 px
MAX_FEATURE_PLOTS = 40
MAX_CATEGORIES_SHOWN = 12  # the most frequent; the rest are shown together as "other (k)"
MAX_LABEL_CHARS = 28  # longer category names are shortened with "…"
ACTUAL_COLOR = "0.62"  # grey: what happened; class colours: what the model said
MISSING = "(missing)"


def class_colors(classes) -> dict:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[k % len(cycle)] for k, name in enumerate(classes)}


def _category_text(value) -> str:
    if pd.isna(value):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an integer category read as float: "1", not "1.0"
    text = str(value)
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def grouped(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's category label and the labels in order: most frequent first, then "other (k)", then missing."""
    # Each distinct value's label once, not each row's (50,000 rows of 200 values: 0.1 s less per column).
    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # missing: -1, the last label
    labels = np.array([_category_text(u) for u in uniques] + [MISSING], dtype=object)
    text = labels[codes]
    counts = pd.Series(text).value_counts()
    order = [c for c in counts.index if c != MISSING]
    if len(order) > MAX_CATEGORIES_SHOWN:
        rest = order[MAX_CATEGORIES_SHOWN - 1:]
        other = f"other ({len(rest)})"
        text = np.where(np.isin(labels, rest), other, labels)[codes]
        order = order[: MAX_CATEGORIES_SHOWN - 1] + [other]
    return text, order + ([MISSING] if MISSING in counts.index else [])


def _percent(value: float) -> str:
    return f"{100 * value:.3g}%"  # 0.5%, 15%, 100%: small shares stay apart


def _category_bars(p: Predictions, masks: list) -> tuple[list, float]:
    """Per category, the bars to draw: (actual segments, predicted segments), each [(left, width, colour)]."""
    colors = class_colors(p.classes)
    binary = len(p.classes) == 2
    # binary: the positive class's share (the minority, as the metrics); else all, stacked
    shown = [p.positive if p.positive is not None else p.classes[1]] if binary else p.classes
    bars = []
    for mask in masks:
        actual, predicted, left_a, left_p = [], [], 0.0, 0.0
        for name in shown:
            share_a, share_p = float(np.mean(p.y_true[mask] == name)), float(np.mean(p.y_pred[mask] == name))
            actual.append((left_a, share_a, ACTUAL_COLOR if binary else _faded(colors[name])))
            predicted.append((left_p, share_p, colors[name]))
            if not binary:
                left_a, left_p = left_a + share_a, left_p + share_p
        bars.append((actual, predicted))
    top = max([0.05] + [seg[0] + seg[1] for pair in bars for side in pair for seg in side]) if binary else 1.0
    return bars, top


def _faded(color: str):
    return tuple(0.45 * c + 0.55 for c in to_rgb(color))


def _legend(labels, colors) -> list:
    # Legend text is parsed as mathtext: a "$" in a class name is escaped.
    return [Patch(color=colors[label], label=str(label).replace("$", r"\$")) for label in labels]


def categorical_figure(X: pd.DataFrame, p: Predictions, schema: FeatureSchema):
    """Per category of each categorical feature: the actual outcome (upper bar or marker) beside the
    predicted one. Classification: the positive class's share (binary) or every class's share, stacked;
    regression: the mean target, actual and predicted."""
    names = schema.categorical[:MAX_FEATURE_PLOTS]
    groups = [grouped(X[name]) for name in names]
    labels = [[f"{c} ({int(np.sum(g == c))})" for c in order] for g, order in groups]
    label_room = max(text_width(t, LABEL) for ls in labels for t in ls) + 0.12
    cell_w = label_room + 2.3
    cols = max(1, min(len(names), int(MAX_WIDTH // cell_w), 4))
    rows = [list(range(r, min(r + cols, len(names)))) for r in range(0, len(names), cols)]
    heights = [0.78 + 0.3 * max(len(groups[i][1]) for i in row) for row in rows]
    if p.classes is None:
        handles = _legend(["actual mean", "predicted mean"], {"actual mean": ACTUAL_COLOR, "predicted mean": "C0"})
        title = f"Mean {schema.label} per category, actual (grey) and predicted (test split; rows in brackets)"
    elif len(p.classes) == 2:
        positive = p.positive if p.positive is not None else p.classes[1]
        colors = {f"actual share {positive}": ACTUAL_COLOR, f"predicted share {positive}": class_colors(p.classes)[positive]}
        handles = _legend(list(colors), colors)
        title = f"Share of {positive} per category, actual (upper bar) and predicted (test split; rows in brackets)"
    else:
        handles = _legend(p.classes, class_colors(p.classes))
        title = "Class shares per category: actual (faded, upper bar) and predicted (test split; rows in brackets)"
    canvas = Canvas(max(6.0, cols * cell_w + 0.1), sum(heights), title, handles)
    top = canvas.top
    for row, height in zip(rows, heights):
        for k, i in enumerate(row):
            _category_cell(canvas, 0.1 + k * cell_w, top - height, cell_w, height, names[i], groups[i], labels[i], p, label_room)
        top -= height
    return canvas.finish()


def _category_cell(canvas, left, bottom, width, height, name, group, labels, p, label_room) -> None:
    values, order = group
    masks = [values == c for c in order]
    x0, x1 = left + label_room, left + width - 0.25
    y_top = bottom + height - 0.32
    center = (x0 + x1) / 2  # over the bars, which sit right of the labels: room is twice the nearer cell edge
    room = 2 * min(center - left, left + width - center) - 0.1
    canvas.text(center, bottom + height - 0.12, fit(name, TITLE, room), size=TITLE, ha="center", va="center")
    if p.classes is None:
        means = [(float(np.mean(p.y_true[m])), float(np.mean(p.y_pred[m]))) for m in masks]
        low, high = _padded(np.array(means).ravel(), 0.08)
    else:
        bars, high = _category_bars(p, masks)
        low = 0.0
    scale = (x1 - x0) / (high - low)
    for j, label in enumerate(labels):
        y = y_top - 0.3 * (j + 0.5)
        canvas.text(x0 - 0.06, y, label, size=LABEL, ha="right", va="center")
        if p.classes is None:
            for value, color, dy in ((means[j][0], ACTUAL_COLOR, 0.06), (means[j][1], "C0", -0.06)):
                canvas.rect(color, x0 + (value - low) * scale - 0.04, y + dy - 0.04, 0.08, 0.08)
        else:
            for side, dy in ((bars[j][0], 0.0), (bars[j][1], -0.13)):
                for start, share, color in side:
                    canvas.rect(color, x0 + start * scale, y + dy, share * scale, 0.12)
    y_axis = y_top - 0.3 * len(order)
    canvas.line([(x0, y_axis), (x0, y_top)])
    canvas.x_axis(x0, x1, y_axis, low, high, label=short_number if p.classes is None else _percent)


def numeric_figure(X: pd.DataFrame, p: Predictions, schema: FeatureSchema):
    """Classification: per feature, a step histogram for each predicted class, as a share of that class's rows
    (a rare class's shape shows as well as a common one's). Regression: the actual target (grey) and the
    prediction against each feature."""
    names = schema.numeric[:MAX_FEATURE_PLOTS]
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    regression = p.classes is None
    if regression:
        colors = {"actual": ACTUAL_COLOR, "predicted": "C0"}
        title = f"Actual and predicted {schema.label} against each numeric feature (test split)"
        y_range = _padded(np.concatenate([p.y_true, p.y_pred]))
        y_room = 0.1 + max(text_width(short_number(v), TICK) for v in nice_ticks(*y_range, 3))
    else:
        colors = class_colors(p.classes)
        title = "Each numeric feature per predicted class (test split; share of the class's rows per bin)"
        y_room = 0.38
    canvas = Canvas(max(6.0, 2.0 * cols + 0.1), 1.65 * rows, title, _legend(list(colors), colors))
    points = defaultdict(list)
    for i, name in enumerate(names):
        left, bottom = 0.1 + 2.0 * (i % cols), canvas.top - 1.65 * (i // cols + 1)
        x0, x1, y0, y1 = left + y_room, left + 1.85, bottom + 0.32, bottom + 1.3
        values = X[name].to_numpy(dtype=float)
        known = ~np.isnan(values)
        missing = 1 - known.mean()
        label = name + (f" ({missing:.0%} missing)" if missing >= 0.005 else " (<1% missing)" if missing else "")
        canvas.text(left + 1.0, bottom + 1.47, fit(label, LABEL, 1.9), size=LABEL, ha="center", va="center")  # cell: 2 in
        if not known.any():
            canvas.text((x0 + x1) / 2, (y0 + y1) / 2, "no values in the test split", ha="center", va="center")
            continue
        if regression:
            low, high = _padded(values[known])
            for target, series in ((p.y_true, "actual"), (p.y_pred, "predicted")):
                points[series].append(np.column_stack([
                    x0 + (x1 - x0) * (values[known] - low) / (high - low),
                    y0 + (y1 - y0) * (target[known] - y_range[0]) / (y_range[1] - y_range[0]),
                ]))
            canvas.y_axis(x0, y0, y1, *y_range)
        else:
            low, high, tallest = _class_histograms(canvas, values, known, p, colors, (x0, x1, y0, y1))
            canvas.y_axis(x0, y0, y1, 0.0, tallest, label=_percent, n=2)
        canvas.x_axis(x0, x1, y0, low, high)
    for series, chunks in points.items():  # one scatter per series for all cells: cheap to draw
        xy = np.concatenate(chunks)
        canvas.ax.scatter(xy[:, 0], xy[:, 1], s=5, color=colors[series], alpha=0.55, linewidths=0)
    return canvas.finish()


def _class_histograms(canvas, values, known, p, colors, area) -> tuple[float, float, float]:
    """Step histograms of `values` per predicted class in `area` (inches); returns the x range and tallest share."""
    x0, x1, y0, y1 = area
    edges = np.histogram_bin_edges(values[known], bins=15)
    low, high = float(edges[0]), float(edges[-1])
    shares = {}
    for label in p.classes:
        picked = values[(p.y_pred == label) & known]
        if picked.size:
            shares[label] = np.histogram(picked, bins=edges)[0] / picked.size
    tallest = max([s.max() for s in shares.values()] + [0.01])
    xs = x0 + (x1 - x0) * (edges - low) / ((high - low) or 1.0)
    for label, share in shares.items():
        canvas.steps(colors[label], xs, y0 + (y1 - y0) * share / tallest, y0)
    return low, high, tallest


def _padded(values: np.ndarray, pad: float = 0.04) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    margin = pad * ((high - low) or abs(high) or 1.0)
    return low - margin, high + margin
