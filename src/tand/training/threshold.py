"""The decision threshold of a binary classifier: which class is positive, and from which probability on.

A model fitted on 5 % positives ranks them well (ROC AUC 0.75) and still predicts the majority for every
row, because argmax means a threshold of 0.5 on a probability that rarely gets there. So:

- the positive class is the training split's minority (a tie: the second configured class);
- `train.threshold` "auto" (the default): when the minority is under IMBALANCED_SHARE (20 %) of the training
  rows, the threshold that maximises the positive class's F1 on out-of-fold probabilities of the training
  split (a clone of the pipeline fitted `train.cv_folds` times, stratified); otherwise none, the model's own
  decision, and no extra fit. F1 rather than balanced accuracy: balanced accuracy's optimum sits near the
  prevalence and flags many rows to catch a few positives; F1 weighs precision and recall of the class the
  user cares about, and predicts the positive class only where it is likely enough to matter;
- a number: that threshold as given; null: none (argmax, as before thresholds existed).

The test split is never looked at: it measures the model with the threshold applied.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from tand.schema import FeatureSchema

IMBALANCED_SHARE = 0.2  # minority share of the training rows under which "auto" chooses a threshold


def _counts(y_train) -> dict[str, int]:
    """Rows per class (as text), hashed rather than sorted: 800k labels in a few milliseconds (a Series as it
    is: through np.asarray, text labels become Python objects first, 0.17 s)."""
    import pandas as pd

    counts = (y_train if isinstance(y_train, pd.Series) else pd.Series(np.asarray(y_train))).value_counts()
    out: dict[str, int] = {}
    for value, count in counts.items():
        out[str(value)] = out.get(str(value), 0) + int(count)
    return out


def positive_class(y_train, classes: tuple[str, ...]) -> str:
    """The minority class of the training split; on a tie the second configured class."""
    count = _counts(y_train)
    first, second = classes
    return first if count.get(first, 0) < count.get(second, 0) else second


def minority_share(y_train, positive: str) -> float:
    count = _counts(y_train)
    total = sum(count.values())
    return count.get(positive, 0) / total if total else 0.0


def best_f1_threshold(is_positive: np.ndarray, p_positive: np.ndarray) -> float:
    """The probability t maximising F1 of "positive when p >= t" (scikit-learn's precision-recall curve:
    its thresholds are the scores themselves, so the optimum is one of them)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(is_positive, p_positive)
    # The last point (recall 0, precision 1) has no threshold; 0/0 F1 counts as 0.
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    # Clipped inside (0, 1): the config accepts only such thresholds, and a served 1.0 would never fire.
    return float(np.clip(thresholds[int(np.argmax(f1))], 1e-6, 1 - 1e-6))


def out_of_fold_proba(pipeline, X, y, positive: str, folds: int, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold probability of `positive` for every training row, from clones of the (unfitted)
    pipeline; None when the minority has fewer than 2 rows (no stratified split exists). Call it inside
    the same tand.models.network.trained_by context as the main fit; the clones show no progress bar."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(y, dtype=str)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = min(folds, smallest)
    if folds < 2:
        return None
    model = clone(pipeline)
    estimator = model[-1] if hasattr(model, "steps") else model
    if "progress" in estimator.get_params():
        estimator.set_params(progress=False)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # The clones repeat what the main fit already warned about (convergence, early stopping), once per fold.
        warnings.simplefilter("ignore", UserWarning)
        proba = cross_val_predict(model, X, y, cv=cv, method="predict_proba")
    # cross_val_predict orders columns as the sorted labels of y.
    return proba[:, list(np.unique(y)).index(positive)]


def choose(pipeline, parts, schema: FeatureSchema, setting, folds: int, fit_context) -> tuple[FeatureSchema, bool]:
    """The schema with its positive class and threshold set as `setting` says ("auto", a float, None),
    and whether out-of-fold fits ran. `fit_context()` is entered around them (the network runner).
    Anything but a binary classification comes back unchanged."""
    if schema.task != "classification" or len(schema.classes or ()) != 2:
        return schema, False
    positive = positive_class(parts.y_train, schema.classes)
    if setting != "auto":
        return replace(schema, positive_class=positive, threshold=None if setting is None else float(setting)), False
    if minority_share(parts.y_train, positive) >= IMBALANCED_SHARE:
        return replace(schema, positive_class=positive, threshold=None), False
    with fit_context():
        p = out_of_fold_proba(pipeline, parts.X_train, parts.y_train, positive, folds)
    if p is None:
        return replace(schema, positive_class=positive, threshold=None), False
    is_positive = np.asarray(parts.y_train, dtype=str) == positive
    return replace(schema, positive_class=positive, threshold=best_f1_threshold(is_positive, p)), True
