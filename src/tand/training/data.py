"""CSV or Parquet → checked frame → features and labels → seeded split. Plain data in, plain data out."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from tand.config import TrainConfig
from tand.errors import DataError
from tand.schema import Feature, FeatureSchema
from tand.training.memory import release_free_memory
from tand.training.preprocess import preprocess
from tand.training.reading import read_csv, read_table

__all__ = ["Dataset", "Split", "load_dataset", "read_csv", "read_table", "split"]

# An integer column with at most this many distinct values, each seen twice on average, is treated as a
# category (sex, chest-pain type...); declared `numeric` / `categorical` lists override the guess.
MAX_INTEGER_CATEGORIES = 10
# Larger magnitudes overflow float64 when the scaler squares them (StandardScaler's variance, the MLP's
# target scaling): refused with the column named rather than a traceback from inside the fit.
MAX_MAGNITUDE = 1e150
# An undeclared text column whose cells are mostly numbers, apart from a few distinct other values, is a
# numeric column with an unknown missing marker (or a decimal comma), not a category of number strings.
MOSTLY_NUMBERS = 0.5
FEW_OTHER_VALUES = 3
_DECIMAL_COMMA = r"^[+-]?(\d+|\d{1,3}(\.\d{3})+),\d+$"


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


def _check_columns(frame: pd.DataFrame, cfg: TrainConfig) -> None:
    columns = list(frame.columns)
    if cfg.labels_column not in columns:
        one_column = "; the header was read as one column: set train.csv.separator to the file's separator" if len(columns) == 1 else ""
        raise DataError(
            f"train.labels_column: column {cfg.labels_column!r} is not in the CSV; columns are: {', '.join(columns)}{one_column}"
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
        _check_finite(values, name, "train.labels_column: the label")
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
    if isinstance(y.dtype, pd.StringDtype) or pd.api.types.is_integer_dtype(y):  # vectorised: no call per row
        as_text = y if isinstance(y.dtype, pd.StringDtype) else y.astype(str)
    else:
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
                strays = present[converted.isna()].astype(str)
                raise _not_a_number(name, list(dict.fromkeys(strays)), len(strays), cfg)
            present = converted
        integral = bool(len(present)) and bool((present % 1 == 0).all())
        # Distinct values are counted only where they decide (a hash of every value: a second per million rows).
        distinct = present.nunique() if integral and not declared_numeric else None
        if distinct is not None and distinct <= MAX_INTEGER_CATEGORIES and distinct * 2 <= len(present):
            return Feature(name, "categorical", "integer", tuple(sorted(int(v) for v in present.unique())))
        return Feature(name, "numeric", "integer" if integral and pd.api.types.is_integer_dtype(column) else "number")
    if pd.api.types.is_bool_dtype(column):
        return Feature(name, "categorical", "boolean", (False, True))
    if not declared_categorical and not pd.api.types.is_numeric_dtype(column):
        _refuse_numbers_with_strays(name, present, cfg)
    if pd.api.types.is_numeric_dtype(column):
        integral = bool((present % 1 == 0).all())
        values = sorted(int(v) if integral else float(v) for v in present.unique())
        return Feature(name, "categorical", "integer" if integral else "number", tuple(values))
    return Feature(name, "categorical", "string", tuple(sorted(str(v) for v in present.unique())))


def _check_finite(values: pd.Series, name: str, what: str) -> None:
    """inf, -inf and magnitudes the fit cannot square are refused, not imputed: they are usually an upstream
    bug (a division by zero), and reading them as missing would hide it."""
    bad = values[~np.isfinite(values) | (values.abs() > MAX_MAGNITUDE)].dropna()
    if len(bad):
        raise DataError(
            f"{what} {name!r} holds {float(bad.iloc[0])!r} in {len(bad)} row(s){_first_row(bad.index)}; "
            f"numbers must be finite and within ±{MAX_MAGNITUDE:g}: replace them in the CSV or in preprocess() "
            "(an empty cell is read as missing)"
        )


def _first_row(index: pd.Index) -> str:
    # The frame's index is the data row's position unless preprocess() replaced it; +2 counts the header.
    first = index[0]
    return f" (first: line {first + 2} of the CSV)" if isinstance(first, int | np.integer) else ""


def _not_a_number(name: str, strays: list[str], rows: int, cfg: TrainConfig) -> DataError:
    """The line for number cells that do not parse (`strays`: distinct values, most telling first): a decimal
    comma, or a missing marker we do not know."""
    commas = [v for v in strays if re.match(_DECIMAL_COMMA, v)]
    if commas and "decimal" not in cfg.csv.model_fields_set:
        return DataError(
            f"train.csv.decimal: column {name!r} holds {commas[0]!r}, a number with a decimal comma; "
            "set train.csv.decimal to ','"
        )
    return DataError(
        f"train.numeric: column {name!r} holds {strays[0]!r}, not a number ({rows} row(s); values "
        f"{', '.join(map(repr, strays[:FEW_OTHER_VALUES]))}); if that means missing, add it to train.csv.missing_values; "
        f"else fix the CSV or list {name!r} in train.categorical"
    )


def _refuse_numbers_with_strays(name: str, present: pd.Series, cfg: TrainConfig) -> None:
    """A text column that is numbers but for a few distinct values is refused with those values named.
    Works on distinct values, so a million-row category column costs one value_counts."""
    counts = present.value_counts()
    text = pd.Series(counts.index.astype(str))
    parsed = pd.to_numeric(text, errors="coerce").notna().to_numpy()
    if parsed.all():
        # Every cell is a number, yet the reader kept them as text (a decimal mark other than
        # train.csv.decimal, padding, or preprocess() returned strings): say so rather than guess.
        raise DataError(
            f"column {name!r} holds numbers stored as text ({text.iloc[0]!r}); list it in train.numeric to read them "
            f"as numbers (and check train.csv.decimal, now {cfg.csv.decimal!r}), or in train.categorical to keep them as codes"
        )
    numbers = parsed | (text.str.match(_DECIMAL_COMMA).to_numpy() if "decimal" not in cfg.csv.model_fields_set else False)
    weights = counts.to_numpy()
    if weights[numbers].sum() > MOSTLY_NUMBERS * weights.sum() and (~numbers).sum() <= FEW_OTHER_VALUES:
        raise _not_a_number(name, list(text[~parsed]), int(weights[~parsed].sum()), cfg)


def load_dataset(cfg: TrainConfig) -> Dataset:
    """Read the CSV or Parquet file, run the user's preprocess hook, check it against the config, infer feature types."""
    frame = read_table(cfg.data_path, cfg.csv)
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
    empty = [name for name in X.columns if X[name].isna().all()]
    if empty:
        # pandas names a column without a header "Unnamed: N": usually a separator at the end of each line.
        unnamed = " (it has no name in the header: a separator at the end of each line?)" if empty[0].startswith("Unnamed: ") else ""
        raise DataError(
            f"column {empty[0]!r} has no values (every row is missing){unnamed}, so nothing can be learnt from it; "
            "add it to train.to_drop"
        )
    features = tuple(_infer_feature(X[name], name, cfg) for name in X.columns)
    for feature in features:
        if feature.kind == "numeric":
            X[feature.name] = pd.to_numeric(X[feature.name]).astype(float)
            _check_finite(X[feature.name], feature.name, "numeric column")
        elif feature.dtype == "string":
            X[feature.name] = _as_text(X[feature.name])
    if classes is not None and y.nunique() < 2:  # not set(y): a Python loop over every label
        raise DataError(
            f"train.labels_column: {cfg.labels_column!r} holds a single class ({y.iloc[0]!r}); classification needs at least two"
        )
    schema = FeatureSchema(
        # The template's pipeline imputes every feature (tand.training.pipeline): each may be missing in a request.
        features=tuple(replace(feature, nullable=True) for feature in features),
        task=cfg.task,
        label=cfg.labels_column,
        classes=classes,
        framework=cfg.framework or "",
        model=cfg.model or "mlp",
        dropped=tuple(cfg.to_drop),
    )
    release_free_memory()  # what reading and converting freed (a third of a million-row frame's footprint)
    return Dataset(X=X, y=y, schema=schema)


