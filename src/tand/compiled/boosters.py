"""LightGBM, XGBoost and CatBoost called directly on the compiled preprocessor's float matrix.

tand.models.boosting's estimators go through each library's scikit-learn wrapper: input validation, and
the fit's OpenMP threads for every call (several threads per single-row request, milliseconds on a busy
machine). A NativeBooster holds the library's own model (LightGBM's Booster, XGBoost's Booster, the
CatBoost model) and calls its predict with what the wrapper would pass (the same iterations, missing
value, prediction type), then shapes the result as the estimator's predict_proba / predict do: the same
numbers (tests compare them); `contributions` is the library's own exact TreeSHAP on the same booster
(tand.models.attribution shapes it). Up to ONE_THREAD_ROWS rows run on one thread; a larger batch on the fit's
bounded thread count (threads_for).

`to_bytes` / `from_bytes` are each library's own model format (LightGBM's text, XGBoost's UBJSON,
CatBoost's .cbm): the compiled file stores them without pickle, and loading needs the library only.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

ONE_THREAD_ROWS = 64  # a request's rows gain nothing from more threads (threads_for)
LIBRARIES = ("lightgbm", "xgboost", "catboost")
_CATBOOST_REGRESSION = ("RawFormulaVal", "Exponent")


@dataclass(frozen=True, eq=False)
class NativeBooster:
    library: str
    booster: object  # lightgbm.Booster | xgboost.Booster | catboost.CatBoost
    categorical: tuple[int, ...]  # input columns holding category codes (NaN: missing or unknown)
    rounds: int  # lightgbm: num_iteration (-1: all); xgboost: iteration_range's end (0: all); catboost: unused
    classes: np.ndarray | None = None  # classifier: the label values in the estimator's classes_ order
    prediction_type: str = "RawFormulaVal"  # catboost regression: what its predict answers
    missing: float = math.nan  # xgboost: the value read as missing
    _single: object = field(default=None, repr=False)  # xgboost: a copy of the booster set to one thread

    def __post_init__(self) -> None:
        if self.library == "xgboost" and self._single is None:
            single = self.booster.copy()
            single.set_param({"nthread": 1})
            object.__setattr__(self, "_single", single)
            self.booster.set_param({"nthread": _threads()})

    # -- the estimator's outputs ---------------------------------------------------------
    def raw_values(self, X: np.ndarray) -> np.ndarray:
        """What the library's predict answers for the float matrix X (probabilities: its own layout)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        n = threads_for(len(X))
        if self.library == "lightgbm":
            return self.booster.predict(X, num_iteration=self.rounds, num_threads=n)
        if self.library == "xgboost":
            booster = self._single if n == 1 else self.booster
            return booster.inplace_predict(X, iteration_range=(0, self.rounds), predict_type="value", missing=self.missing)
        kind = "Probability" if self.classes is not None else self.prediction_type
        data = catboost_data(X, self.categorical)
        return self.booster.predict(data, prediction_type=kind, thread_count=n)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """The library's own exact TreeSHAP of X over the iterations raw_values uses, in its own layout:
        (n, k (m + 1)) or, for XGBoost and CatBoost multiclass, (n, k, m + 1); the last of each m + 1 the base."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        n = threads_for(len(X))
        if self.library == "lightgbm":
            return self.booster.predict(X, num_iteration=self.rounds, pred_contrib=True, num_threads=n)
        if self.library == "xgboost":
            import xgboost

            data = xgboost.DMatrix(X, missing=self.missing, enable_categorical=bool(self.categorical),
                                   feature_types=self.booster.feature_types, nthread=n)  # fmt: skip
            booster = self._single if n == 1 else self.booster
            return booster.predict(data, pred_contribs=True, iteration_range=(0, self.rounds))
        from catboost import Pool

        pool = Pool(catboost_data(X, self.categorical), cat_features=list(self.categorical) or None, thread_count=n)
        return self.booster.get_feature_importance(pool, type="ShapValues", thread_count=n)

    def predict_with_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As BoostingClassifier.predict and predict_proba."""
        proba = self.raw_values(X)
        if proba.ndim == 1:  # binary: the positive class's probability, as the wrappers expand it
            proba = np.vstack((1.0 - proba, proba)).transpose()
        proba = np.asarray(proba, dtype=np.float64).reshape(len(X), -1)
        proba = proba / proba.sum(axis=1, keepdims=True)
        return self.classes[proba.argmax(axis=1)], proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        """As BoostingRegressor.predict."""
        return np.asarray(self.raw_values(X), dtype=np.float64).reshape(-1)

    # -- the library's own file format ----------------------------------------------------
    def to_bytes(self) -> bytes:
        if self.library == "lightgbm":
            return self.booster.model_to_string(num_iteration=-1).encode("utf-8")
        if self.library == "xgboost":
            return bytes(self.booster.save_raw(raw_format="ubj"))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.cbm")
            self.booster.save_model(path, format="cbm")
            with open(path, "rb") as file:
                return file.read()

    def describe(self) -> dict:
        """The JSON half of the file (the other half: to_bytes)."""
        classes = self.classes.tolist() if self.classes is not None else None
        missing = None if math.isnan(self.missing) else self.missing
        return {"library": self.library, "categorical": list(self.categorical), "rounds": self.rounds, "classes": classes,
                "prediction_type": self.prediction_type, "missing": missing}  # fmt: skip


