"""Evaluation plots, returned as matplotlib figures keyed by file name (logged as PNG artifacts)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from tand.training.evaluate import Predictions  # noqa: E402
from tand.schema import FeatureSchema  # noqa: E402

MAX_FEATURE_PLOTS = 40
MAX_CATEGORIES_SHOWN = 20


DPI = 80


def _grid(n: int, size: float = 3.0):
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * 0.75 * rows), squeeze=False, dpi=DPI)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.06, top=1 - 0.9 / (rows * size * 0.75), hspace=0.45, wspace=0.25)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def confusion_matrix_figure(p: Predictions):
    classes = list(p.classes)
    matrix = skm.confusion_matrix(p.y_true, p.y_pred, labels=classes)
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side), dpi=DPI)
    skm.ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    return fig


def _curves_figure(p: Predictions, kind: str):
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=DPI)
    shown = p.classes[1:] if len(p.classes) == 2 else p.classes
    for name in shown:
        i = p.classes.index(name)
        positive = p.y_true == name
        if positive.all() or not positive.any():
            continue
        if kind == "roc":
            skm.RocCurveDisplay.from_predictions(positive, p.proba[:, i], name=str(name), ax=ax)
        else:
            skm.PrecisionRecallDisplay.from_predictions(positive, p.proba[:, i], name=str(name), ax=ax)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_title(("ROC" if kind == "roc" else "Precision-recall") + " curve per class (one-vs-rest, test split)")
    fig.tight_layout()
    return fig


def categorical_features_figure(X: pd.DataFrame, p: Predictions, schema: FeatureSchema):
    names = schema.categorical[:MAX_FEATURE_PLOTS]
    fig, axes = _grid(len(names), 3.6)
    for ax, name in zip(axes, names):
        table = pd.crosstab(X[name].astype(str).fillna("missing"), pd.Series(p.y_pred, index=X.index), normalize="index")
        table.head(MAX_CATEGORIES_SHOWN).plot.bar(stacked=True, ax=ax, legend=False, width=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("")
        ax.tick_params(labelsize=7)
    axes[0].legend(title="predicted", fontsize=7, title_fontsize=7)
    fig.suptitle("Predicted-class proportions per category (test split)")
    return fig


def numeric_features_figure(X: pd.DataFrame, p: Predictions, schema: FeatureSchema):
    """Small multiples on one Axes: per feature, a step histogram of its values for each predicted class.

    One Axes with a cell per feature, not a grid of subplots: each subplot brings its own axes,
    ticks and labels, and 30 of them took most of the seconds spent on plots. Each cell is
    scaled to its own value range (printed under it) and tallest bar."""
    names = schema.numeric[:MAX_FEATURE_PLOTS]
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, ax = plt.subplots(figsize=(3.0 * cols, 2.0 * rows + 0.8), dpi=DPI)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.8 / (2.0 * rows + 0.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    baselines = []
    for i, name in enumerate(names):
        left, bottom = i % cols, rows - 1 - i // cols  # the cell [left, left + 1] x [bottom, bottom + 1]
        values = X[name].to_numpy(dtype=float)
        known = values[~np.isnan(values)]
        edges = np.histogram_bin_edges(known, bins=15) if known.size else np.linspace(0, 1, 16)
        counts = [np.histogram(values[p.y_pred == label], bins=edges, density=False)[0] for label in p.classes]
        tallest = max(1, max(c.max() for c in counts))
        x = left + 0.06 + 0.88 * (edges - edges[0]) / ((edges[-1] - edges[0]) or 1.0)
        base = bottom + 0.12
        for k, c in enumerate(counts):
            ax.stairs(base + 0.55 * c / tallest, x, baseline=base, color=colors[k % len(colors)], linewidth=1.2)
        baselines.append([(x[0], base), (x[-1], base)])
        ax.text(left + 0.5, bottom + 0.88, f"{name}\n{edges[0]:.3g} to {edges[-1]:.3g}", ha="center", va="center", fontsize=8)
    ax.add_collection(LineCollection(baselines, colors="lightgray", linewidths=0.8))
    ax.set(xlim=(0, cols), ylim=(0, rows + 0.05))
    ax.set_axis_off()
    handles = [Line2D([], [], color=colors[k % len(colors)], label=str(label)) for k, label in enumerate(p.classes)]
    fig.legend(handles=handles, title="predicted", loc="upper right", fontsize=7, title_fontsize=7, ncols=min(len(handles), 6))
    fig.suptitle("Distribution of each numeric feature per predicted class (test split; counts scaled per feature)", x=0.01, ha="left")
    return fig


def regression_figures(p: Predictions) -> dict:
    fig1, ax = plt.subplots(figsize=(5, 5), dpi=DPI)
    ax.scatter(p.y_true, p.y_pred, s=10, alpha=0.6)
    low, high = float(min(p.y_true.min(), p.y_pred.min())), float(max(p.y_true.max(), p.y_pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test split)")
    fig1.tight_layout()
    fig2, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=DPI)
    residuals = p.y_true - p.y_pred
    ax1.scatter(p.y_pred, residuals, s=10, alpha=0.6)
    ax1.axhline(0, color="grey", linestyle="--")
    ax1.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals vs predicted")
    ax2.hist(residuals, bins=30)
    ax2.set(xlabel="actual - predicted", title="Residual distribution")
    fig2.tight_layout()
    return {"predicted_vs_actual.png": fig1, "residuals.png": fig2}


def numeric_vs_prediction_figure(X: pd.DataFrame, p: Predictions, schema: FeatureSchema):
    names = schema.features[:MAX_FEATURE_PLOTS]
    fig, axes = _grid(len(names))
    for ax, feature in zip(axes, names):
        if feature.kind == "numeric":
            ax.scatter(X[feature.name], p.y_pred, s=6, alpha=0.5)
        else:
            groups = X[feature.name].astype(str)
            labels = sorted(groups.unique())[:MAX_CATEGORIES_SHOWN]
            ax.boxplot([p.y_pred[(groups == g).to_numpy()] for g in labels], tick_labels=labels)
        ax.set_title(feature.name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("Prediction against each feature (test split)")
    return fig


def summary_figures(p: Predictions) -> dict:
    """The model's overall plots: confusion matrix, ROC and PR curves; or predicted vs actual and residuals."""
    if p.classes is None:
        return regression_figures(p)
    return {
        "confusion_matrix.png": confusion_matrix_figure(p),
        "roc_curves.png": _curves_figure(p, "roc"),
        "pr_curves.png": _curves_figure(p, "pr"),
    }


def feature_figures(X_test: pd.DataFrame, p: Predictions, schema: FeatureSchema) -> dict:
    """The per-feature analysis."""
    if p.classes is None:
        return {"features_vs_prediction.png": numeric_vs_prediction_figure(X_test, p, schema)}
    figures = {}
    if schema.categorical:
        figures["categorical_features.png"] = categorical_features_figure(X_test, p, schema)
    if schema.numeric:
        figures["numeric_features.png"] = numeric_features_figure(X_test, p, schema)
    return figures


def evaluation_figures(X_test: pd.DataFrame, p: Predictions, schema: FeatureSchema) -> dict:
    """All plots for one evaluation, keyed by PNG file name."""
    return {**summary_figures(p), **feature_figures(X_test, p, schema)}


def close(figures: dict) -> None:
    for fig in figures.values():
        plt.close(fig)