def _as_text(column: pd.Series) -> pd.Series:
    """Every present value as a Python str (NaN where missing), in an object column. Vectorised, and each
    distinct value is one str object that its rows share: a million-row column of a few categories costs
    a pointer per row, not a string per row (1M rows, 3 text columns: reading and splitting peaked at 746 MB,
    now 562 MB)."""
    codes, values = pd.factorize(column, use_na_sentinel=True)
    values = pd.Series(values).astype(str).to_numpy(dtype=object)
    text = np.append(values, np.nan)[codes]  # code -1 (missing) picks the NaN at the end
    return pd.Series(text, index=column.index, name=column.name, dtype=object)


def split(dataset: Dataset, test_size: float, seed: int) -> Split:
    """Seeded split, stratified by class for classification."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if dataset.schema.task == "classification":
        counts = dataset.y.value_counts()
        rare = counts[counts < 2]
        if len(rare):
            raise DataError(f"class {rare.index[0]!r} has a single row; a stratified split needs at least two per class")
        # Sorted codes: the classes np.unique would find, in its order (the same split), without sorting strings.
        stratify = pd.factorize(dataset.y, sort=True)[0]
    n_test = int(np.ceil(test_size * len(dataset.y)))
    if n_test < (dataset.y.nunique() if stratify is not None else 1) or len(dataset.y) - n_test < 2:
        raise DataError(f"{len(dataset.y)} rows are too few to hold out test_size={test_size}; add rows or change train.test_size")
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X, dataset.y, test_size=test_size, random_state=seed, stratify=stratify
    )
    return Split(X_train, X_test, y_train, y_test)
