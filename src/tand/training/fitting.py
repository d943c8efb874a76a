"""Fit a pipeline on the training split, measure it on both splits, render its plots.

Plain functions on plain data; tand.training.workers runs them in a process of their own. scikit-learn's
metrics and matplotlib are imported when first used, not when this module is.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from tand.errors import ConfigError

# Work beside the fit that grows with the rows is bounded: the train split's metrics and the per-feature
# plots use at most this many rows, the same seeded sample on every run; the test split's metrics use all.
SAMPLE_ROWS = 50_000
SAMPLE_SEED = 0


@dataclass
class Evaluation:
    """What fitting sends back first: the fitted pipeline and its metrics (plots follow)."""

    pipeline: object
    metrics: dict[str, float]
    history: list[dict]
    seconds: dict[str, float]
    predictions: object = None  # the test split's (tand.training.evaluate.Predictions), for the plots
    # The schema as fitting left it (e.g. with the decision threshold it chose); None: the dataset's, unchanged.
    schema: object = None


def bounded_sample(X, y, rows: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED):
    """At most `rows` rows of (X, y), the same ones on every run (seeded); all of them when fewer."""
    if len(X) <= rows:
        return X, y
    import numpy as np

    keep = np.sort(np.random.default_rng(seed).choice(len(X), size=rows, replace=False))
    return X.iloc[keep], y.iloc[keep]


def prepare_imports() -> None:
    """What evaluating and plotting import (scikit-learn's metrics, matplotlib): done ahead, while waiting."""
    from tand.training import evaluate, plots  # noqa: F401


def _fit(pipeline, parts, network_runner=None) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    from tand.models.network import trained_by

    try:
        # The MLP can train its network elsewhere (a tand.training.workers.TorchProcess); None: here.
        with trained_by(network_runner):
            pipeline.fit(parts.X_train, parts.y_train)
    except InvalidParameterError as exc:
        raise ConfigError(f"train.model_args: {exc}") from None


def fit_and_evaluate(pipeline, parts, schema, network_runner=None, threshold="auto", cv_folds: int = 3) -> Evaluation:
    """Fit on the training split; metrics on the test split and a bounded sample of the training split
    (plots: render_plots, on the test split).

    Binary classification: the positive class and decision threshold are chosen as `threshold` says
    (tand.training.threshold: "auto", a probability, or None), on the training split only; the metrics
    apply it, and `Evaluation.schema` carries it to the logged model."""
    from tand.models.network import trained_by
    from tand.training import threshold as decision

    start = time.perf_counter()
    _fit(pipeline, parts, network_runner)
    fitted = time.perf_counter()
    schema, searched = decision.choose(pipeline, parts, schema, threshold, cv_folds, lambda: trained_by(network_runner))
    chosen = time.perf_counter()
    from tand.training.evaluate import compute_metrics, predict

    test = predict(pipeline, parts.X_test, parts.y_test, schema)
    metrics = {f"test_{k}": v for k, v in compute_metrics(test).items()}
    # The train split's metrics (a check for over-fitting) on a bounded sample: predicting 800k rows costs as much as a fit.
    X_sample, y_sample = bounded_sample(parts.X_train, parts.y_train)
    train_pred = predict(pipeline, X_sample, y_sample, schema)
    metrics.update({f"train_{k}": v for k, v in compute_metrics(train_pred).items()})
    if schema.positive_class is not None:  # the probability the decision is taken at (argmax: 0.5)
        metrics["threshold"] = schema.threshold if schema.threshold is not None else 0.5
    seconds = {"fit": fitted - start, "metrics": time.perf_counter() - chosen}
    if searched:
        seconds["threshold"] = chosen - fitted
    return Evaluation(pipeline, metrics, list(getattr(pipeline[-1], "history_", [])), seconds, test, schema)


def render_plots(parts, predictions, schema, pipeline=None) -> dict[str, bytes]:
    """The test split's plots as PNG bytes keyed by file name (with `pipeline`, its feature importance too)."""
    from tand.training import plots

    figures = plots.evaluation_figures(parts.X_test, predictions, schema)
    if pipeline is not None:
        from tand.training.importance import feature_importance, importance_figure

        figures["feature_importance.png"] = importance_figure(feature_importance(pipeline, parts.X_test, parts.y_test, schema))
    try:
        rendered = {}
        for name, figure in figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            rendered[name] = buffer.getvalue()
        if pipeline is not None:  # mean |contribution| per feature: a table and a plot (tand.training.global_explanation)
            from tand.training.global_explanation import explanation_files

            rendered.update(explanation_files(pipeline, parts.X_test))
        return rendered
    finally:
        plots.close(figures)
