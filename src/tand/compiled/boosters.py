"""LightGBM, XGBoost and CatBoost called directly on the compiled preprocessor's float matrix.

tand.models.boosting's estimators go through each library's scikit-learn wrapper: input validation, and
the fit's OpenMP threads for every call (several threads per single-row request, milliseconds on a busy
machine). A NativeBooster holds the library's own model (LightGBM's Booster, XGBoost's Booster, the
CatBoost model) and calls its predict with what the wrapper would pass (the same iterations, missing
value, prediction type), then shapes the result as the estimator's predict_proba / predict do: the same
numbers (tests compare them). Up to ONE_THREAD_ROWS rows run on one thread; a larger batch on the fit's
bounded thread count (tand.models.boosting_libraries.threads).

`to_bytes` / `from_bytes` are each library's own model format (LightGBM's text, XGBoost's UBJSON,
CatBoost's .cbm): the compiled file stores them without pickle, and loading needs the library only.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

ONE_THREAD_ROWS = 64  # as tand.models.attribution: a request's rows gain nothing from more threads
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

    @property
    def single_thread(self):
        """XGBoost: the booster's copy set to one thread (tand.models.attribution's small inputs use it too)."""
        return self._single

    # -- the estimator's outputs ---------------------------------------------------------
    def raw_values(self, X: np.ndarray) -> np.ndarray:
        """What the library's predict answers for the float matrix X (probabilities: its own layout)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        few = len(X) <= ONE_THREAD_ROWS
        if self.library == "lightgbm":
            return self.booster.predict(X, num_iteration=self.rounds, num_threads=1 if few else _threads())
        if self.library == "xgboost":
            booster = self._single if few else self.booster
            return booster.inplace_predict(X, iteration_range=(0, self.rounds), predict_type="value", missing=self.missing)
        kind = "Probability" if self.classes is not None else self.prediction_type
        data = catboost_data(X, self.categorical)
        return self.booster.predict(data, prediction_type=kind, thread_count=1 if few else _threads())

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
    library, model = estimator.library, estimator.model_
    categorical = tuple(int(i) for i in estimator.categorical)
    classes = np.asarray(estimator.classes_) if hasattr(estimator, "classes_") else None
    if library == "lightgbm":
        if callable(model.objective) or callable(getattr(model, "_objective", None)):
            return None
        booster = model.booster_
        return NativeBooster(library, booster, categorical, booster.best_iteration if booster.best_iteration > 0 else -1, classes)
    if library == "xgboost":
        objective = model.objective
        if not isinstance(objective, str) or objective == "multi:softmax" or model.booster not in (None, "gbtree", "dart"):
            return None
        if classes is not None and not objective.startswith(("binary:logistic", "multi:softprob")):
            return None
        end = model._get_iteration_range(None)[1]
        missing = float(model.missing) if model.missing is not None else math.nan
        return NativeBooster(library, model.get_booster().copy(), categorical, int(end), classes, missing=missing)
    if library == "catboost":
        kind = "Probability" if classes is not None else model._get_default_prediction_type()
        if classes is None and kind not in _CATBOOST_REGRESSION:
            return None
        return NativeBooster(library, model, categorical, 0, classes, kind)
    return None


def catboost_data(X: np.ndarray, categorical: tuple[int, ...]):
    """CatBoost's input: categories as whole numbers (-1 missing), never float (tand.models.boosting_libraries)."""
    if not categorical:
        return X
    from tand.models.boosting_libraries import LIBRARIES as SPECS

    return SPECS["catboost"].data(X, categorical)


def _threads() -> int:
    from tand.models.boosting_libraries import threads

    return threads()
