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
    from sklearn.inspection import permutation_importance

    if len(X) > SAMPLE_ROWS:
        X = X.sample(SAMPLE_ROWS, random_state=seed)
        y = y.loc[X.index]
    classification = schema.task == "classification"
    scoring = "neg_log_loss" if classification and hasattr(pipeline, "predict_proba") else (None if classification else "r2")
    if scoring == "neg_log_loss" and y.nunique() < len(pipeline.classes_):
        scoring = None  # a sample missing a class: log loss needs them all; accuracy does not
    result = permutation_importance(pipeline, X, y, n_repeats=REPEATS, random_state=seed, scoring=scoring, n_jobs=1)
    measure = {"neg_log_loss": "log loss", "r2": "R²", None: "accuracy" if classification else "R²"}[scoring]
    values = {str(c): float(v) for c, v in zip(X.columns, result.importances_mean)}
    return Importance(values, f"{measure} lost when the feature is shuffled (permutation, test split)")


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
