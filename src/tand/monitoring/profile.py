"""The reference profile of a version, written at training: what its inputs and answers looked like.

`invoke drift` (tand.monitoring.drift) compares logged requests with it. Per feature: a numeric one's
training quantiles as bin edges (open at both ends) with the share of training rows in each bin (both of
training's seeded sample, at most tand.training.fitting.SAMPLE_ROWS rows); a categorical one's most
frequent values with their shares, one "other" bin for the rest, and every value seen (for the share of
unseen ones). Each has its missing share, its own bin in the comparison. The
predictions: class shares on the test split (classification) or quantile bins of the predicted numbers
(regression). Plain JSON, logged beside the model as `reference_profile.json`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PROFILE_FILE = "reference_profile.json"
FORMAT = 1
NUMERIC_BINS = 10
TOP_CATEGORIES = 20
MAX_KNOWN = 50_000  # a categorical feature's seen values kept for the unseen share (more: none kept)
OTHER = "(other)"
MISSING = "(missing)"


def as_text(values: pd.Series) -> pd.Series:
    """Category values as the strings both sides compare: 3.0 and 3 are "3", True is "True"; NaN stays NaN."""
    def one(value):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    present = values.notna()
    out = pd.Series(np.nan, index=values.index, dtype=object)
    out[present] = values[present].map(one)
    return out


def numeric_profile(values: pd.Series, bins: int = NUMERIC_BINS) -> dict:
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    present = numbers[np.isfinite(numbers)].to_numpy()
    inner = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else np.array([])
    counts = numeric_counts(present, inner)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in inner],  # bin i holds edges[i-1] <= x < edges[i]; the first and last are open
        "shares": _shares(counts, len(present)),
        "missing": float(1 - len(present) / len(numbers)) if len(numbers) else 0.0,
    }


def numeric_counts(values: np.ndarray, edges) -> np.ndarray:
    """Counts per bin of the finite `values` (len(edges) + 1 bins)."""
    return np.bincount(np.searchsorted(np.asarray(edges, dtype=float), values, side="right"), minlength=len(edges) + 1)


def categorical_profile(values: pd.Series, top: int = TOP_CATEGORIES) -> dict:
    counts = text_counts(values)
    present = int(counts.sum())
    kept = list(counts.index[:top])
    shares = _shares(np.append(counts.iloc[:top].to_numpy(), counts.iloc[top:].sum()), present)
    known = sorted(counts.index) if len(counts) <= MAX_KNOWN else None
    return {
        "kind": "categorical",
        "categories": kept,
        "shares": shares,  # one per kept category, then the other (rarer) ones
        "missing": float(1 - present / len(values)) if len(values) else 0.0,
        "known": known,
    }


def text_counts(values: pd.Series) -> pd.Series:
    """Rows per distinct value as text (as_text), most frequent first; missing values not counted.
    Counted before the conversion, so a million rows convert only their few distinct values."""
    raw = values.value_counts(dropna=True)
    if raw.empty:
        return pd.Series(dtype=int)
    counts = pd.Series(raw.to_numpy(), index=as_text(pd.Series(raw.index, dtype=object)).to_numpy()).groupby(level=0).sum()
    return counts.sort_values(ascending=False, kind="stable")


def _shares(counts, total: int) -> list[float]:
    counts = np.asarray(counts, dtype=float)
    return [float(s) for s in (counts / total if total else np.zeros(len(counts)))]


def build(X_train: pd.DataFrame, schema, predictions) -> dict:
    """The profile of the training split's features and the test split's predictions
    (tand.training.evaluate.Predictions; y_pred holds labels or numbers). Numeric features are binned on
    training's seeded sample (tand.training.fitting.bounded_sample; 50k rows: a bin's share within ~0.001,
    far below a PSI that counts; all of 800k rows took 1.3 s for 20 numeric and 10 categorical features,
    the sample 0.4 s); categorical ones are counted on every row, which is cheap, so that a rare value
    training saw is not called unseen."""
    from tand.training.fitting import bounded_sample

    sampled, _ = bounded_sample(X_train, X_train.index.to_series())
    features = {}
    for feature in schema.features:
        if feature.kind == "numeric":
            features[feature.name] = numeric_profile(sampled[feature.name])
        else:
            features[feature.name] = categorical_profile(X_train[feature.name])
    if schema.task == "classification":
        labels = pd.Series(np.asarray(predictions.y_pred, dtype=str))
        counts = labels.value_counts()
        prediction = {
            "kind": "categorical",
            "categories": list(schema.classes),
            "shares": [*_shares([counts.get(c, 0) for c in schema.classes], len(labels)), 0.0],
            "missing": 0.0,
            "known": list(schema.classes),
        }
    else:
        prediction = numeric_profile(pd.Series(np.asarray(predictions.y_pred, dtype=float)))
    return {
        "format": FORMAT,
        "task": schema.task,
        "train_rows": int(len(X_train)),
        "test_rows": int(len(predictions.y_pred)),
        "features": features,
        "prediction": prediction,
    }
