"""The test metrics under row weights, vectorised: bootstrap confidence intervals and per-slice metrics.

One weight matrix W (k rows of n weights, one per test row) gives k values of every metric at once:
a bootstrap resample is a row of counts (how often each test row was drawn), a slice a row of 0/1.
With W all ones the values equal tand.training.evaluate.compute_metrics' (a test checks it), so a
resample costs a matrix product instead of a dozen scikit-learn calls (200 resamples of a few hundred
rows: milliseconds). Ranking metrics (ROC AUC, average precision) group tied scores once and sum the
weights per group, the way scikit-learn's curves treat ties.
"""

from __future__ import annotations

import numpy as np

from tand.training.evaluate import Predictions, metric_key

LEVEL = 0.95
CELLS_PER_CHUNK = 4_000_000  # resamples are drawn this many weights at a time (memory stays ~32 MB)
# Above this many test rows the resamples are drawn from a seeded sample of them and their spread is
# scaled to the whole split (sqrt(sample / rows)): a bootstrap interval's width estimated from 5,000 rows
# is within a few per cent, and 200 resamples of 200,000 rows would cost 20 s instead of a quarter of one.
MAX_ROWS = 5_000


def intervals(p: Predictions, resamples: int = 200, seed: int = 42, level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric: `resamples` seeded resamples of the test rows.
    A metric undefined in a resample (a class drawn zero times) is left out of its percentiles."""
    n = len(p.y_true)
    if resamples < 1 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    if n > MAX_ROWS:
        return _scaled(p, rng.choice(n, MAX_ROWS, replace=False), resamples, seed, level)
    chunk = max(1, min(resamples, CELLS_PER_CHUNK // n))
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        rows = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        weights = np.bincount(rows.ravel(), minlength=k * n).reshape(k, n).astype(float)
        for name, values in weighted_metrics(p, weights).items():
            draws.setdefault(name, []).append(values)
    tail = (1 - level) / 2 * 100
    out = {}
    for name, parts in draws.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        if len(values):
            low, high = np.percentile(values, [tail, 100 - tail])
            out[name] = (float(low), float(high))
    return out


def _scaled(p: Predictions, rows: np.ndarray, resamples: int, seed: int, level: float) -> dict[str, tuple[float, float]]:
    """The intervals of a sample of the rows, shrunk to the whole split's size about its point estimates."""
    sample = Predictions(
        p.y_true[rows], p.y_pred[rows], p.proba[rows] if p.proba is not None else None, p.classes, p.positive
    )
    whole = weighted_metrics(p, np.ones((1, len(p.y_true))))
    factor = np.sqrt(len(rows) / len(p.y_true))
    out = {}
    for name, (low, high) in intervals(sample, resamples, seed, level).items():
        centre = float(whole[name][0]) if name in whole and np.isfinite(whole[name][0]) else None
        if centre is not None:
            mid = float(weighted_metrics(sample, np.ones((1, len(rows))))[name][0])
            out[name] = (float(centre + factor * (low - mid)), float(centre + factor * (high - mid)))
    return out


def weighted_metrics(p: Predictions, W: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of compute_metrics under each row of weights W (k × n): arrays of k values (NaN: undefined)."""
    W = np.atleast_2d(np.asarray(W, dtype=float))
    return _classification(p, W) if p.classes is not None else _regression(p, W)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float = 0.0) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, empty), where=den > 0)


def _classification(p: Predictions, W: np.ndarray) -> dict[str, np.ndarray]:
    classes = list(p.classes)
    truth = np.column_stack([p.y_true == c for c in classes])
    guess = np.column_stack([p.y_pred == c for c in classes])
    proba = np.asarray(p.proba, dtype=float)
    normal = proba / np.clip(proba.sum(axis=1, keepdims=True), np.finfo(float).tiny, None)  # as log_loss does
    eps = np.finfo(float).eps
    loss = -np.log(np.clip((normal * truth).sum(axis=1), eps, 1 - eps))
    # One product for every count: correct rows, the loss, then per class true, predicted and both.
    columns = np.column_stack([p.y_true == p.y_pred, loss, truth, guess, truth & guess]).astype(float)
    sums = W @ columns
    total, m = W.sum(axis=1), len(classes)
    true, pred, tp = sums[:, 2 : 2 + m], sums[:, 2 + m : 2 + 2 * m], sums[:, 2 + 2 * m :]
    out = {"accuracy": _ratio(sums[:, 0], total, np.nan), "log_loss": _ratio(sums[:, 1], total, np.nan)}
    recall = _ratio(tp, true, np.nan)
    out["balanced_accuracy"] = np.array([row[np.isfinite(row)].mean() if np.isfinite(row).any() else np.nan for row in recall])
    fn, fp = true - tp, pred - tp
    tn = total[:, None] - tp - fn - fp
    ranking = {i: _ranking(proba[:, i], truth[:, i], W) for i in range(m)}
    for i, name in enumerate(classes):
        key = metric_key(name)
        out[f"precision_{key}"] = _ratio(tp[:, i], tp[:, i] + fp[:, i])
        out[f"recall_{key}"] = _ratio(tp[:, i], tp[:, i] + fn[:, i])
        out[f"f1_{key}"] = _ratio(2 * tp[:, i], 2 * tp[:, i] + fp[:, i] + fn[:, i])
        out[f"specificity_{key}"] = _ratio(tn[:, i], tn[:, i] + fp[:, i])
        out[f"npv_{key}"] = _ratio(tn[:, i], tn[:, i] + fn[:, i])
        out[f"fpr_{key}"] = _ratio(fp[:, i], fp[:, i] + tn[:, i])
        out[f"average_precision_{key}"] = ranking[i][1]
    if m == 2:
        column = classes.index(p.positive) if p.positive in classes else 1
        out["roc_auc"], out["average_precision"] = ranking[column]
    else:
        with np.errstate(all="ignore"):  # a resample without a class: that class is left out of the mean
            out["roc_auc"] = _nanmean(np.column_stack([ranking[i][0] for i in range(m)]))
            out["average_precision"] = _nanmean(np.column_stack([ranking[i][1] for i in range(m)]))
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    seen = np.isfinite(values)
    return _ratio(np.where(seen, values, 0).sum(axis=1), seen.sum(axis=1).astype(float), np.nan)


def _ranking(score: np.ndarray, positive: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ROC AUC, average precision) of `score` for `positive` under each row of W; NaN where one side is empty."""
    order = np.argsort(-score, kind="mergesort")
    ranked = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ranked)) + 1]  # groups of tied scores, highest first
    weights = W[:, order]
    pos = np.add.reduceat(weights * positive[order], starts, axis=1)
    neg = np.add.reduceat(weights * ~positive[order], starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    below = total_neg[:, None] - np.cumsum(neg, axis=1)  # negatives scored lower than each group
    auc = _ratio((pos * (below + 0.5 * neg)).sum(axis=1), total_pos * total_neg, np.nan)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    precision = _ratio(tps, tps + fps)
    ap = _ratio((pos * precision).sum(axis=1), total_pos, np.nan)
    return auc, ap


def _regression(p: Predictions, W: np.ndarray) -> dict[str, np.ndarray]:
    y, error = p.y_true, p.y_pred - p.y_true
    centre = y.mean() if len(y) else 0.0
    columns = np.column_stack([np.abs(error), error**2, y - centre, (y - centre) ** 2])
    if not np.any(y == 0):
        columns = np.column_stack([columns, np.abs(error) / np.abs(y)])
    sums = W @ columns
    total = W.sum(axis=1)
    spread = sums[:, 3] - _ratio(sums[:, 2] ** 2, total)  # weighted sum of squares about the weighted mean
    out = {
        "mae": _ratio(sums[:, 0], total, np.nan),
        "rmse": np.sqrt(_ratio(sums[:, 1], total, np.nan)),
        "r2": 1 - _ratio(sums[:, 1], spread, np.nan),
    }
    if columns.shape[1] == 5:
        out["mape"] = _ratio(sums[:, 4], total, np.nan)
    return out
