"""One artifact whatever the framework: preprocessing and estimator in a scikit-learn Pipeline.

Most models get numbers imputed and scaled and categories one-hot encoded: dense (the API's compiled
form reads it) unless the one-hot is wide (over SPARSE_MIN_WIDTH columns) and the model takes a sparse
matrix (linear models, SVMs, k-NN, scikit-learn's trees), where a sparse matrix holds one value per
feature and row instead of one per category; `train.max_categories` groups the rarest categories of
each column into one (OneHotEncoder's max_categories). Tree models that handle
categories themselves (tand.models.catalog.NATIVE_CATEGORIES) get no one-hot matrix (a dense one-hot of a
high-cardinality column is quadratic memory, and slower to fit): numbers pass through with their NaN (the
libraries learn where missing values go), categories become integer codes (missing or unknown: NaN), and
the estimator is told which columns they are.
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from tand.config import TrainConfig
from tand.models.catalog import BOOSTING, NATIVE_CATEGORIES, build_sklearn_estimator
from tand.schema import FeatureSchema

# Models whose fit and predict take a scipy sparse matrix (GaussianNB and the MLP need dense arrays).
SPARSE_MODELS = frozenset({
    "logistic_regression", "linear", "ridge", "lasso", "svm", "knn", "decision_tree", "random_forest",
    "extra_trees", "gradient_boosting", "ada_boost",
})  # fmt: skip
# Below this many one-hot columns dense is as small, faster to fit, and the API's compiled path reads it.
SPARSE_MIN_WIDTH = 256
# HistGradientBoosting bins a category per code: at most max_bins (255) of them; rarer ones are grouped.
HGB_MAX_CATEGORIES = 255


def onehot_width(schema: FeatureSchema, max_categories: int | None = None) -> int:
    """Columns the one-hot encoder outputs: each categorical feature's categories (capped by max_categories)."""
    counts = [len(f.categories or ()) or 1 for f in schema.features if f.kind == "categorical"]
    return sum(min(c, max_categories) if max_categories else c for c in counts)


def sparse_onehot(schema: FeatureSchema, cfg: TrainConfig) -> bool:
    """Whether build_pipeline one-hot encodes into a sparse matrix for `cfg`'s model."""
    return (
        cfg.framework == "sklearn" and cfg.model in SPARSE_MODELS
        and onehot_width(schema, cfg.max_categories) > SPARSE_MIN_WIDTH
    )


def build_preprocessor(schema: FeatureSchema, max_categories: int | None = None, sparse: bool = False) -> ColumnTransformer:
    """Numbers imputed and scaled, categories imputed and one-hot encoded (`sparse`: a CSR matrix out)."""
    transformers = []
    if schema.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, schema.numeric))
    if schema.categorical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse, max_categories=max_categories)),
            ]
        )
        transformers.append(("categorical", categorical, schema.categorical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=1.0 if sparse else 0.0)


def build_native_preprocessor(schema: FeatureSchema, max_categories: int | None = None) -> ColumnTransformer:
    """Numbers as they are, then each categorical column as integer codes (NaN: missing or unknown)."""
    transformers = []
    if schema.numeric:
        transformers.append(("numeric", "passthrough", schema.numeric))
    if schema.categorical:
        codes = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
            max_categories=max_categories, dtype=np.float64,
        )
        transformers.append(("categorical", codes, schema.categorical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def categorical_positions(schema: FeatureSchema) -> list[int]:
    """Columns of the native preprocessor's output that hold category codes (they follow the numbers)."""
    return list(range(len(schema.numeric), len(schema.numeric) + len(schema.categorical)))


def native_categories(cfg: TrainConfig) -> bool:
    return cfg.framework == "sklearn" and cfg.model in NATIVE_CATEGORIES


def _hgb_max_categories(cfg: TrainConfig) -> int:
    max_bins = cfg.model_args.get("max_bins", HGB_MAX_CATEGORIES)
    return max_bins if isinstance(max_bins, int) and 1 < max_bins <= HGB_MAX_CATEGORIES else HGB_MAX_CATEGORIES


def build_estimator(cfg: TrainConfig, progress: bool = True, categorical: list[int] | None = None):
    """The estimator `cfg` names; `categorical`: the input columns holding category codes (native-category models)."""
    if cfg.framework == "sklearn" and cfg.model in BOOSTING:
        from tand.models.boosting import build_boosting

        return build_boosting(cfg.task, cfg.model, cfg.model_args, cfg.seed, categorical or (), progress)
    if cfg.framework == "sklearn":
        estimator = build_sklearn_estimator(cfg.task, cfg.model, cfg.model_args, cfg.seed)
        if cfg.model == "hist_gradient_boosting" and categorical and "categorical_features" not in cfg.model_args:
            estimator.set_params(categorical_features=list(categorical))
        return estimator
    from tand.models.mlp import MLPClassifier, MLPRegressor

    cls = MLPClassifier if cfg.task == "classification" else MLPRegressor
    return cls(
        hidden_sizes=tuple(cfg.hidden_sizes),
        dropout=cfg.dropout,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        validation_fraction=cfg.validation_fraction,
        log_every=cfg.log_every,
        device=cfg.device,
        seed=cfg.seed,
        progress=progress,
    )


def _needed(schema: FeatureSchema, max_categories: int | None) -> int | None:
    """`max_categories` when some column has more categories, else None: the encoders then skip counting
    every value (seconds at a million rows), and the API's compiled form can read a plain one-hot."""
    counts = [len(f.categories or ()) for f in schema.features if f.kind == "categorical"]
    return max_categories if max_categories and any(count > max_categories for count in counts) else None


def build_pipeline(schema: FeatureSchema, cfg: TrainConfig, progress: bool = True) -> Pipeline:
    if not native_categories(cfg):
        preprocessor = build_preprocessor(schema, _needed(schema, cfg.max_categories), sparse_onehot(schema, cfg))
        return Pipeline([("preprocessor", preprocessor), ("model", build_estimator(cfg, progress))])
    limit = cfg.max_categories
    if cfg.model == "hist_gradient_boosting":
        limit = min(limit or HGB_MAX_CATEGORIES, _hgb_max_categories(cfg))
    preprocessor = build_native_preprocessor(schema, _needed(schema, limit))
    return Pipeline([("preprocessor", preprocessor), ("model", build_estimator(cfg, progress, categorical_positions(schema)))])
