"""One artifact whatever the framework: preprocessing and estimator in a scikit-learn Pipeline.

Most models get numbers imputed and scaled and categories one-hot encoded. Tree models that handle
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

# HistGradientBoosting bins a category per code: at most max_bins (255) of them; rarer ones are grouped.
HGB_MAX_CATEGORIES = 255


def build_preprocessor(schema: FeatureSchema) -> ColumnTransformer:
    transformers = []
    if schema.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, schema.numeric))
    if schema.categorical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        transformers.append(("categorical", categorical, schema.categorical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


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


def build_pipeline(schema: FeatureSchema, cfg: TrainConfig, progress: bool = True) -> Pipeline:
    if not native_categories(cfg):
        return Pipeline([("preprocessor", build_preprocessor(schema)), ("model", build_estimator(cfg, progress))])
    limit = _hgb_max_categories(cfg) if cfg.model == "hist_gradient_boosting" else None
    preprocessor = build_native_preprocessor(schema, limit)
    return Pipeline([("preprocessor", preprocessor), ("model", build_estimator(cfg, progress, categorical_positions(schema)))])
