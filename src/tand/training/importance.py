"""Feature importance for every model, per original feature (a one-hot's columns summed back to it).

Where the fitted estimator measures importance itself (`feature_importances_`: the boosting libraries'
gain, a random forest's impurity decrease), that is used; otherwise (linear models, the MLP,
HistGradientBoosting, SVC, k-NN) scikit-learn's permutation importance on a bounded, seeded sample of the
test split: how much the score drops when one raw column is shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tand.schema import FeatureSchema

SAMPLE_ROWS = 2000  # permutation importance re-predicts the sample once per feature and repeat
REPEATS = 3
CELLS_PER_CALL = 2_000_000  # values of the stacked shuffled copies predicted in one call
SHOWN = 20  # bars in the plot


@dataclass(frozen=True)
class Importance:
    values: dict[str, float]  # per original feature, summing to 1 for the model's own measure
    kind: str  # what the values measure, for the plot's axis


def output_features(preprocessor) -> list[str]:
    """The original feature behind each column the fitted ColumnTransformer outputs."""
    owners: list[str] = []
    for name, transformer, columns in preprocessor.transformers_:
        if transformer == "drop" or name == "remainder":
            continue
        columns = list(columns)
        names = transformer.get_feature_names_out(columns) if transformer != "passthrough" else columns
        for out in names:
            # A one-hot column is "<feature>_<category>": the longest feature that prefixes it owns it.
            matches = [c for c in columns if out == c or str(out).startswith(f"{c}_")]
            owners.append(max(matches, key=len) if matches else str(out))
    return owners


def _own_importance(pipeline) -> Importance | None:
    estimator = pipeline[-1]
    raw = getattr(estimator, "feature_importances_", None)
    if raw is None:
        return None
    owners = output_features(pipeline[0])
    raw = np.asarray(raw, dtype=np.float64)
    if len(owners) != len(raw):
        return None
    values: dict[str, float] = {}
    for owner, value in zip(owners, raw):
        values[owner] = values.get(owner, 0.0) + float(value)
    total = sum(values.values())
    kind = "gain" if hasattr(estimator, "library") else "impurity decrease"
    return Importance({k: v / total if total > 0 else v for k, v in values.items()}, f"share of the model's {kind}")


def _permutation(pipeline, X: pd.DataFrame, y: pd.Series, schema: FeatureSchema, seed: int) -> Importance:
    if len(X) > SAMPLE_ROWS:
        X = X.sample(SAMPLE_ROWS, random_state=seed)
        y = y.loc[X.index]
    classification = schema.task == "classification"
    scoring = "neg_log_loss" if classification and hasattr(pipeline, "predict_proba") else (None if classification else "r2")
    if scoring == "neg_log_loss" and y.nunique() < len(pipeline.classes_):
        scoring = None  # a sample missing a class: log loss needs them all; accuracy does not
    means = permutation_means(pipeline, X, y, scoring, seed)
    measure = {"neg_log_loss": "log loss", "r2": "R²", None: "accuracy" if classification else "R²"}[scoring]
    values = {str(c): float(v) for c, v in zip(X.columns, means)}
    return Importance(values, f"{measure} lost when the feature is shuffled (permutation, test split)")


def permutation_means(pipeline, X: pd.DataFrame, y: pd.Series, scoring: str | None, seed: int, repeats: int = REPEATS) -> np.ndarray:
    """scikit-learn's permutation_importance(...).importances_mean, the same shuffles (its seeding, its repeated
    shuffles of one index per column) and the same scorer, with the predictions made in a few large calls:
    every shuffled copy of the sample is stacked and predicted at once (CELLS_PER_CALL values at a time) instead
    of one call per feature and repeat. A boosting model's predict pays a fixed cost per call, and threads
    that wait for each other on small batches (HistGradientBoosting, 33 calls of 2,000 rows: 5.6 s of CPU on a
    busy two-core machine, now a fifth of it)."""
    from sklearn.metrics import check_scoring
    from sklearn.utils import check_random_state

    scorer = check_scoring(pipeline, scoring=scoring)
    method = "predict_proba" if scoring == "neg_log_loss" else "predict"
    baseline = scorer(_Answers(pipeline, getattr(pipeline, method)(X)), X, y)
    random_seed = check_random_state(seed).randint(np.iinfo(np.int32).max + 1)
    per_call = max(1, CELLS_PER_CALL // max(1, X.size))
    scores, waiting = [], []
    for block in _shuffled_copies(X, random_seed, repeats):
        waiting.append(block)
        if len(waiting) == per_call:
            scores += _scores(pipeline, method, scorer, waiting, y)
            waiting = []
    if waiting:
        scores += _scores(pipeline, method, scorer, waiting, y)
    return baseline - np.array(scores).reshape(X.shape[1], repeats).mean(axis=1)


def _shuffled_copies(X: pd.DataFrame, random_seed: int, repeats: int):
    """X with one column shuffled, per column and repeat, in scikit-learn's order and with its shuffles."""
    for name in X.columns:
        state = np.random.RandomState(random_seed)  # each column's own generator, seeded alike (as scikit-learn does)
        index = np.arange(len(X))
        values = X[name].to_numpy()
        for _ in range(repeats):
            state.shuffle(index)
            values = values[index]  # scikit-learn shuffles the already shuffled column again
            block = X.copy()
            block[name] = values
            yield block


def _scores(pipeline, method: str, scorer, blocks: list[pd.DataFrame], y) -> list[float]:
    """The scorer's value for each block, from one prediction of the blocks stacked."""
    answer = np.asarray(getattr(pipeline, method)(pd.concat(blocks, ignore_index=True)))
    return [scorer(_Answers(pipeline, part), block, y) for part, block in zip(np.split(answer, len(blocks)), blocks)]


class _Answers:
    """Stands for the pipeline in a scorer call, answering with predictions made beforehand for that X."""

    def __init__(self, pipeline, output):
        self.classes_ = getattr(pipeline, "classes_", None)
        self._tags = pipeline.__sklearn_tags__()
        self._output = output

    def __sklearn_tags__(self):
        return self._tags

    def predict_proba(self, X):
        return self._output

    def predict(self, X):
        return self._output

    def score(self, X, y, sample_weight=None):  # what scoring=None calls: the pipeline's own score
        from sklearn.metrics import accuracy_score, r2_score

        if self._tags.estimator_type == "classifier":
            return accuracy_score(y, self._output, sample_weight=sample_weight)
        return r2_score(y, self._output, sample_weight=sample_weight)


def feature_importance(pipeline, X_test: pd.DataFrame, y_test: pd.Series, schema: FeatureSchema, seed: int = 0) -> Importance:
    return _own_importance(pipeline) or _permutation(pipeline, X_test, y_test, schema, seed)


def importance_figure(importance: Importance):
    from tand.training import canvas

    ranked = sorted(importance.values.items(), key=lambda kv: kv[1], reverse=True)
    shown = ranked[:SHOWN][::-1]
    height = 1.4 + 0.28 * len(shown)
    fig = canvas.new_figure(7.5, height, layout="constrained")
    ax = fig.subplots()
    names = [name if len(name) <= 32 else name[:31] + "…" for name, _ in shown]
    values = [value for _, value in shown]
    ax.barh(names, values, color=["#4c72b0" if v >= 0 else "#c44e52" for v in values], height=0.65)
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_xlabel(importance.kind)
    more = f" (top {SHOWN} of {len(ranked)})" if len(ranked) > SHOWN else ""
    ax.set_title(f"Feature importance{more}")
    ax.grid(axis="x", alpha=0.3)
    return fig