def from_bytes(meta: dict, data: bytes) -> NativeBooster:
    """The NativeBooster `describe` and `to_bytes` wrote. Raises ValueError for another library."""
    library = meta["library"]
    if library == "lightgbm":
        import lightgbm

        booster = lightgbm.Booster(model_str=data.decode("utf-8"))
    elif library == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(data))
    elif library == "catboost":
        import catboost

        booster = catboost.CatBoost()
        booster.load_model(blob=data)
    else:
        raise ValueError(f"compiled model: unknown boosting library {library!r}")
    classes = np.asarray(meta["classes"]) if meta["classes"] is not None else None
    missing = math.nan if meta["missing"] is None else float(meta["missing"])
    return NativeBooster(library, booster, tuple(int(i) for i in meta["categorical"]), int(meta["rounds"]), classes,
                         meta["prediction_type"], missing)  # fmt: skip


def from_estimator(estimator) -> NativeBooster | None:
    """tand.models.boosting's fitted estimator as its library's own model, or None when its predictions are
    not ones this module reproduces (a custom objective, XGBoost's multi:softmax, CatBoost's uncertainty)."""
    return as_native(estimator) if _reproduced(estimator) else None


def _reproduced(estimator) -> bool:
    model, classifier = estimator.model_, hasattr(estimator, "classes_")
    if estimator.library == "lightgbm":
        return not (callable(model.objective) or callable(getattr(model, "_objective", None)))
    if estimator.library == "xgboost":
        objective = model.objective
        if not isinstance(objective, str) or objective == "multi:softmax" or model.booster not in (None, "gbtree", "dart"):
            return False
        return not classifier or objective.startswith(("binary:logistic", "multi:softprob"))
    return estimator.library == "catboost" and (classifier or model._get_default_prediction_type() in _CATBOOST_REGRESSION)


def as_native(estimator) -> NativeBooster:
    """tand.models.boosting's fitted estimator's booster, whatever its objective (its TreeSHAP `contributions`
    explain the raw score even where from_estimator declines to reproduce the predictions)."""
    library, model = estimator.library, estimator.model_
    categorical = tuple(int(i) for i in estimator.categorical)
    classes = np.asarray(estimator.classes_) if hasattr(estimator, "classes_") else None
    if library == "lightgbm":
        booster = model.booster_
        return NativeBooster(library, booster, categorical, booster.best_iteration if booster.best_iteration > 0 else -1, classes)
    if library == "xgboost":
        end = model._get_iteration_range(None)[1]
        missing = float(model.missing) if model.missing is not None else math.nan
        # A copy: the estimator's own booster keeps its thread count.
        return NativeBooster(library, model.get_booster().copy(), categorical, int(end), classes, missing=missing)
    if library == "catboost":
        kind = "Probability" if classes is not None else model._get_default_prediction_type()
        return NativeBooster(library, model, categorical, 0, classes, kind)
    raise ValueError(f"unknown boosting library {library!r}")


def catboost_data(X: np.ndarray, categorical: tuple[int, ...]):
    """CatBoost's input: categories as whole numbers (-1 missing), never float (tand.models.boosting_libraries)."""
    if not categorical:
        return X
    from tand.models.boosting_libraries import LIBRARIES as SPECS

    return SPECS["catboost"].data(X, categorical)


def threads_for(rows: int) -> int:
    """One thread for up to ONE_THREAD_ROWS rows (a single row gains nothing from more, and OpenMP threads beside
    busy processes cost milliseconds); the fit's bounded count beyond (a batch, the global explanation)."""
    return 1 if rows <= ONE_THREAD_ROWS else _threads()


def _threads() -> int:
    from tand.models.boosting_libraries import threads

    return threads()
