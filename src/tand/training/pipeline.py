"""One artifact whatever the framework: preprocessing and estimator in a scikit-learn Pipeline."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tand.config import TrainConfig
from tand.models.catalog import build_sklearn_estimator
from tand.schema import FeatureSchema


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


def build_estimator(cfg: TrainConfig, progress: bool = True):
    if cfg.framework == "sklearn":
        return build_sklearn_estimator(cfg.task, cfg.model, cfg.model_args, cfg.seed)
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
    return Pipeline([("preprocessor", build_preprocessor(schema)), ("model", build_estimator(cfg, progress))])
