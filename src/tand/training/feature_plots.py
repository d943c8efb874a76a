"""The per-feature plots: small multiples, one cell per feature, with the actual outcome beside the predicted one.

Each figure is one Axes laid out in inches, its cells drawn as plain artists (lines, rectangles, texts),
not a grid of subplots: each subplot brings its own tick machinery and layout pass, and 30 of them
took one to three seconds to render during training; this way 30 take a few hundred milliseconds.
Widths come from measuring the texts, so long category names and tick labels get the room they need.
"""

from __future__ import annotations

import math
import functools
from collections import defaultdict

import matplotlib

# Headless, for what imports pyplot (scikit-learn's displays do): training runs on servers and in CI.
matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tand.schema import FeatureSchema  # noqa: E402
from tand.training.evaluate import Predictions  # noqa: E402

DPI = 100  # the MLflow UI shows a PNG at its pixel size: 100 px per inch, at most MAX_WIDTH inches wide
MAX_WIDTH = 10.0
MAX_FEATURE_PLOTS = 40
MAX_CATEGORIES_SHOWN = 12  # the most frequent; the rest are shown together as "other (k)"
MAX_LABEL_CHARS = 28  # longer category names are shortened with "…"
ACTUAL_COLOR = "0.62"  # grey: what happened; class colours: what the model said
MISSING = "(missing)"
TICK, LABEL, TITLE = 7, 8, 9  # font sizes, points


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A figure outside pyplot's registry (nothing global to close or leak), with an Agg canvas to draw on."""
    fig = Figure(figsize=(width, height), dpi=DPI, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def class_colors(classes) -> dict:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[k % len(cycle)] for k, name in enumerate(classes)}


def short_number(value: float) -> str:
    return f"{value:.4g}"


def _nice_ticks(low: float, high: float, n: int) -> np.ndarray:
    ticks = MaxNLocator(n).tick_values(low, high)
    slack = 1e-9 * (abs(high - low) or 1.0)
    return ticks[(ticks >= low - slack) & (ticks <= high + slack)]


@functools.cache
def _measurer() -> RendererAgg:
    return RendererAgg(1, 1, DPI)


@functools.lru_cache(maxsize=4096)  # tick labels repeat from cell to cell
def text_width(text: str, size: float) -> float:
    """Inches `text` takes at `size` points (measured by the Agg renderer, as it will be drawn)."""
    width, _, _ = _measurer().get_text_width_height_descent(text, _font(size), ismath=False)
    return width / DPI


@functools.cache
def _font(size: float) -> FontProperties:
    return FontProperties(size=size)


def fit(text: str, size: float, room: float) -> str:
    """`text`, shortened with "…" until it fits `room` inches."""
    while len(text) > 2 and text_width(text, size) > room:
        text = text[:-2] + "…"
    return text


def _wrap(text: str, size: float, room: float) -> list[str]:
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if lines[-1] and text_width(joined, size) > room:
            lines.append(word)
        else:
            lines[-1] = joined
    return lines


