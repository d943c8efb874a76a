"""CSV or Parquet files (one, several, or a glob such as data/part-*.csv) → a partitioned Dask DataFrame →
the feature schema, a seeded random split, and the test split (plus a bounded training sample) on this machine.

The frame never has to fit here: the schema's kinds are inferred from a seeded sample as tand.training.data
infers them from a whole file, and each categorical column's categories (with their counts) and the label's
values come from the whole frame, counted on the cluster. The functions that run on the workers
(`_prepare`, `clean`) use only pandas and NumPy and travel to the workers by value (`by_value`), so the
scheduler and the workers need the pinned libraries, not the template.

Differences from one machine: the user's preprocess() runs per partition (it must work row by row), and
the split is Dask's random split (seeded, not stratified by class).
"""

from __future__ import annotations

import glob
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd

from tand.config import TrainConfig
from tand.errors import DataError
from tand.schema import Feature, FeatureSchema
from tand.training import data as single
from tand.training.fitting import SAMPLE_ROWS
from tand.training.reading import PARQUET_SUFFIXES, sniff_separator

INFER_ROWS = 20_000  # rows of the seeded sample the feature kinds are inferred from


class by_value:
    """A callable that pickles by value (cloudpickle), whatever pickler dask picks for the task graph
    (plain pickle first, which would name the function's module): the scheduler and the workers import none
    of the template. Unpickled, it is the function itself."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __reduce__(self):
        import pickle

        import cloudpickle

        from tand.training import preprocess

        for module in (sys.modules[__name__], preprocess, *EXTRA_BY_VALUE):
            cloudpickle.register_pickle_by_value(module)
        return pickle.loads, (cloudpickle.dumps(self.function),)


EXTRA_BY_VALUE: list = []  # other modules whose functions run on the workers (tand.training.distributed)


@dataclass(frozen=True)
class ClusterDataset(single.Dataset):
    """X, y: a local sample (request example, model card); `rows`: the whole frame's count."""

    rows: int = 0


@dataclass(frozen=True)
class ClusterSplit(single.Split):
    """X_test, y_test: the whole test split; X_train, y_train: a bounded seeded sample of the training split."""

    train_rows: int = 0
    train_frame: object = None  # the training split as a Dask DataFrame (cleaned by `clean` per partition)
    clean: object = None  # the function that turns a raw partition into features and labels


def data_files(path: str) -> list[str]:
    """The files `train.data_path` names: a glob's matches, sorted (a remote URL is Dask's to expand)."""
    if "://" in path:
        return [path]
    files = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
    if not files:
        raise DataError(f"train.data_path: no file matches {path!r}; put your CSV or Parquet parts there or change data_path")
    for name in files:
        if not os.path.isfile(name):
            raise DataError(f"train.data_path: file {name!r} not found; put your data there or change data_path")
    return files


def read_frame(cfg: TrainConfig):
    """The raw Dask DataFrame of `train.data_path`, read with `train.csv`'s conventions."""
    import dask.dataframe as dd

    files = data_files(cfg.data_path)
    if files[0].lower().endswith(PARQUET_SUFFIXES):
        return dd.read_parquet(files)
    options = cfg.csv
    encoding = "utf-8-sig" if options.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else options.encoding
    separator = options.separator
    if separator is None and "://" not in files[0]:
        with open(files[0], encoding=encoding, newline="") as handle:
            separator = sniff_separator(handle.readline(), options.decimal)
    return dd.read_csv(
        files, sep=separator or ",", decimal=options.decimal, encoding=encoding, skipinitialspace=True,
        keep_default_na=False, na_values=list(options.missing_values), assume_missing=True,
        dtype={name: "object" for name in cfg.categorical or []},  # declared categories: text in every part
    )


@contextmanager
def read_errors(cfg: TrainConfig):
    """Dask infers each column's type from the first block; a part that disagrees is one line naming the column."""
    try:
        yield
    except ValueError as exc:
        if "Mismatched dtypes" not in str(exc):
            raise
        columns = re.findall(r"^\|\s*([^|]+?)\s*\|\s*\S+\s*\|\s*\S+\s*\|$", str(exc), re.MULTILINE)[1:]
        bad = re.search(r"could not convert string to float: ('[^']*')", str(exc))
        name = columns[0] if columns else "?"
        raise DataError(
            f"column {name!r} holds numbers in the first rows of {cfg.data_path!r} but text"
            f"{' (' + bad.group(1) + ')' if bad else ''} further on; if that marks a missing value add it to "
            f"train.csv.missing_values, else list {name!r} in train.categorical (read as text) or fix the data"
        ) from None


def _prepare(part: pd.DataFrame, drop: list[str], hook) -> pd.DataFrame:
    """On a worker: names stripped, `train.to_drop` removed, the user's preprocess() applied."""
    part = part.rename(columns=lambda name: str(name).strip())
    return hook(part.drop(columns=drop))


def clean(part: pd.DataFrame, features: tuple, label: str, label_values: dict | None) -> tuple[pd.DataFrame, pd.Series]:
    """A prepared partition as the pipeline takes it: numbers as float (NaN missing), text as str objects
    (NaN missing), columns in schema order; the label as the model's classes (or numbers)."""
    X = pd.DataFrame(index=part.index)
    for name, kind, dtype in features:
        column = part[name]
        if kind == "numeric" or dtype in ("integer", "number"):
            X[name] = pd.to_numeric(column).astype(np.float64)
        else:
            X[name] = pd.Series([np.nan if pd.isna(v) else v if dtype == "boolean" else str(v) for v in column], index=part.index, dtype=object)
    y = part[label]
    y = y.map(label_values) if label_values is not None else pd.to_numeric(y).astype(np.float64)
    return X, y


