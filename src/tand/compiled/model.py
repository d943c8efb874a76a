"""The fitted pipeline compiled into NumPy arrays: no per-request DataFrame, no scikit-learn call.

The template's preprocessor is a ColumnTransformer of (SimpleImputer → StandardScaler) for
numbers and (SimpleImputer → OneHotEncoder) for categories. Their fitted state is a few
arrays (medians, means, scales, category lists), so a request's rows become the model's
float matrix with a handful of NumPy operations, computed in the order scikit-learn computes
them (the results are bitwise equal; tests prove it against `pipeline.predict_proba`).
The boosting models' preprocessor (numbers passed through, categories as OrdinalEncoder codes) is a
CodeBlock. The PyTorch MLP's weights are NumPy arrays already; a LightGBM, XGBoost or CatBoost model is
its library's own model called directly (tand.compiled.boosters). Anything else is not compiled:
`compile_preprocessor` / `compile_estimator` return None and the caller falls back.

Compiling needs scikit-learn (it reads fitted estimators); running a compiled model and
loading one from its file (`load`) needs only NumPy. Training logs that file with each model
version it can compile (`MODEL_FILE`), so the API's first load needs neither MLflow nor
scikit-learn; the API's local snapshots use the same file format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tand.compiled import boosters
from tand.compiled.boosters import NativeBooster
from tand.models.forward import mlp_forward
from tand.schema import values_getter


@dataclass(frozen=True)
class NumericBlock:
    """Impute (median...) then standardise, as SimpleImputer and StandardScaler do."""

    columns: tuple[str, ...]
    fill: np.ndarray | None
    mean: np.ndarray | None
    scale: np.ndarray | None

    @property
    def width(self) -> int:
        return len(self.columns)

    def max_abs(self, bound: float) -> float:
        """The largest magnitude this block can output for inputs within ±bound."""
        largest = np.full(self.width, float(bound))
        if self.fill is not None:
            largest = np.maximum(largest, np.abs(self.fill))
        if self.mean is not None:
            largest = largest + np.abs(self.mean)
        if self.scale is not None:
            largest = largest / self.scale
        return float(largest.max())

    def transform(self, rows: list, get) -> np.ndarray:
        """The block's output for `rows`; `get(row)` is the tuple of this block's values in a row, or None
        when each row is exactly that (the API's rows of an all-numeric schema: already the matrix)."""
        X = np.array(rows if get is None else list(map(get, rows)), dtype=np.float64).reshape(len(rows), self.width)
        if self.fill is not None:
            missing = np.isnan(X)
            if missing.any():
                X[missing] = np.broadcast_to(self.fill, X.shape)[missing]
        if self.mean is not None:
            X -= self.mean
        if self.scale is not None:
            X /= self.scale
        return X


@dataclass(frozen=True)
class OneHotBlock:
    """Impute a missing value (None) with the fitted most frequent one, as SimpleImputer does, then
    one-hot encode; an unknown value gives all zeros (handle_unknown=ignore)."""

    columns: tuple[str, ...]
    categories: tuple[tuple, ...]
    fill: tuple | None = None  # per column, the imputer's statistics_; None: no imputer before the encoder

    def __post_init__(self) -> None:
        indexes, offset = [], 0
        for values in self.categories:
            indexes.append({value: offset + i for i, value in enumerate(values)})
            offset += len(values)
        object.__setattr__(self, "_indexes", tuple(indexes))

    @property
    def width(self) -> int:
        return sum(len(values) for values in self.categories)

    def max_abs(self, bound: float) -> float:
        return 1.0

    def transform(self, rows: list, get) -> np.ndarray:
        """As NumericBlock.transform: `get(row)` is the tuple of this block's values, None when a row is it."""
        out = np.zeros((len(rows), self.width), dtype=np.float64)
        fill = self.fill or (None,) * len(self.columns)
        for i, values in enumerate(rows if get is None else map(get, rows)):
            for value, index, default in zip(values, self._indexes, fill):
                j = index.get(default if value is None else value)
                if j is not None:
                    out[i, j] = 1.0
        return out


@dataclass(frozen=True)
class CodeBlock:
    """Each category as its position among the fitted ones (float), as OrdinalEncoder does with
    handle_unknown="use_encoded_value", unknown_value=NaN, encoded_missing_value=NaN: missing or unknown → NaN."""

    columns: tuple[str, ...]
    categories: tuple[tuple, ...]  # per column, the encoder's categories_ without the missing one (sorted last)

    def __post_init__(self) -> None:
        indexes = tuple({value: float(i) for i, value in enumerate(values)} for values in self.categories)
        object.__setattr__(self, "_indexes", indexes)

    @property
    def width(self) -> int:
        return len(self.columns)

    def max_abs(self, bound: float) -> float:
        return float(max(len(values) for values in self.categories))

    def transform(self, rows: list, get) -> np.ndarray:
        """As NumericBlock.transform: `get(row)` is the tuple of this block's values, None when a row is it."""
        indexes, nan = self._indexes, math.nan
        values_of = rows if get is None else map(get, rows)
        codes = [[index.get(value, nan) for value, index in zip(values, indexes)] for values in values_of]
        return np.array(codes, dtype=np.float64).reshape(len(rows), self.width)


Block = NumericBlock | OneHotBlock | CodeBlock


@dataclass(frozen=True)
class CompiledPreprocessor:
    blocks: tuple[Block, ...]

    def max_abs(self, bound: float) -> float:
        return max(block.max_abs(bound) for block in self.blocks)

    def transform(self, records: list[dict]) -> np.ndarray:
        """Rows given as dicts keyed by column name → the model's float matrix."""
        return self._transform(records, [values_getter(block.columns) for block in self.blocks])

    def bind(self, names) -> Callable[[list[tuple]], np.ndarray]:
        """The transform of rows given as tuples of values in the order of `names` (the API's validated
        rows: no dict per row, and a block that takes every column in that order takes the rows as they are)."""
        position = {name: i for i, name in enumerate(names)}
        getters = []
        for block in self.blocks:
            where = tuple(position[c] for c in block.columns)
            getters.append(None if where == tuple(range(len(names))) else values_getter(where))
        return lambda rows: self._transform(rows, getters)

    def _transform(self, rows: list, getters: list) -> np.ndarray:
        if len(self.blocks) == 1:
            return self.blocks[0].transform(rows, getters[0])
        return np.hstack([block.transform(rows, get) for block, get in zip(self.blocks, getters)])


@dataclass(frozen=True)
class NumpyMLP:
    """The forward pass of tand.models.mlp (float32, ReLU, softmax), op for op."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    classes: np.ndarray | None = None  # classifier: label names as the estimator sorted them
    y_mean: float = 0.0  # regressor: the target's standardisation
    y_std: float = 1.0

    def _forward(self, X: np.ndarray) -> np.ndarray:
        return mlp_forward(X, self.weights, self.biases)

    def predict_with_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = self._forward(X)
        labels = self.classes[logits.argmax(axis=1)]
        shifted = logits - logits.max(axis=1, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=1, keepdims=True)
        return labels, shifted

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_std + self.y_mean


# -- compiling from fitted scikit-learn objects (the registry load path) ---------------


def _steps(transformer) -> list:
    from sklearn.pipeline import Pipeline

    return [step for _, step in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]


def _numeric_fill(imputer) -> np.ndarray | None:
    missing = imputer.missing_values
    stats = np.asarray(imputer.statistics_, dtype=np.float64)
    # An all-empty column at fit time is dropped by the imputer: the layout would differ.
    if imputer.add_indicator or not (isinstance(missing, float) and np.isnan(missing)) or np.isnan(stats).any():
        return None
    return stats


def _category_fill(imputer) -> tuple | None:
    """The values a categorical imputer puts in for a missing one, when it imputes only NaN/None."""
    missing = imputer.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)) or imputer.strategy not in ("most_frequent", "constant"):
        return None
    return tuple(np.asarray(imputer.statistics_, dtype=object).tolist())


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _compile_codes(encoder, columns: tuple[str, ...]) -> CodeBlock | None:
    """tand.training.pipeline.build_native_preprocessor's OrdinalEncoder; None for any other setting."""
    plain = encoder.handle_unknown == "use_encoded_value" and not encoder._infrequent_enabled
    nan_out = all(isinstance(v, float) and math.isnan(v) for v in (encoder.unknown_value, encoder.encoded_missing_value))
    if not plain or not nan_out or np.dtype(encoder.dtype) != np.float64:
        return None
    categories = []
    for values in encoder.categories_:
        values = values.tolist()
        kept = [v for v in values if not _is_missing(v)]
        if values[: len(kept)] != kept:  # the missing category sorts last; anywhere else the codes would shift
            return None
        categories.append(tuple(kept))
    return CodeBlock(columns, tuple(categories))


def _is_passthrough(transformer) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    if isinstance(transformer, str):
        return transformer == "passthrough"
    return type(transformer) is FunctionTransformer and transformer.func is None and transformer.inverse_func is None


def _compile_block(transformer, columns):
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        return None
    columns = tuple(columns)
    if _is_passthrough(transformer):
        return NumericBlock(columns, None, None, None)
    if type(transformer) is OrdinalEncoder:
        return _compile_codes(transformer, columns)
    steps = _steps(transformer)
    imputer = steps.pop(0) if steps and type(steps[0]) is SimpleImputer else None
    if len(steps) == 1 and type(steps[0]) is OneHotEncoder:
        encoder = steps[0]
        plain = encoder.drop_idx_ is None and not encoder._infrequent_enabled and encoder.handle_unknown == "ignore"
        if not plain or np.dtype(encoder.dtype) != np.float64 or (imputer is not None and imputer.add_indicator):
            return None
        fill = _category_fill(imputer) if imputer is not None else None
        if imputer is not None and fill is None:
            return None
        return OneHotBlock(columns, tuple(tuple(values.tolist()) for values in encoder.categories_), fill)
    fill = _numeric_fill(imputer) if imputer is not None else None
    if imputer is not None and fill is None:
        return None
    if not steps:
        return NumericBlock(columns, fill, None, None)
    if len(steps) == 1 and type(steps[0]) is StandardScaler:
        scaler = steps[0]
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else None
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else None
        return NumericBlock(columns, fill, mean, scale)
    return None


def compile_preprocessor(preprocessor) -> CompiledPreprocessor | None:
    """The ColumnTransformer as NumPy blocks, or None when any part is not one the template builds."""
    from sklearn.compose import ColumnTransformer

    if type(preprocessor) is not ColumnTransformer or preprocessor.sparse_output_:
        return None
    blocks = []
    for name, transformer, columns in preprocessor.transformers_:
        used = preprocessor.output_indices_[name]
        if transformer == "drop" or used.stop == used.start:
            continue
        block = _compile_block(transformer, columns)
        if block is None or block.width != used.stop - used.start:
            return None
        blocks.append(block)
    return CompiledPreprocessor(tuple(blocks)) if blocks else None


def compile_estimator(estimator) -> NumpyMLP | NativeBooster | None:
    from tand.models.boosting import BoostingClassifier, BoostingRegressor
    from tand.models.mlp import MLPClassifier, MLPRegressor

    if type(estimator) in (BoostingClassifier, BoostingRegressor) and hasattr(estimator, "model_"):
        return boosters.from_estimator(estimator)

    if type(estimator) is MLPClassifier:
        return NumpyMLP(tuple(estimator.weights_), tuple(estimator.biases_), classes=np.asarray(estimator.classes_))
    if type(estimator) is MLPRegressor:
        return NumpyMLP(
            tuple(estimator.weights_), tuple(estimator.biases_), y_mean=float(estimator.y_mean_), y_std=float(estimator.y_std_)
        )
    return None


# -- the file: plain arrays + JSON in one .npz, loadable without pickle (so loading cannot run code) --

FILE_FORMAT = 1  # bump when the layout changes: files of another format are then refused (ValueError)
# A boosting model's file (code blocks, the library's own model bytes): format 2, so that code which reads
# only format 1 refuses it (and loads through MLflow) rather than misreading it.
BOOSTER_FORMAT = 2
MODEL_FILE = "compiled_model.npz"


def save(file, preprocessor: CompiledPreprocessor, mlp: NumpyMLP | NativeBooster, meta: dict) -> None:
    """Write the compiled model and `meta` (JSON: schema, metrics, example, identity...) to a path or file."""
    layout, arrays = to_arrays(preprocessor, mlp)
    version = BOOSTER_FORMAT if isinstance(mlp, NativeBooster) else FILE_FORMAT
    np.savez(file, meta=np.array(json.dumps({**meta, "format": version, "compiled": layout})), **arrays)


def load(file) -> tuple[dict, CompiledPreprocessor, NumpyMLP | NativeBooster]:
    """(meta, preprocessor, estimator) from a path or file. Raises ValueError, KeyError or OSError when unreadable
    (ImportError too is a ValueError here: a boosting library this process lacks)."""
    with np.load(file, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {name: data[name] for name in data.files if name != "meta"}
    if meta.get("format") not in (FILE_FORMAT, BOOSTER_FORMAT):
        raise ValueError(f"compiled model format {meta.get('format')!r}, this code reads {FILE_FORMAT} and {BOOSTER_FORMAT}")
    try:
        preprocessor, mlp = from_arrays(meta["compiled"], arrays)
    except ImportError as exc:
        raise ValueError(f"compiled model: {exc}") from None
    return meta, preprocessor, mlp


def to_arrays(preprocessor: CompiledPreprocessor, mlp: NumpyMLP | NativeBooster) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    blocks = []
    for i, block in enumerate(preprocessor.blocks):
        if isinstance(block, NumericBlock):
            for key in ("fill", "mean", "scale"):
                if getattr(block, key) is not None:
                    arrays[f"block{i}_{key}"] = getattr(block, key)
            blocks.append({"kind": "numeric", "columns": list(block.columns)})
        elif isinstance(block, CodeBlock):
            blocks.append({"kind": "codes", "columns": list(block.columns), "categories": [list(c) for c in block.categories]})
        else:
            onehot = {"kind": "onehot", "columns": list(block.columns), "categories": [list(c) for c in block.categories]}
            blocks.append({**onehot, "fill": list(block.fill)} if block.fill is not None else onehot)
    if isinstance(mlp, NativeBooster):
        arrays["booster"] = np.frombuffer(mlp.to_bytes(), dtype=np.uint8)
        return {"blocks": blocks, "booster": mlp.describe()}, arrays
    for i, (weight, bias) in enumerate(zip(mlp.weights, mlp.biases)):
        arrays[f"weight{i}"], arrays[f"bias{i}"] = weight, bias
    classes = mlp.classes.tolist() if mlp.classes is not None else None
    meta = {"blocks": blocks, "layers": len(mlp.weights), "classes": classes, "y_mean": mlp.y_mean, "y_std": mlp.y_std}
    return meta, arrays


def from_arrays(meta: dict, arrays) -> tuple[CompiledPreprocessor, NumpyMLP | NativeBooster]:
    blocks = []
    for i, block in enumerate(meta["blocks"]):
        columns = tuple(block["columns"])
        if block["kind"] == "numeric":
            get = lambda key: arrays[f"block{i}_{key}"] if f"block{i}_{key}" in arrays else None  # noqa: E731
            blocks.append(NumericBlock(columns, get("fill"), get("mean"), get("scale")))
        elif block["kind"] == "codes":
            blocks.append(CodeBlock(columns, tuple(tuple(c) for c in block["categories"])))
        else:
            fill = tuple(block["fill"]) if block.get("fill") is not None else None
            blocks.append(OneHotBlock(columns, tuple(tuple(c) for c in block["categories"]), fill))
    if "booster" in meta:
        return CompiledPreprocessor(tuple(blocks)), boosters.from_bytes(meta["booster"], arrays["booster"].tobytes())
    layers = range(meta["layers"])
    classes = np.asarray(meta["classes"]) if meta["classes"] is not None else None
    mlp = NumpyMLP(
        tuple(arrays[f"weight{i}"] for i in layers),
        tuple(arrays[f"bias{i}"] for i in layers),
        classes=classes,
        y_mean=meta["y_mean"],
        y_std=meta["y_std"],
    )
    return CompiledPreprocessor(tuple(blocks)), mlp
