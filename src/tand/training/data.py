"""CSV → checked frame → features and labels → seeded split. Plain data in, plain data out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tand.config import TrainConfig
from tand.errors import DataError
from tand.training.preprocess import preprocess
from tand.schema import Feature, FeatureSchema

# An integer column with at most this many distinct values, each seen twice on average, is treated as a
# category (sex, chest-pain type...); declared `numeric` / `categorical` lists override the guess.
MAX_INTEGER_CATEGORIES = 10


@dataclass(frozen=True)
class Dataset:
    X: pd.DataFrame
    y: pd.Series
    schema: FeatureSchema


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV, tolerating a UTF-8 byte-order mark and stray spaces around column names."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"train.data_path: file {str(path)!r} not found; put your CSV there or change data_path")
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"train.data_path: {str(path)!r} is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"train.data_path: {str(path)!r} is not a readable UTF-8 CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _check_columns(frame: pd.DataFrame, cfg: TrainConfig) -> None:
    columns = list(frame.columns)
    if cfg.labels_column not in columns:
        raise DataError(
            f"train.labels_column: column {cfg.labels_column!r} is not in the CSV; columns are: {', '.join(columns)}"
        )
    for key in ("to_drop", "categorical", "numeric"):
        missing = [c for c in (getattr(cfg, key) or []) if c not in columns]
        if missing:
            raise DataError(f"train.{key}: column(s) {', '.join(map(repr, missing))} not in the CSV; columns are: {', '.join(columns)}")
    both = set(cfg.categorical or []) & set(cfg.numeric or [])
    if both:
        raise DataError(f"train.categorical and train.numeric both list {', '.join(sorted(both))}; keep each column in one")


def _encode_labels(y: pd.Series, cfg: TrainConfig) -> tuple[pd.Series, tuple[str, ...] | None]:
    name = cfg.labels_column
    if y.isna().any():
        raise DataError(f"train.labels_column: {int(y.isna().sum())} row(s) have no value in {name!r}; fill or remove them")
    if cfg.task == "regression":
        values = pd.to_numeric(y, errors="coerce")
        if values.isna().any():
            bad = y[values.isna()].iloc[0]
            raise DataError(f"train.labels_column: regression needs numbers in {name!r}, found {bad!r}; set task to 'classification'?")
        return values.astype(float), None
    if cfg.labels:
        codes = pd.to_numeric(y, errors="coerce")
        if codes.isna().any() or (codes % 1 != 0).any():
            if set(y.astype(str)) <= set(cfg.labels):
                return y.astype(str), tuple(cfg.labels)
            bad = y[codes.isna() | (codes % 1 != 0)].iloc[0]
            raise DataError(
                f"train.labels: {name!r} holds {bad!r}, but `labels` names integer classes 0..{len(cfg.labels) - 1}; "
                "remove `labels` to use the column's own values"
            )
        found = sorted(int(c) for c in codes.unique())
        if found[0] < 0 or found[-1] >= len(cfg.labels):
            raise DataError(
                f"train.labels: {name!r} holds classes {found} but `labels` names {len(cfg.labels)} "
                f"(0..{len(cfg.labels) - 1}); give one name per class, in order"
            )
        return codes.astype(int).map(dict(enumerate(cfg.labels))), tuple(cfg.labels)
    as_text = y.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    return as_text, tuple(sorted(as_text.unique(), key=_natural_key))


def _natural_key(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _infer_feature(column: pd.Series, name: str, cfg: TrainConfig) -> Feature:
    declared_numeric = name in (cfg.numeric or [])
    declared_categorical = name in (cfg.categorical or [])
    present = column.dropna()
    if declared_numeric or (not declared_categorical and pd.api.types.is_numeric_dtype(column)):
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            converted = pd.to_numeric(present, errors="coerce")
            if converted.isna().any():
                bad = present[converted.isna()].iloc[0]
                raise DataError(f"train.numeric: column {name!r} holds {bad!r}, not a number; fix the CSV or list it in train.categorical")
            present = converted
        integral = bool(len(present)) and bool((present % 1 == 0).all())
        distinct = present.nunique()
        if not declared_numeric and integral and distinct <= MAX_INTEGER_CATEGORIES and distinct * 2 <= len(present):
            return Feature(name, "categorical", "integer", tuple(sorted(int(v) for v in present.unique())))
        return Feature(name, "numeric", "integer" if integral and pd.api.types.is_integer_dtype(column) else "number")
    if pd.api.types.is_bool_dtype(column):
        return Feature(name, "categorical", "boolean", (False, True))
    if pd.api.types.is_numeric_dtype(column):
        integral = bool((present % 1 == 0).all())
        values = sorted(int(v) if integral else float(v) for v in present.unique())
        return Feature(name, "categorical", "integer" if integral else "number", tuple(values))
    return Feature(name, "categorical", "string", tuple(sorted(str(v) for v in present.unique())))


def load_dataset(cfg: TrainConfig) -> Dataset:
    """Read the CSV, run the user's preprocess hook, check it against the config, infer feature types."""
    frame = read_csv(cfg.data_path)
    if frame.empty:
        raise DataError(f"train.data_path: {cfg.data_path!r} has a header but no rows; add data")
    _check_columns(frame, cfg)
    frame = preprocess(frame.drop(columns=cfg.to_drop))
    if cfg.labels_column not in frame.columns:
        raise DataError(f"preprocess(): the returned frame lost the label column {cfg.labels_column!r}; keep it")
    y, classes = _encode_labels(frame[cfg.labels_column], cfg)
    X = frame.drop(columns=[cfg.labels_column])
    if X.shape[1] == 0:
        raise DataError("the CSV has no feature columns besides the label; add features or shorten train.to_drop")
    features = tuple(_infer_feature(X[name], name, cfg) for name in X.columns)
    for feature in features:
        if feature.kind == "numeric":
            X[feature.name] = pd.to_numeric(X[feature.name]).astype(float)
        elif feature.dtype == "string":
            X[feature.name] = X[feature.name].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    if classes is not None and len(set(y)) < 2:
        raise DataError(
            f"train.labels_column: {cfg.labels_column!r} holds a single class ({y.iloc[0]!r}); classification needs at least two"
        )
    schema = FeatureSchema(
        features=features,
        task=cfg.task,
        label=cfg.labels_column,
        classes=classes,
        framework=cfg.framework or "",
        model=cfg.model or "mlp",
        dropped=tuple(cfg.to_drop),
    )
    return Dataset(X=X, y=y, schema=schema)


