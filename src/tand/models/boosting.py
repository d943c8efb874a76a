"""LightGBM, XGBoost and CatBoost behind one scikit-learn estimator per task.

Each library's own scikit-learn API does the work (tand.models.boosting_libraries says how for each); this
adapter adds what the template promises for every model: early stopping on a validation split carved from
the training rows (seeded, stratified), a progress bar over boosting rounds, a seed, bounded threads and no
output. Its input is the matrix tand.training.pipeline builds for tree models: numbers as they are (NaN
missing), categorical columns as integer codes (NaN missing or unknown) at the positions `categorical`
names. Labels may be any values (the pipeline's are text); the libraries see their codes 0..k-1.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from tand.models import boosting_libraries as libraries
from tand.models.labels import class_codes

MAX_HISTORY = 200  # validation-loss points kept per fit (MLflow logs them as one batch of epoch_* metrics)
MIN_ROWS_FOR_VALIDATION = 20


class _BoostingBase(BaseEstimator):
    def __init__(
        self,
        library="lightgbm",
        params=None,
        categorical=(),
        n_estimators=1000,
        early_stopping_rounds=50,
        validation_fraction=0.1,
        seed=42,
        progress=False,
    ):
        self.library = library
        self.params = params
        self.categorical = categorical
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.progress = progress

    # -- fitting -----------------------------------------------------------------
    def _fit(self, X, y_encoded: np.ndarray, sample_weight, task: str):
        from tqdm.auto import tqdm

        spec = libraries.LIBRARIES[self.library]
        X = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        categorical = tuple(int(i) for i in self.categorical)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        fit_rows, val_rows = self._validation_rows(y_encoded, task)
        rounds = self.early_stopping_rounds if len(val_rows) else None
        model = spec.build(task, dict(self.params or {}), self.n_estimators, rounds, self.seed, categorical, X.shape[1])
        bar = tqdm(
            total=self.n_estimators, desc=self.library, unit="round", file=sys.stderr, disable=not self.progress, mininterval=0.5
        )
        try:
            train = (spec.data(X[fit_rows], categorical), y_encoded[fit_rows], _rows(weights, fit_rows))
            valid = (spec.data(X[val_rows], categorical), y_encoded[val_rows], _rows(weights, val_rows)) if len(val_rows) else None
            spec.fit(model, train, valid, categorical, rounds, _Progress(bar))
        finally:
            bar.total = bar.n  # stopped early: the bar ends full at the rounds it ran
            bar.close()
        self.model_ = model
        self.n_rounds_ = spec.rounds(model)
        self.history_ = _thinned(spec.validation_curve(model))
        if self.progress and len(val_rows):
            ran = f"stopped after {bar.n} rounds, kept the best {self.n_rounds_}" if bar.n > self.n_rounds_ else f"{self.n_rounds_} rounds"
            print(f"{self.library}: {ran} (early stopping on {len(val_rows)} validation rows)", file=sys.stderr)
        return self

    def _validation_rows(self, y_encoded: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows to fit on and rows to stop early on; no validation rows when stopping is off or the data too small."""
        rows = np.arange(len(y_encoded))
        n_val = math.ceil(self.validation_fraction * len(rows)) if self.validation_fraction else 0
        if not self.early_stopping_rounds or len(rows) < MIN_ROWS_FOR_VALIDATION or n_val < 1:
            return rows, rows[:0]
        from sklearn.model_selection import train_test_split

        stratify = None
        if task == "classification":
            counts = np.bincount(y_encoded)
            if counts.min() < 2 or n_val < len(counts):
                return rows, rows[:0]
            stratify = y_encoded
        fit_rows, val_rows = train_test_split(rows, test_size=n_val, random_state=self.seed, stratify=stratify)
        if task == "classification" and len(np.unique(y_encoded[fit_rows])) < len(np.unique(y_encoded)):
            return rows, rows[:0]  # a class would be missing from the rows the library learns from
        return np.sort(fit_rows), np.sort(val_rows)

    # -- prediction and inspection --------------------------------------------------
    def _data(self, X):
        return libraries.LIBRARIES[self.library].data(np.asarray(X, dtype=np.float64), tuple(self.categorical))

    @property
    def feature_importances_(self) -> np.ndarray:
        """Gain per input column (CatBoost: its prediction-value change), summing to 1."""
        raw = np.asarray(libraries.LIBRARIES[self.library].importances(self.model_, self.n_features_in_), dtype=np.float64)
        total = raw.sum()
        return raw / total if total > 0 else raw


class BoostingClassifier(ClassifierMixin, _BoostingBase):
    """`classes_` holds the label values, sorted as scikit-learn sorts them; the library sees their codes."""

    def fit(self, X, y, sample_weight=None):
        self.classes_, encoded = class_codes(y)
        return self._fit(X, encoded, sample_weight, "classification")

    def predict_proba(self, X) -> np.ndarray:
        proba = np.asarray(self.model_.predict_proba(self._data(X)), dtype=np.float64)
        proba = proba.reshape(len(proba), -1)
        return proba / proba.sum(axis=1, keepdims=True)  # XGBoost's are float32: rows sum to 1 in float64 too

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class BoostingRegressor(RegressorMixin, _BoostingBase):
    def fit(self, X, y, sample_weight=None):
        return self._fit(X, np.asarray(y, dtype=np.float64), sample_weight, "regression")

    def predict(self, X) -> np.ndarray:
        return np.asarray(self.model_.predict(self._data(X)), dtype=np.float64).reshape(-1)


class _Progress:
    """What the libraries' callbacks call once per round (tqdm bar, shown or not)."""

    def __init__(self, bar):
        self.bar = bar

    def round(self, loss: float | None = None) -> None:
        self.bar.update(1)
        if loss is not None and not self.bar.disable:
            self.bar.set_postfix(val_loss=f"{loss:.4f}", refresh=False)


def _rows(values, rows):
    return None if values is None else values[rows]


def _thinned(curve: tuple[str, list[float]] | None) -> list[dict]:
    """The validation curve as history records (round → value), at most MAX_HISTORY of them, the last kept."""
    if not curve or not curve[1]:
        return []
    name, values = curve
    step = max(1, math.ceil(len(values) / MAX_HISTORY))
    picked = list(range(0, len(values), step))
    if picked[-1] != len(values) - 1:
        picked.append(len(values) - 1)
    return [{"epoch": i + 1, f"val_{name}": float(values[i])} for i in picked]


def build_boosting(task: str, library: str, args: dict, seed: int, categorical=(), progress: bool = False):
    """The estimator for `train.model` = library, with `model_args` checked against the library's own parameters."""
    params, n_estimators, early = libraries.check_args(library, args)
    cls = BoostingClassifier if task == "classification" else BoostingRegressor
    return cls(
        library=library, params=params, categorical=tuple(categorical), n_estimators=n_estimators,
        early_stopping_rounds=early, seed=seed, progress=progress,
    )