def load_cluster_dataset(cfg: TrainConfig, client) -> tuple[ClusterDataset, ClusterSplit, dict]:
    """The schema, the split and each categorical column's category counts (for fitting the encoder here)."""
    import dask

    from tand.training.preprocess import preprocess

    raw = read_frame(cfg)
    head = raw.head(100, npartitions=1)
    if head.empty:
        raise DataError(f"train.data_path: {cfg.data_path!r} has a header but no rows; add data")
    single._check_columns(head.rename(columns=lambda n: str(n).strip()), cfg)
    meta = _prepare(head, list(cfg.to_drop), preprocess).iloc[:0]
    if cfg.labels_column not in meta.columns:
        raise DataError(f"preprocess(): the returned frame lost the label column {cfg.labels_column!r}; keep it")
    frame = raw.map_partitions(by_value(_prepare), list(cfg.to_drop), by_value(preprocess), meta=meta)
    with read_errors(cfg):
        rows = int(client.compute(frame.shape[0]).result())
    sample = frame.sample(frac=min(1.0, INFER_ROWS / max(rows, 1)), random_state=cfg.seed).compute()
    names = [c for c in frame.columns if c != cfg.labels_column]
    if not names:
        raise DataError("the data has no feature columns besides the label; add features or shorten train.to_drop")
    kinds = [single._infer_feature(sample[name], name, cfg) for name in names]
    categorical = [f.name for f in kinds if f.kind == "categorical"]
    train_frame, test_frame = frame.random_split([1 - cfg.test_size, cfg.test_size], random_state=cfg.seed)
    train_share = min(1.0, SAMPLE_ROWS / max(rows * (1 - cfg.test_size), 1))
    counts, label_counts, missing_labels, test, train_sample = dask.compute(
        {name: frame[name].value_counts() for name in categorical},
        frame[cfg.labels_column].value_counts(), frame[cfg.labels_column].isna().sum(),
        test_frame, train_frame.sample(frac=train_share, random_state=cfg.seed),
    )
    if missing_labels:
        raise DataError(f"train.labels_column: {int(missing_labels)} row(s) have no value in {cfg.labels_column!r}; fill or remove them")
    features = tuple(_with_all_categories(f, counts.get(f.name), cfg) for f in kinds)
    label_values, classes = _labels(label_counts, cfg)
    spec = tuple((f.name, f.kind, f.dtype) for f in features)
    cleaner = by_value(partial(clean, features=spec, label=cfg.labels_column, label_values=label_values))
    X_test, y_test = cleaner(test)
    X_train, y_train = cleaner(train_sample)
    if len(X_test) == 0 or rows - len(X_test) < 2:
        raise DataError(f"{rows} rows are too few to hold out test_size={cfg.test_size}; add rows or change train.test_size")
    schema = FeatureSchema(
        features=tuple(replace(f, nullable=True) for f in features), task=cfg.task, label=cfg.labels_column,
        classes=classes, framework=cfg.framework or "", model=cfg.model or "", dropped=tuple(cfg.to_drop),
    )
    dataset = ClusterDataset(pd.concat([X_train, X_test]), pd.concat([y_train, y_test]), schema, rows=rows)
    parts = ClusterSplit(X_train, X_test, y_train, y_test, rows - len(X_test), train_frame, cleaner)
    return dataset, parts, {name: counts[name] for name in categorical}


def _with_all_categories(feature: Feature, counts: pd.Series | None, cfg: TrainConfig) -> Feature:
    """A categorical feature inferred from the sample, with the categories of the whole frame."""
    if feature.kind != "categorical" or counts is None:
        return feature
    values = counts.index
    if feature.dtype == "string":
        return replace(feature, categories=tuple(sorted({str(v) for v in values})))
    if feature.dtype == "boolean":
        return feature
    numbers = sorted({float(v) for v in values})
    integral = all(v.is_integer() for v in numbers)
    undeclared = feature.name not in (cfg.categorical or [])
    if undeclared and integral and len(numbers) > single.MAX_INTEGER_CATEGORIES:
        return Feature(feature.name, "numeric", "integer")  # the sample saw few values; the frame has many
    return replace(feature, categories=tuple(int(v) if integral else v for v in numbers))


def _labels(counts: pd.Series, cfg: TrainConfig) -> tuple[dict | None, tuple[str, ...] | None]:
    """(raw label value → the model's class, the classes); (None, None) for regression. The checks and
    names are tand.training.data's, applied to the label's distinct values."""
    values = pd.Series(list(counts.index))
    if cfg.task == "regression":
        single._encode_labels(values, cfg)  # numbers only, finite
        return None, None
    encoded, classes = single._encode_labels(values, cfg)
    if len(set(encoded)) < 2:
        raise DataError(
            f"train.labels_column: {cfg.labels_column!r} holds a single class ({encoded.iloc[0]!r}); classification needs at least two"
        )
    return dict(zip(values, encoded)), classes
