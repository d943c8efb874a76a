"""Validated rows → predictions, in one vectorised call, by the cheapest path that gives the same answer.

Rows are tuples of feature values in the schema's order (what app.predict.parser.RequestParser returns;
FeatureSchema.rows turns dicts into them).

1. compiled preprocessing + the MLP's NumPy forward pass (the template's default model);
2. compiled preprocessing + LightGBM's, XGBoost's or CatBoost's own predict on the float matrix, on one
   thread for a request's few rows (tand.compiled.boosters);
3. compiled preprocessing + the fitted scikit-learn estimator called on the float matrix;
4. the whole pipeline on a DataFrame, for a preprocessor this template did not build.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from tand.compiled.model import CodeBlock, CompiledPreprocessor, NativeBooster, NumericBlock, NumpyMLP
from app.predict.parser import MAX_MAGNITUDE
from tand.schema import FeatureSchema


class OutOfRange(Exception):
    """Valid JSON numbers the model cannot compute with (1e308 overflows once scaled, or in float32).

    `problems` lists (row index, feature name or None when the model's output is what overflowed).
    """

    def __init__(self, problems: list[tuple[int, str | None]]):
        super().__init__(problems)
        self.problems = problems


class Predictor:
    def __init__(
        self,
        schema: FeatureSchema,
        preprocessor: CompiledPreprocessor | None = None,
        estimator=None,
        pipeline=None,
    ):
        if preprocessor is None and pipeline is None:
            raise ValueError("a Predictor needs a compiled preprocessor or the fitted pipeline")
        self.schema = schema
        self._preprocessor = preprocessor
        self._transform = preprocessor.bind(schema.names) if preprocessor is not None else None
        self._estimator = estimator if preprocessor is not None else None
        self._pipeline = pipeline if preprocessor is None else None
        self._classifier = schema.task == "classification"
        model = self._estimator if self._estimator is not None else pipeline
        self._compiled = isinstance(self._estimator, (NumpyMLP, NativeBooster))  # predict_with_proba / predict
        self._proba = self._classifier and (self._compiled or hasattr(model, "predict_proba"))
        self.class_names, self._order = self._class_layout(model)
        # Binary with a stored threshold: the label is the positive class where its probability reaches it
        # (as tand.training.evaluate.decide did for the metrics); else the model's own label.
        self._positive = schema.positive_index(self.class_names) if self._proba else None
        # The MLP computes in float32, whose range is far smaller than float64's.
        self._limit = float(np.finfo(np.float32 if isinstance(self._estimator, NumpyMLP) else np.float64).max)
        # Requests are bounded (±MAX_MAGNITUDE): when no bounded input can overflow once scaled, skip the check.
        self._check = preprocessor is None or not preprocessor.max_abs(MAX_MAGNITUDE) < self._limit

    @property
    def inference(self) -> str:
        """Which path answers: reported by GET /model."""
        if isinstance(self._estimator, NumpyMLP):
            return "numpy"
        if isinstance(self._estimator, NativeBooster):
            return f"numpy-preprocessing+{self._estimator.library}"
        return "numpy-preprocessing+estimator" if self._preprocessor is not None else "dataframe-pipeline"

    @property
    def batch_invariant(self) -> bool:
        """A row's answer is the same whatever other rows come in the same call (tand.models.forward), so
        requests may share a call (app/coalesce.py). Not so for BLAS products of other estimators."""
        return isinstance(self._estimator, NumpyMLP)

    @property
    def has_probabilities(self) -> bool:
        return self._proba

    @property
    def snapshot_parts(self) -> tuple[CompiledPreprocessor, NumpyMLP | NativeBooster] | None:
        """What a snapshot can hold: a model that runs on NumPy alone, or NumPy and its boosting library."""
        if self._compiled:
            return self._preprocessor, self._estimator
        return None

    def _class_layout(self, model) -> tuple[tuple[str, ...] | None, list[int] | None]:
        if not self._classifier:
            return None, None
        fitted = fitted_classes(model)
        configured = list(self.schema.classes or ())
        if sorted(configured) != sorted(fitted):
            return tuple(fitted), None
        # Probabilities are answered in the configured label order, not scikit-learn's sorted one.
        order = [fitted.index(name) for name in configured]
        return tuple(configured), (None if order == list(range(len(order))) else order)

    def model_input(self, rows: list[tuple]) -> tuple[object, object]:
        """(the estimator's input matrix for `rows`, the estimator): what the prediction and its explanation
        (app/predict/explain.py) are computed from."""
        if self._transform is not None:
            return self._transform(rows), self._estimator
        import pandas as pd

        X = pd.DataFrame(rows, columns=self.schema.names)
        # A missing value arrives as None; the pipeline was fitted on NaN for numbers (as read from the CSV).
        numeric = self.schema.numeric
        if numeric:
            X[numeric] = X[numeric].astype(np.float64)
        model = self._pipeline
        if hasattr(model, "steps"):  # a Pipeline: run its transformers, check, then the estimator
            return model[:-1].transform(X), model[-1]
        return X, model

    @property
    def model_parts(self) -> tuple[object, object | None]:
        """(the estimator model_input feeds, its preprocessor: compiled, fitted, or None for a bare estimator)."""
        if self._preprocessor is not None:
            return self._estimator, self._preprocessor
        if hasattr(self._pipeline, "steps"):
            return self._pipeline[-1], self._pipeline[0]
        return self._pipeline, None

    @cached_property
    def explainer(self):
        """app/predict/explain.py's Explainer for this model: what depends only on the model, built on the
        first explain=true request and kept while this predictor serves (a reload builds a new predictor)."""
        from app.predict.explain import Explainer

        return Explainer(self)

    def _run(self, X, model, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities or None) for the `n` rows of the model input `X`, decided (_decide)."""
        if self._check and isinstance(X, np.ndarray):
            self._check_inputs(X)
        if isinstance(model, (NumpyMLP, NativeBooster)):
            labels, proba = model.predict_with_proba(X) if self._classifier else (model.predict(X), None)
        else:
            # Both calls: for some estimators (SVC) predict is not the argmax of predict_proba.
            labels, proba = model.predict(X), (model.predict_proba(X) if self._proba else None)
        outputs = proba if proba is not None else (None if self._classifier else labels)
        # One reduction on the hot path: a sum is finite only if every value is (the probe below says which).
        if outputs is not None and not math.isfinite(outputs.sum()):
            bad = np.flatnonzero(~np.isfinite(outputs).reshape(n, -1).all(axis=1))
            if len(bad):
                raise OutOfRange([(int(i), None) for i in bad])
        return self._decide(labels, proba)

    def _check_inputs(self, X: np.ndarray) -> None:
        # NaN passes: tree models that handle missing values themselves get them unimputed.
        too_large = np.abs(X) > self._limit
        if not too_large.any():
            return
        rows, columns = np.nonzero(too_large)
        names = self.column_features(numeric_only=True)
        raise OutOfRange([(int(r), names[c] if c < len(names) else None) for r, c in zip(rows, columns)])

    def column_features(self, numeric_only: bool = False) -> list[str | None]:
        """The feature behind each column of the compiled preprocessor's output (a one-hot's columns: its
        feature, or None with numeric_only); [] on the DataFrame path."""
        names: list[str | None] = []
        for block in self._preprocessor.blocks if self._preprocessor is not None else ():
            if isinstance(block, NumericBlock):
                names += list(block.columns)
            elif isinstance(block, CodeBlock):  # one column per feature, holding a category's code
                names += [None if numeric_only else column for column in block.columns]
            else:
                for column, values in zip(block.columns, block.categories):
                    names += [None if numeric_only else column] * len(values)
        return names

    def _decide(self, labels: np.ndarray, proba: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities in the configured label order; the label by the stored threshold where there is one."""
        if proba is not None and self._order is not None:
            proba = proba[:, self._order]
        if self._positive is not None:
            names = np.asarray(self.class_names, dtype=object)
            labels = np.where(proba[:, self._positive] >= self.schema.threshold, names[self._positive], names[1 - self._positive])
        return labels, proba

    @property
    def compiled_preprocessor(self) -> CompiledPreprocessor | None:
        """The compiled preprocessing, for callers that build its matrix column by column (app/predict/columns.py);
        None when it has code blocks (the boosting models' categories), which columns.matrix does not build:
        such callers use predict_rows, whose rows the same compiled preprocessing reads."""
        if self._preprocessor is None or any(isinstance(block, CodeBlock) for block in self._preprocessor.blocks):
            return None
        return self._preprocessor

    def predict_matrix(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities or None) for the compiled preprocessor's output matrix `X`, as answers()
        decides them for the rows it came from (same estimator call, same checks: OutOfRange)."""
        if self._preprocessor is None:
            raise ValueError("predict_matrix needs the compiled preprocessing")
        return self._run(X, self._estimator, len(X))

    def predict_rows(self, rows: list[tuple], inputs: tuple[object, object] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities or None) for validated rows: answers() without a dict per row; `inputs`: what
        model_input(rows) gave, when the caller has it already (an explained request)."""
        X, model = self.model_input(rows) if inputs is None else inputs
        return self._run(X, model, len(rows))

    def answers(self, rows: list[tuple], inputs: tuple[object, object] | None = None) -> list[dict]:
        """One {"prediction", "probabilities"} object per row (regression: the number only); `inputs`: as for predict_rows."""
        labels, proba = self.predict_rows(rows, inputs)
        labels = labels.tolist()
        if not self._classifier:
            return [{"prediction": float(value)} for value in labels]
        labels = [str(label) for label in labels]
        if proba is None:
            return [{"prediction": label} for label in labels]
        names = self.class_names
        return [{"prediction": label, "probabilities": dict(zip(names, p))} for label, p in zip(labels, proba.tolist())]


def fitted_classes(model) -> list[str]:
    """The class labels in the order of the model's outputs (its probability columns, its scores)."""
    return [str(c) for c in (model.classes if isinstance(model, (NumpyMLP, NativeBooster)) else model.classes_)]
