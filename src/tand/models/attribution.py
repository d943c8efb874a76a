"""Additive per-column contributions of a fitted estimator's raw output, on its input matrix.

`attributor(model)` returns a function of the input matrix X giving (base (n, k), contributions (n, columns, k))
with base[:, k] + contributions[:, :, k].sum(1) equal to output k of each row (the raw score: a logit, a class
score, a probability for a forest, the prediction); what depends only on the model (weights in float64, the
reference's activations, each tree's edge values, the library's handle) is computed once, when it is built.
`attribute(model, X)` is the one-off call. Per method:
- LightGBM / XGBoost / CatBoost: the libraries' own exact TreeSHAP (pred_contrib, pred_contribs, ShapValues);
- linear models: coef × (x − reference), exact (reference: the zero input, which is the training mean of
  standardised numbers and "no category" for a one-hot: the base is the intercept);
- scikit-learn decision trees and forests: Saabas path attribution (each split's change of the node value
  goes to its feature), exactly additive, in the trees' own output units (class probability);
- the NumPy MLP: DeepLIFT-rescale against the reference input, exact summation to f(x) − f(reference).
Returns None for a model none of these covers. NumPy only, except the boosting libraries' own calls, which
tand.compiled.boosters makes (their threads: one for a request's rows, the fit's bounded count for a batch).
"""

from __future__ import annotations

import numpy as np

TREES = ("DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier", "RandomForestRegressor",
         "ExtraTreesClassifier", "ExtraTreesRegressor")  # fmt: skip
LINEAR = ("LogisticRegression", "LinearRegression", "Ridge", "Lasso")


def method(model) -> str | None:
    """Which attribution `attribute` uses for `model`, or None when none is supported."""
    name = type(model).__name__
    if (hasattr(model, "library") and hasattr(model, "model_")) or name == "NativeBooster":
        return "treeshap"
    if name in TREES:
        return "saabas"
    if name in LINEAR:
        return "linear"
    if name == "NumpyMLP":
        return "deeplift"
    return None


def attributor(model):
    """X → (base (n, k), contributions (n, columns, k)) in the model's raw output units; None: unsupported."""
    kind = method(model)
    if kind is None:
        return None
    return {"treeshap": _boosting, "saabas": _trees, "linear": _linear, "deeplift": _mlp}[kind](model)


def attribute(model, X):
    """(base (n, k), contributions (n, columns, k)) for one matrix; None: unsupported (see attributor)."""
    explain = attributor(model)
    return None if explain is None else explain(X)


def _boosting(model):
    """The library's own exact TreeSHAP on the float64 matrix, with the iterations its predictions use
    (tand.compiled.boosters.NativeBooster.contributions); `model` is tand.models.boosting's estimator or the
    API's NativeBooster (its own booster)."""
    from tand.compiled.boosters import NativeBooster, as_native

    raw = (model if isinstance(model, NativeBooster) else as_native(model)).contributions

    def attribute(X):
        out = np.asarray(raw(X), dtype=np.float64)
        n, m = X.shape
        if out.ndim == 3:  # (n, k, m + 1): XGBoost and CatBoost multiclass
            out = out.transpose(0, 2, 1)
        else:  # (n, k (m + 1)): one output, or LightGBM's k blocks of m + 1 side by side
            out = out.reshape(n, -1, m + 1).transpose(0, 2, 1)
        return out[:, m, :], out[:, :m, :]

    return attribute


def _linear(model):
    """coef × x against the zero input (the base: the intercept)."""
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))  # (k, m)
    base = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64)) * np.ones(coef.shape[0])
    weights = coef.T[None, :, :]

    def attribute(X):
        X = _dense(X)
        return np.broadcast_to(base, (len(X), len(base))), X[:, :, None] * weights

    return attribute


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


def _trees(model):
    """Saabas: every tree's edge matrix stacked once (the forest's node numbering, as its decision_path's);
    a request is one path indicator per tree and one sparse product."""
    from scipy import sparse

    trees = getattr(model, "estimators_", [model])
    m = int(model.n_features_in_)
    parts = [_tree_parts(tree, m) for tree in trees]
    base = np.mean([root for root, _ in parts], axis=0)
    edges = sparse.vstack([e for _, e in parts], format="csr") / len(trees)
    k = len(base)

    def attribute(X):
        # The trees' own input: float32, C-ordered (or CSR), as their predict converts it.
        X = X.astype(np.float32).tocsr() if sparse.issparse(X) else np.ascontiguousarray(X, dtype=np.float32)
        paths = sparse.hstack([tree.decision_path(X, check_input=False) for tree in trees], format="csr")
        contributions = (paths @ edges).toarray().reshape(X.shape[0], m, k)
        return np.broadcast_to(base, (contributions.shape[0], k)), contributions

    return attribute


def _mlp(model):
    """DeepLIFT-rescale in float64 against the all-zero input (numbers at their training mean); the
    reference's activations are the model's own, computed once."""
    weights = [np.asarray(w, dtype=np.float64) for w in model.weights]
    biases = [np.asarray(b, dtype=np.float64) for b in model.biases]
    r = np.zeros((1, weights[0].shape[0]))
    references = []  # per hidden layer: (pre-activation, activation) of the reference
    for w, b in zip(weights[:-1], biases[:-1]):
        zr = r @ w + b
        r = np.maximum(zr, 0)
        references.append((zr, r))
    base = (r @ weights[-1] + biases[-1])[0]

    def attribute(X):
        X = np.asarray(X, dtype=np.float64)
        a, ratios = X, []
        for w, b, (zr, r) in zip(weights, biases, references):
            z = a @ w + b
            a = np.maximum(z, 0)
            dz = z - zr
            close = np.abs(dz) < 1e-12
            ratios.append(np.where(close, (z > 0).astype(np.float64), (a - r) / np.where(close, 1.0, dz)))
        # Multipliers from each output back to the inputs: (n, width, k).
        multiplier = np.broadcast_to(weights[-1], (len(X), *weights[-1].shape))
        for w, ratio in zip(reversed(weights[:-1]), reversed(ratios)):
            multiplier = w @ (ratio[:, :, None] * multiplier)
        return np.broadcast_to(base, (len(X), len(base))), X[:, :, None] * multiplier

    return attribute


def _dense(X):
    return np.asarray(X.todense()) if hasattr(X, "todense") else np.asarray(X, dtype=np.float64)
