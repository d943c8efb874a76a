"""A file's columns judged by the API's rules and turned into the compiled predictor's matrix, column-wise.

`invoke predict` reads a chunk as Arrow arrays (pyarrow's CSV reader gives every cell as text, a missing
marker as null; a Parquet file's columns are typed). Each feature's column is checked against its
app.predict.parser.Rule (the one statement of the rules the request validators are built from): its type
(a CSV cell is read as the JSON value a client would send: a number, a whole number, true/false, a text),
its categories, the ±MAX_MAGNITUDE bound, and a missing value only where the feature is nullable. A row
that fails is only flagged here: the request parser itself then decides it and names the reason
(app/predict/scoring.py, from json_value: a cell read one at a time as the checks here read a column), so
this check may be stricter than the API, never laxer.

The rows that pass become the matrix the compiled preprocessor would build from the API's validated rows
(the same numbers in the same layout: its NumericBlock runs on the stacked columns; a one-hot column
looks each distinct value up as OneHotBlock does), for Predictor.predict_matrix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.predict.parser import MAX_MAGNITUDE, Rule, rule_of
from tand.compiled.model import CompiledPreprocessor, NumericBlock
from tand.schema import FeatureSchema

TRUE_TEXT, FALSE_TEXT = ("true", "True", "TRUE", "1"), ("false", "False", "FALSE", "0")
# A CSV cell that pyarrow's float parser refuses is a number only if it looks like one once trimmed.
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_EXACT = 2.0**53  # beyond it a float64 no longer holds every whole number: the parser decides


@dataclass
class Checked:
    """One chunk's features as typed Arrow arrays (null = missing) and the rows that broke a rule."""

    values: dict[str, pa.Array]
    bad: np.ndarray  # bool per row
    numbers: dict[str, np.ndarray]  # number and integer features as float64, NaN where missing

    def take(self, keep: np.ndarray) -> Checked:
        """The rows at positions `keep`."""
        index = pa.array(keep, type=pa.int64())
        values = {name: array.take(index) for name, array in self.values.items()}
        return Checked(values, self.bad[keep], {name: array[keep] for name, array in self.numbers.items()})


def check_columns(columns: dict[str, pa.Array], schema: FeatureSchema) -> Checked:
    """Every feature's column (`columns` holds one per feature name) judged by its rule."""
    n = len(next(iter(columns.values()))) if columns else 0
    bad = np.zeros(n, dtype=bool)
    values, numbers = {}, {}
    for feature in schema.features:
        array = columns[feature.name]
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        rule = rule_of(feature)
        missing = _mask(array.is_null())
        if pa.types.is_floating(array.type):  # a Parquet NaN is missing, as pandas reads it
            missing |= _mask(pc.fill_null(pc.is_nan(array), False))
        if rule.value == "text":
            values[feature.name], wrong = _text(array, rule, missing)
        elif rule.value == "boolean":
            values[feature.name], wrong = _boolean(array, missing)
        else:
            numbers[feature.name], wrong = _number(array, rule, missing)
            values[feature.name] = _typed(numbers[feature.name], missing | wrong, rule)
        bad |= (wrong & ~missing) | (missing if not rule.nullable else False)
    return Checked(values, bad, numbers)


