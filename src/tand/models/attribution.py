"""Additive per-column contributions of a fitted estimator's raw output, on its input matrix.

`attribute(model, X)` returns (base, contributions) with base[k] + contributions[:, :, k].sum(1) equal to
output k of each row (the raw score: a logit, a class score, a probability for a forest, the prediction):
- LightGBM / XGBoost / CatBoost: the libraries' own exact TreeSHAP (pred_contrib, pred_contribs, ShapValues);
- linear models: coef × (x − reference), exact (reference: the scaled training mean, 0 for numbers);
- scikit-learn decision trees and forests: Saabas path attribution (each split's change of the node value
  goes to its feature), exactly additive, in the trees' own output units (class probability);
- the NumPy MLP: DeepLIFT-rescale against the reference input, exact summation to f(x) − f(reference).
Returns None for a model none of these covers. NumPy only, except the boosting libraries' own calls.
"""

from __future__ import annotations

import numpy as np

TREES = ("DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier", "RandomForestRegressor",
         "ExtraTreesClassifier", "ExtraTreesRegressor")  # fmt: skip
LINEAR = ("LogisticRegression", "LinearRegression", "Ridge", "Lasso")


def method(model) -> str | None:
    """Which attribution `attribute` uses for `model`, or None when none is supported."""
    name = type(model).__name__
    if hasattr(model, "library") and hasattr(model, "model_"):
        return "treeshap"
    if name in TREES:
        return "saabas"
    if name in LINEAR:
        return "linear"
    if name == "NumpyMLP":
        return "deeplift"
    return None


def attribute(model, X: np.ndarray):
    """(base (k,), contributions (n, columns, k)) in the model's raw output units; None: unsupported."""
    kind = method(model)
    if kind is None:
        return None
    return {"treeshap": _boosting, "saabas": _trees, "linear": _linear, "deeplift": _mlp}[kind](model, X)


def _boosting(model, X):
    X = np.asarray(X, dtype=np.float64)
    data = model._data(X)
    n, m = X.shape
    if model.library == "lightgbm":
        raw = np.asarray(model.model_.predict(data, pred_contrib=True), dtype=np.float64)
    elif model.library == "xgboost":
        import xgboost

        booster = model.model_.get_booster()
        dmatrix = xgboost.DMatrix(data, enable_categorical=bool(model.categorical), feature_types=booster.feature_types)
        raw = np.asarray(booster.predict(dmatrix, pred_contribs=True, iteration_range=(0, model.n_rounds_)), dtype=np.float64)
    else:
        from catboost import Pool

        pool = Pool(data, cat_features=list(model.categorical) or None)
        raw = np.asarray(model.model_.get_feature_importance(pool, type="ShapValues"), dtype=np.float64)
    if raw.ndim == 3:  # (n, k, m + 1): XGBoost and CatBoost multiclass
        raw = raw.transpose(0, 2, 1)
    else:
        k = raw.shape[1] // (m + 1)  # LightGBM multiclass: k blocks of m + 1 side by side
        raw = raw.reshape(n, k, m + 1).transpose(0, 2, 1)
    return raw[:, m, :], raw[:, :m, :]


def _linear(model, X):
    X = _dense(X)
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))  # (k, m)
    intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64)) * np.ones(coef.shape[0])
    reference = getattr(model, "training_mean_", None)
    reference = np.zeros(X.shape[1]) if reference is None else np.asarray(reference, dtype=np.float64)
    base = intercept + coef @ reference
    contributions = (X - reference)[:, :, None] * coef.T[None, :, :]
    return np.broadcast_to(base, (len(X), len(base))), contributions


def _tree_parts(tree, m: int):
    """(root value (k,), edge matrix (nodes, m * k)): entering node j adds value[j] − value[parent] to parent's feature."""
    from scipy import sparse

    t = tree.tree_
    value = t.value.reshape(t.node_count, -1).astype(np.float64)
    k = value.shape[1]
    parent = np.full(t.node_count, -1)
    for side in (t.children_left, t.children_right):
        inner = side >= 0
        parent[side[inner]] = np.flatnonzero(inner)
    child = np.flatnonzero(parent >= 0)
    delta = value[child] - value[parent[child]]  # (edges, k)
    feature = t.feature[parent[child]]
    rows = np.repeat(child, k)
    cols = (feature[:, None] * k + np.arange(k)[None, :]).reshape(-1)
    edges = sparse.csr_matrix((delta.reshape(-1), (rows, cols)), shape=(t.node_count, m * k))
    return value[0], edges


def _trees(model, X):
    trees = getattr(model, "estimators_", [model])
    n, m = X.shape
    base, total = 0.0, 0.0
    for tree in trees:
        root, edges = _tree_parts(tree, m)
        base = base + root
        total = total + (tree.decision_path(X) @ edges).toarray()
    k = len(base)
    contributions = np.asarray(total).reshape(n, m, k) / len(trees)
    return np.broadcast_to(base / len(trees), (n, k)), contributions


def _mlp(model, X):
    """DeepLIFT-rescale in float64 against the all-zero input (numbers at their training mean)."""
    X = np.asarray(X, dtype=np.float64)
    weights = [np.asarray(w, dtype=np.float64) for w in model.weights]
    biases = [np.asarray(b, dtype=np.float64) for b in model.biases]
    reference = np.zeros((1, X.shape[1]))
    a, r, ratios = X, reference, []
    for i, (w, b) in enumerate(zip(weights, biases)):
        z, zr = a @ w + b, r @ w + b
        if i == len(weights) - 1:
            break
        a, r = np.maximum(z, 0), np.maximum(zr, 0)
        dz = z - zr
        close = np.abs(dz) < 1e-12
        ratios.append(np.where(close, (z > 0).astype(np.float64), (a - r) / np.where(close, 1.0, dz)))
    # Multipliers from each output back to the inputs: (n, width, k).
    multiplier = np.broadcast_to(weights[-1], (len(X), *weights[-1].shape))
    for w, ratio in zip(reversed(weights[:-1]), reversed(ratios)):
        multiplier = np.einsum("ij,nj,njk->nik", w, ratio, multiplier)
    contributions = (X - reference)[:, :, None] * multiplier
    base = np.broadcast_to(zr[0], (len(X), zr.shape[1]))
    return base, contributions


def _dense(X):
    return np.asarray(X.todense()) if hasattr(X, "todense") else np.asarray(X, dtype=np.float64)
