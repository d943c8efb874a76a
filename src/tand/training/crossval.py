"""The cross-validated score of a pipeline: what `model: auto` ranks candidates by, and `invoke tune` trials by.

    cross_validate(pipeline, X, y, schema, metric, folds=3, seed=42, on_fold=None, deadline=None) -> CVScore

- `pipeline`: an unfitted scikit-learn estimator (the template's Pipeline); each fold fits a clone, in this
  process, one fold after another (no n_jobs: the libraries' own threads already use the cores);
- `X`, `y`: the training split (never the test split); `schema`: the dataset's FeatureSchema (task, classes);
- `metric`: one of tand.config.SELECTION_METRICS for the task; every metric of tand.training.evaluate is
  measured on each held-out fold too (CVScore.means / stds), the selection metric is CVScore.mean / std;
- folds: stratified and shuffled for classification, shuffled for regression, seeded; fewer than `folds`
  when the rarest class has fewer rows (at least 2);
- `on_fold(index, running_mean)`: called after each fold; whatever it raises (optuna.TrialPruned) ends the
  cross-validation and propagates;
- `deadline` (a time.perf_counter() value): after a fold, when the folds left would (at the pace so far)
  end past it, OverBudget is raised with the folds done so far (`.partial`, a CVScore).

Threshold-dependent metrics (accuracy, balanced_accuracy, f1) are measured at the model's own decision
(argmax), not at a tuned threshold: the threshold is chosen later, for the winner only (tand.training.threshold).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from tand.errors import DataError

# Metrics where lower is better; every other selection metric is better higher.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


@dataclass(frozen=True)
class CVScore:
    metric: str
    mean: float  # the selection metric over the folds
    std: float
    means: dict[str, float]  # every metric, averaged over the folds
    stds: dict[str, float]
    fold_seconds: list[float] = field(default_factory=list)  # fit and predict, per fold

    @property
    def folds(self) -> int:
        return len(self.fold_seconds)

    @property
    def seconds(self) -> float:
        return float(sum(self.fold_seconds))


class OverBudget(Exception):
    """The folds left would end past the deadline; `partial` holds the folds done."""

    def __init__(self, partial: CVScore):
        super().__init__(f"over budget after {partial.folds} fold(s)")
        self.partial = partial


def greater_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def selection_value(metrics: dict[str, float], metric: str, schema) -> float:
    """The selection metric from tand.training.evaluate's metrics of one fold. `f1`: the positive class's F1
    for a binary task (the schema's positive class, else the second), the mean over classes otherwise."""
    if metric != "f1":
        return float(metrics.get(metric, np.nan))
    from tand.training.evaluate import metric_key

    classes = list(schema.classes)
    if len(classes) == 2:
        positive = schema.positive_class if schema.positive_class in classes else classes[1]
        return float(metrics[f"f1_{metric_key(positive)}"])
    return float(np.mean([metrics[f"f1_{metric_key(c)}"] for c in classes]))


def fold_indices(y, schema, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    if schema.task == "classification":
        smallest = int(np.unique(np.asarray(y, dtype=str), return_counts=True)[1].min())
        folds = min(folds, smallest)
        if folds < 2:
            raise DataError("a class has a single row in the training split; cross-validation needs at least two per class")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n), np.asarray(y, dtype=str)))
    if n < 2 * folds:
        raise DataError(f"{n} training rows are too few for {folds}-fold cross-validation; add rows or lower train.cv_folds")
    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def _summary(metric: str, per_fold: list[dict[str, float]], values: list[float], seconds: list[float]) -> CVScore:
    keys = set().union(*per_fold) if per_fold else set()
    means = {k: float(np.nanmean([m.get(k, np.nan) for m in per_fold])) for k in sorted(keys)}
    stds = {k: float(np.nanstd([m.get(k, np.nan) for m in per_fold])) for k in sorted(keys)}
    return CVScore(metric, float(np.mean(values)), float(np.std(values)), means, stds, list(seconds))


def _fold_metrics(pipeline, X, y, train, test, schema) -> dict[str, float]:
    from sklearn.base import clone

    from tand.training.evaluate import compute_metrics, predict

    model = clone(pipeline)
    with warnings.catch_warnings():
        # Convergence and early-stopping notices, once per fold, say nothing the final fit will not say again.
        warnings.simplefilter("ignore", UserWarning)
        model.fit(X.iloc[train], y.iloc[train])
        return compute_metrics(predict(model, X.iloc[test], y.iloc[test], schema))


def cross_validate(pipeline, X, y, schema, metric: str, folds: int = 3, seed: int = 42, on_fold=None, deadline=None) -> CVScore:
    """The cross-validated score of `pipeline` on (X, y) by `metric` (the module's docstring says how)."""
    if schema.task == "classification" and len(schema.classes or ()) == 2 and schema.positive_class is None:
        from tand.training.threshold import positive_class

        # ROC AUC and average precision of the minority, as the final evaluation reports them; argmax decides.
        schema = replace(schema, positive_class=positive_class(y, schema.classes), threshold=None)
    splits = fold_indices(y, schema, folds, seed)
    per_fold, values, seconds = [], [], []
    for index, (train, test) in enumerate(splits):
        started = time.perf_counter()
        per_fold.append(_fold_metrics(pipeline, X, y, train, test, schema))
        seconds.append(time.perf_counter() - started)
        values.append(selection_value(per_fold[-1], metric, schema))
        if on_fold is not None:
            on_fold(index, float(np.mean(values)))
        left = len(splits) - index - 1
        if left and deadline is not None and time.perf_counter() + left * np.mean(seconds) > deadline:
            raise OverBudget(_summary(metric, per_fold, values, seconds))
    return _summary(metric, per_fold, values, seconds)