def _mask(array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _is_text(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def _text(array: pa.Array, rule: Rule, missing: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    if not _is_text(array):  # a typed Parquet column: the API takes only a JSON string
        return pa.nulls(len(array), pa.string()), ~missing
    array = array.cast(pa.string())
    if rule.allowed is None:
        return array, np.zeros(len(array), dtype=bool)
    known = pc.is_in(array, value_set=pa.array(rule.allowed, type=pa.string()))
    return array, ~_mask(pc.fill_null(known, True))


def _boolean(array: pa.Array, missing: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    if pa.types.is_boolean(array.type):
        return array, np.zeros(len(array), dtype=bool)
    if not _is_text(array):
        return pa.nulls(len(array), pa.bool_()), ~missing
    true, false = pc.is_in(array, value_set=pa.array(TRUE_TEXT)), pc.is_in(array, value_set=pa.array(FALSE_TEXT))
    typed = pc.if_else(true, True, pc.if_else(false, False, pa.scalar(None, pa.bool_())))
    return typed, _mask(pc.fill_null(pc.invert(pc.or_(true, false)), False))


def _number(array: pa.Array, rule: Rule, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, NaN where missing; the cells that break the rule)."""
    wrong = np.zeros(len(array), dtype=bool)
    if _is_text(array):
        try:
            numbers = pc.cast(array, pa.float64())
        except pa.ArrowInvalid:  # a cell that is not a number: find which, vectorised
            trimmed = pc.utf8_trim_whitespace(array)
            looks = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER), False)
            wrong = ~_mask(looks) & ~missing
            numbers = pc.cast(pc.if_else(looks, trimmed, pa.scalar(None, pa.string())), pa.float64())
        values = numbers.to_numpy(zero_copy_only=False)  # null → NaN
    elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_decimal(array.type):
        values = pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    else:  # booleans, dates...: the API takes no JSON true or string for a number
        return np.full(len(array), np.nan), ~missing
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        fits = np.isfinite(values)
        if rule.bounded:
            fits &= np.abs(values) <= MAX_MAGNITUDE
        if rule.value == "integer":
            fits &= (values == np.floor(values)) & (np.abs(values) < _EXACT)
        if rule.allowed is not None:
            fits &= np.isin(values, np.array([float(v) for v in rule.allowed], dtype=np.float64))
    wrong |= ~fits & ~missing
    return values, wrong


def _typed(values: np.ndarray, absent: np.ndarray, rule: Rule) -> pa.Array:
    typed = pa.array(values, mask=absent, type=pa.float64())
    # Whole numbers as ints, as the parser gives them (a one-hot lookup and a fitted pipeline see the same).
    return pc.cast(typed, pa.int64(), safe=False) if rule.value == "integer" else typed


def json_value(cell, rule: Rule):
    """A cell as the JSON value a client would send for its feature (for the parser's verdict on a flagged row)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None  # a Parquet NaN: missing, as pandas reads it
    if isinstance(cell, float) and not math.isfinite(cell):
        # JSON has no infinity (msgspec would write null). A number feature: the text, which the parser
        # refuses; a text feature: any number gets the parser's reason (a string is wanted).
        return 0.0 if rule.value == "text" else repr(cell)
    if not isinstance(cell, str):
        return cell if isinstance(cell, (bool, int, float)) else str(cell)
    if rule.value == "text":
        return cell
    if rule.value == "boolean":
        return True if cell in TRUE_TEXT else False if cell in FALSE_TEXT else cell
    text = cell.strip()
    if not re.fullmatch(_NUMBER, text):
        return cell
    number = float(text)
    if not math.isfinite(number):
        return cell  # JSON has no infinity: the parser refuses the text, as it would refuse the number
    return int(number) if rule.value == "integer" and number.is_integer() else number


def python_rows(checked: Checked, schema: FeatureSchema) -> list[tuple]:
    """The rows as the request parser validates them (tuples in feature order, None where missing, whole
    numbers as int): for a predictor without compiled preprocessing."""
    columns = [checked.values[name].to_pylist() for name in schema.names]
    return list(zip(*columns)) if columns else [()] * len(checked.bad)


def matrix(preprocessor: CompiledPreprocessor, checked: Checked) -> np.ndarray:
    """The compiled preprocessor's output for the checked rows, built column by column."""
    n = len(checked.bad)
    parts = []
    for block in preprocessor.blocks:
        if isinstance(block, NumericBlock):
            stacked = np.empty((n, block.width), dtype=np.float64)
            for j, name in enumerate(block.columns):
                number = checked.numbers.get(name)
                stacked[:, j] = number if number is not None else _floats(checked.values[name])
            parts.append(block.transform(stacked, None))  # the compiled transform itself, on the matrix
        else:
            parts.append(_one_hot(block, checked, n))
    return parts[0] if len(parts) == 1 else np.hstack(parts)


def _floats(array: pa.Array) -> np.ndarray:
    # As np.array(rows, dtype=float64) reads the API's rows: None → NaN, True → 1.0.
    return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _one_hot(block, checked: Checked, n: int) -> np.ndarray:
    """OneHotBlock.transform on columns: each distinct value is looked up once, as it looks a value up."""
    out = np.zeros((n, block.width), dtype=np.float64)
    fill = block.fill or (None,) * len(block.columns)
    offset = 0
    for name, categories, default in zip(block.columns, block.categories, fill):
        index = {value: offset + i for i, value in enumerate(categories)}
        offset += len(categories)
        encoded = checked.values[name].dictionary_encode()
        table = np.array([index.get(v, -1) for v in encoded.dictionary.to_pylist()] + [index.get(default, -1)], dtype=np.int64)
        codes = table[pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)]
        rows = np.flatnonzero(codes >= 0)
        out[rows, codes[rows]] = 1.0
    return out
