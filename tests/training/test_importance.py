"""Permutation importance predicted in a few stacked calls equals scikit-learn's, one call per feature and repeat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance

from tand.config import Config
from tand.training.data import Dataset, split
from tand.training.importance import permutation_means
from tand.training.pipeline import build_pipeline
from tand.schema import Feature, FeatureSchema


def _mixed(task: str, rows: int = 900) -> Dataset:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "c": rng.choice(["x", "y", "z"], rows).astype(object)})
    X.loc[::17, "b"] = np.nan
    score = X["a"] - 0.5 * X["b"].fillna(0) + (X["c"] == "y")
    if task == "classification":
        y = pd.Series(np.where(score + rng.normal(size=rows) > 0.3, "yes", "no"))
        classes = ("no", "yes")
    else:
        y, classes = score + rng.normal(size=rows) * 0.1, None
    features = (Feature("a", "numeric", "number"), Feature("b", "numeric", "number"), Feature("c", "categorical", "string", ("x", "y", "z")))
    schema = FeatureSchema(features=features, task=task, label="t", classes=classes, framework="sklearn", model="m")
    return Dataset(X, y, schema)


@pytest.mark.parametrize(
    ("task", "model", "scoring"),
    [
        ("classification", "hist_gradient_boosting", "neg_log_loss"),
        ("classification", "hist_gradient_boosting", None),
        ("classification", "logistic_regression", "neg_log_loss"),
        ("regression", "ridge", "r2"),
    ],
)
def test_permutation_means_equal_scikit_learns(task, model, scoring):
    dataset = _mixed(task)
    cfg = Config.model_validate({"train": {"data_path": "x.csv", "labels_column": "t", "task": task, "framework": "sklearn", "model": model}})
    parts = split(dataset, 0.3, 0)
    pipeline = build_pipeline(dataset.schema, cfg.train, progress=False).fit(parts.X_train, parts.y_train)
    want = permutation_importance(pipeline, parts.X_test, parts.y_test, n_repeats=3, random_state=0, scoring=scoring, n_jobs=1)
    got = permutation_means(pipeline, parts.X_test, parts.y_test, scoring, seed=0)
    np.testing.assert_allclose(got, want.importances_mean, rtol=1e-9, atol=1e-12)
    assert np.abs(got).max() > 0  # the shuffles changed something: the comparison is not of zeros


def test_permutation_means_in_several_calls_equal_one(monkeypatch):
    from tand.training import importance

    dataset = _mixed("classification")
    cfg = Config.model_validate({"train": {"data_path": "x.csv", "labels_column": "t", "framework": "sklearn", "model": "hist_gradient_boosting"}})
    parts = split(dataset, 0.3, 0)
    pipeline = build_pipeline(dataset.schema, cfg.train, progress=False).fit(parts.X_train, parts.y_train)
    whole = permutation_means(pipeline, parts.X_test, parts.y_test, "neg_log_loss", seed=1)
    monkeypatch.setattr(importance, "CELLS_PER_CALL", parts.X_test.size * 2)  # two shuffled copies per call
    chunked = permutation_means(pipeline, parts.X_test, parts.y_test, "neg_log_loss", seed=1)
    np.testing.assert_array_equal(chunked, whole)
