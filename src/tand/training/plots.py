"""Evaluation plots, returned as matplotlib figures keyed by file name (logged as PNG artifacts).

Sized for the MLflow UI's artifact preview, which shows a PNG at its own pixel size: at most about
1,000 px wide, text at 7 pt or more at DPI 100. The summary plots (one Axes each) use matplotlib's
constrained layout, so tick labels, titles and legends get the room they need; the per-feature small
multiples are in tand.training.feature_plots.
"""

from __future__ import annotations

from tand.training import canvas, feature_plots  # first: canvas selects the headless backend

import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from tand.training.evaluate import Predictions, class_codes  # noqa: E402
from tand.schema import FeatureSchema  # noqa: E402

DPI = canvas.DPI


def _figure(width: float, height: float, **kwargs):
    fig = canvas.new_figure(width, height, layout="constrained")
    return fig, fig.subplots(**kwargs)


def confusion_matrix_figure(p: Predictions):
    classes = list(p.classes)
    codes = list(range(len(classes)))  # class codes, as the metrics count them: no sorting of label strings
    matrix = skm.confusion_matrix(class_codes(p.y_true, classes), class_codes(p.y_pred, classes), labels=codes)
    side = min(9.0, max(4.5, 0.55 * len(classes) + 2.5))
    fig, ax = _figure(side, side)
    skm.ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test split)")
    return fig


def positive_class(p: Predictions) -> str:
    """A binary model's positive class: the one its metrics and threshold are for (else the second)."""
    return p.positive if p.positive is not None else p.classes[1]


def _curves_figure(p: Predictions, kind: str):
    fig, ax = _figure(5.5, 4.6)
    binary = len(p.classes) == 2
    shown = [positive_class(p)] if binary else p.classes  # binary: the positive class (the minority), as the metrics
    display = skm.RocCurveDisplay if kind == "roc" else skm.PrecisionRecallDisplay
    for name in shown:
        positive = p.y_true == name
        if positive.all() or not positive.any():
            continue
        # The axis labels are set below: scikit-learn's would say "(Positive label: True)", not the class.
        display.from_predictions(
            positive, p.proba[:, p.classes.index(name)], pos_label=True, name=str(name), ax=ax,
            plot_chance_level=binary, chance_level_kw={"color": "grey", "linestyle": "--", "linewidth": 0.8},
            drop_intermediate=True,  # the points that change the curve's shape, not one per test row
        )
    which = f"positive class: {shown[0]}" if binary else "each class against the rest"
    if kind == "roc" and not binary:  # scikit-learn draws the chance level per curve: once is enough
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    if kind == "roc":
        ax.set(xlabel=f"False positive rate ({which})", ylabel=f"True positive rate ({which})", title="ROC curve (test split)")
    else:
        ax.set(xlabel=f"Recall ({which})", ylabel=f"Precision ({which})", title="Precision-recall curve (test split)")
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    return fig


def regression_figures(p: Predictions) -> dict:
    fig1, ax = _figure(5, 5)
    ax.scatter(p.y_true, p.y_pred, s=10, alpha=0.6)
    low, high = float(min(p.y_true.min(), p.y_pred.min())), float(max(p.y_true.max(), p.y_pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test split)")
    fig2, (ax1, ax2) = _figure(9, 4, ncols=2)
    residuals = p.y_true - p.y_pred
    ax1.scatter(p.y_pred, residuals, s=10, alpha=0.6)
    ax1.axhline(0, color="grey", linestyle="--", linewidth=0.8)
    ax1.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals vs predicted")
    ax2.hist(residuals, bins=30)
    ax2.set(xlabel="actual - predicted", ylabel="rows", title="Residual distribution")
    return {"predicted_vs_actual.png": fig1, "residuals.png": fig2}


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
    """The per-feature analysis: per category the actual outcome beside the predicted one; per numeric
    feature its distribution per predicted class (classification) or actual and predicted against it."""
    figures = {}
    if schema.categorical:
        figures["categorical_features.png"] = feature_plots.categorical_figure(X_test, p, schema)
    if schema.numeric:
        name = "numeric_features.png" if p.classes is not None else "features_vs_prediction.png"
        figures[name] = feature_plots.numeric_figure(X_test, p, schema)
    return figures


def evaluation_figures(X_test: pd.DataFrame, p: Predictions, schema: FeatureSchema) -> dict:
    """All plots for one evaluation, keyed by PNG file name. The summary curves use every test row; the
    per-feature plots (and regression's scatter plots) a bounded, seeded sample of them."""
    X_few, few = sample(X_test, p)
    summary = summary_figures(p) if p.classes is not None else regression_figures(few)
    return {**summary, **feature_figures(X_few, few, schema)}


def sample(X: pd.DataFrame, p: Predictions, rows: int | None = None) -> tuple[pd.DataFrame, Predictions]:
    """At most `rows` (default tand.training.fitting.SAMPLE_ROWS) rows of X and the predictions for them, seeded."""
    import dataclasses

    import numpy as np

    from tand.training.fitting import SAMPLE_ROWS, SAMPLE_SEED

    rows = rows or SAMPLE_ROWS
    if len(X) <= rows:
        return X, p
    keep = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(X), size=rows, replace=False))
    picked = {"y_true": p.y_true[keep], "y_pred": p.y_pred[keep], "proba": p.proba[keep] if p.proba is not None else None}
    return X.iloc[keep], dataclasses.replace(p, **picked)


def close(figures: dict) -> None:
    """Free the figures' memory now (they are outside pyplot, so garbage collection would also do)."""
    for fig in figures.values():
        fig.clear()