class Canvas:
    """One Axes over a whole figure, in inches from its bottom-left corner, under a header (the title,
    wrapped to the width, and a legend that fits it). Cells go below `top`."""

    def __init__(self, width: float, cells_height: float, title: str, handles: list):
        room = width - 0.2
        self._title = "\n".join(_wrap(title, TITLE + 1, room))
        entry = max(text_width(h.get_label(), LABEL) for h in handles) + 0.55  # handle, gap, text, spacing
        self._legend_cols = max(1, min(len(handles), int(room // entry)))
        legend_rows = math.ceil(len(handles) / self._legend_cols)
        title_height = 0.2 * self._title.count("\n") + 0.28
        self._handles, self._legend_y = handles, title_height + 0.04
        self.top = cells_height
        self.width, self.height = width, cells_height + title_height + 0.25 * legend_rows + 0.2
        self.fig = new_figure(self.width, self.height)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set(xlim=(0, self.width), ylim=(0, self.height))
        self.ax.set_axis_off()
        self._lines: list = []
        self._rects: dict = defaultdict(list)  # colour -> rectangles, one collection each
        self._steps: dict = defaultdict(list)  # colour -> step outlines of histograms, one collection each

    def text(self, x: float, y: float, text: str, size: float = TICK, **kwargs) -> None:
        # User data (category and feature names) may hold "$": never mathtext.
        self.ax.text(x, y, text, fontsize=size, parse_math=False, **kwargs)

    def rect(self, color, x: float, y: float, w: float, h: float) -> None:
        self._rects[color].append([(x, y), (x + w, y), (x + w, y + h), (x, y + h)])

    def line(self, points) -> None:
        self._lines.append(points)

    def steps(self, color, xs: np.ndarray, heights: np.ndarray, y0: float) -> None:
        """A histogram's outline: bin edges `xs`, bar tops `heights` (inches), standing on `y0`."""
        self._steps[color].append(np.column_stack([np.repeat(xs, 2), np.concatenate([[y0], np.repeat(heights, 2), [y0]])]))

    def x_axis(self, x0: float, x1: float, y: float, low: float, high: float, label=short_number, n: int = 4) -> None:
        """A baseline from x0 to x1 inches standing for [low, high], with tick labels that do not collide."""
        for count in (n, 3, 2):
            ticks = _nice_ticks(low, high, count)
            texts = [label(t) for t in ticks]
            if sum(text_width(t, TICK) + 0.08 for t in texts) < x1 - x0:
                break
        self.line([(x0, y), (x1, y)])
        for value, text in zip(ticks, texts):
            x = x0 + (x1 - x0) * (value - low) / ((high - low) or 1.0)
            self.line([(x, y), (x, y - 0.03)])
            self.text(x, y - 0.05, text, ha="center", va="top")

    def y_axis(self, x: float, y0: float, y1: float, low: float, high: float, label=short_number, n: int = 3) -> None:
        self.line([(x, y0), (x, y1)])
        for value in _nice_ticks(low, high, n):
            y = y0 + (y1 - y0) * (value - low) / ((high - low) or 1.0)
            self.line([(x, y), (x - 0.03, y)])
            self.text(x - 0.05, y, label(value), ha="right", va="center")

    def finish(self):
        self.ax.add_collection(LineCollection(self._lines, colors="black", linewidths=0.6))
        for color, rects in self._rects.items():
            self.ax.add_collection(PolyCollection(rects, facecolors=color, edgecolors="none"))
        for color, outlines in self._steps.items():
            self.ax.add_collection(LineCollection(outlines, colors=color, linewidths=1.1))
        w, h = self.width, self.height
        self.fig.suptitle(self._title, fontsize=TITLE + 1, x=0.1 / w, y=1 - 0.1 / h, ha="left", va="top")
        self.fig.legend(handles=self._handles, loc="upper left", bbox_to_anchor=(0.02 / w, 1 - self._legend_y / h),
                        ncols=self._legend_cols, fontsize=LABEL, frameon=False)
        return self.fig


def _category_text(value) -> str:
    if pd.isna(value):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an integer category read as float: "1", not "1.0"
    text = str(value)
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def grouped(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's category label and the labels in order: most frequent first, then "other (k)", then missing."""
    text = values.map(_category_text).to_numpy(dtype=object)
    counts = pd.Series(text).value_counts()
    order = [c for c in counts.index if c != MISSING]
    if len(order) > MAX_CATEGORIES_SHOWN:
        rest = order[MAX_CATEGORIES_SHOWN - 1:]
        other = f"other ({len(rest)})"
        text = np.where(np.isin(text, rest), other, text)
        order = order[: MAX_CATEGORIES_SHOWN - 1] + [other]
    return text, order + ([MISSING] if MISSING in counts.index else [])


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _category_bars(p: Predictions, masks: list) -> tuple[list, float, object]:
    """Per category, the bars to draw: (actual segments, predicted segments), each [(left, width, colour)]."""
    colors = class_colors(p.classes)
    binary = len(p.classes) == 2
    shown = p.classes[1:] if binary else p.classes  # binary: the positive class's share; else all, stacked
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
    return bars, top, colors


def _faded(color: str):
    from matplotlib.colors import to_rgb

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
        positive = p.classes[1]
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
    canvas.text((x0 + x1) / 2, bottom + height - 0.12, fit(name, TITLE, width - 0.1), size=TITLE, ha="center", va="center")
    if p.classes is None:
        means = [(float(np.mean(p.y_true[m])), float(np.mean(p.y_pred[m]))) for m in masks]
        low, high = _padded(np.array(means).ravel(), 0.08)
    else:
        bars, high, _ = _category_bars(p, masks)
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
        y_room = 0.1 + max(text_width(short_number(v), TICK) for v in _nice_ticks(*y_range, 3))
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
        label = name + (f" ({missing:.0%} missing)" if missing else "")
        canvas.text((x0 + x1) / 2, bottom + 1.47, fit(label, LABEL, 1.95), size=LABEL, ha="center", va="center")
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
    edges = np.histogram_bin_edges(values[known], bins=15) if known.any() else np.linspace(0, 1, 16)
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