def split(dataset: Dataset, test_size: float, seed: int) -> Split:
    """Seeded split, stratified by class for classification."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if dataset.schema.task == "classification":
        counts = dataset.y.value_counts()
        rare = counts[counts < 2]
        if len(rare):
            raise DataError(f"class {rare.index[0]!r} has a single row; a stratified split needs at least two per class")
        stratify = dataset.y
    n_test = int(np.ceil(test_size * len(dataset.y)))
    if n_test < (dataset.y.nunique() if stratify is not None else 1) or len(dataset.y) - n_test < 2:
        raise DataError(f"{len(dataset.y)} rows are too few to hold out test_size={test_size}; add rows or change train.test_size")
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X, dataset.y, test_size=test_size, random_state=seed, stratify=stratify
    )
    return Split(X_train, X_test, y_train, y_test)


def example_request(dataset: Dataset) -> dict:
    """One real row's feature values, as JSON-ready Python values (a valid /predict body)."""
    complete = dataset.X.dropna()
    row = (complete if len(complete) else dataset.X).iloc[0]
    body = {}
    for feature in dataset.schema.features:
        value = row[feature.name]
        if pd.isna(value):
            value = feature.categories[0] if feature.categories else 0.0
        if feature.dtype == "integer":
            value = int(value)
        elif feature.dtype == "number":
            value = float(value)
        elif feature.dtype == "boolean":
            value = bool(value)
        else:
            value = str(value)
        body[feature.name] = value
    return body
