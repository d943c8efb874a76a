"""Small multiples drawn on one Axes laid out in inches: lines, rectangles, step outlines and texts,
with axes and tick labels drawn as plain artists.

Not a grid of subplots: each subplot brings its own tick machinery and layout pass, and 30 of them took one
to three seconds to render during training; drawn this way 30 take a few hundred milliseconds. Texts are
measured with the Agg renderer before they are placed, so long names get the room they need.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import matplotlib

# Headless, for what imports pyplot (scikit-learn's displays do): training runs on servers and in CI.
matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 100  # the MLflow UI shows a PNG at its pixel size: 100 px per inch
TICK, LABEL, TITLE = 7, 8, 9  # font sizes, points


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A figure outside pyplot's registry (nothing global to close or leak), with an Agg canvas to draw on."""
    fig = Figure(figsize=(width, height), dpi=DPI, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def short_number(value: float) -> str:
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, n: int) -> np.ndarray:
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
            ticks = nice_ticks(low, high, count)
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
        for value in nice_ticks(low, high, n):
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
