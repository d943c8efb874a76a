"""app/predict/columns.py against the request parser: never laxer, the same values, the same matrix."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from app.predict.columns import check_columns, json_value, matrix, python_rows
from app.predict.parser import RequestError, RequestParser, rule_of
from tand.compiled.model import CompiledPreprocessor, NumericBlock, OneHotBlock
from tand.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    features=(
        Feature("n", "numeric", "number", nullable=True),
        Feature("i", "numeric", "integer", nullable=True),
        Feature("m", "numeric", "number"),  # not nullable: a missing value is refused
        Feature("c", "categorical", "string", ("07", "12", "a"), nullable=True),
        Feature("k", "categorical", "integer", (1, 2, 3), nullable=True),
        Feature("f", "categorical", "number", (0.5, 1.5), nullable=True),
        Feature("b", "categorical", "boolean", (False, True), nullable=True),
        Feature("s", "categorical", "string", None, nullable=True),  # free text
    ),
    task="classification",
    label="y",
    classes=("no", "yes"),
)
VALID = {"n": "1.5", "i": "2", "m": "0", "c": "a", "k": "1", "f": "0.5", "b": "true", "s": "x"}
TEXT_CELLS = [
    None, "1", "1.0", "1.5", "2.5", " 2", "2 ", "abc", "", "07", "7", "12", "a", "A", "1e15", "1e16", "-1e15", "-1000000000000001",
    "inf", "-inf", "nan", "NaN", "1e400", "+3", ".5", "3.", "0.5", "true", "True", "TRUE", "false", "0", "yes", "1_000", "0x10",
    "3.0000000000000001", "9007199254740993", "1e-320", "-0", "0.1",
]  # fmt: skip
TYPED_CELLS = [
    pa.array([None, 1, 2, 3, 7, -(10**16), 10**15], pa.int64()),
    pa.array([None, 0.5, 1.0, 2.5, float("nan"), float("inf"), 1e300, -0.0], pa.float64()),
    pa.array([None, True, False], pa.bool_()),
    pa.array([None, "a", "1", "07"], pa.string()),
]
PREPROCESSOR = CompiledPreprocessor(
    (
        NumericBlock(("n", "i", "m"), np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0]), np.array([2.0, 3.0, 0.5])),
        OneHotBlock(("c", "k", "f", "b"), (("07", "12", "a"), (1, 2, 3), (0.5, 1.5), (False, True)), ("12", 2, 0.5, True)),
    )
)


def batches():
    """For each feature, a chunk in which it takes every tricky cell and the others are valid."""
    for feature in SCHEMA.features:
        for cells in [pa.array(TEXT_CELLS, pa.string()), *TYPED_CELLS]:
            columns = {name: pa.array([VALID[name]] * len(cells), pa.string()) for name in SCHEMA.names}
            columns[feature.name] = cells
            yield feature.name, columns


@pytest.fixture(scope="module")
def parser():
    return RequestParser(SCHEMA, max_rows=1)


@pytest.mark.parametrize(("name", "columns"), list(batches()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_column_check_flags_exactly_the_rows_the_parser_refuses_and_passes_the_others_values(parser, name, columns):
    """Never laxer (a row the API refuses is never scored); not stricter either on these cells (the scorer
    would still score such a row, from the parser's verdict, but one by one)."""
    import msgspec

    checked = check_columns(columns, SCHEMA)
    rows = python_rows(checked, SCHEMA)
    rules = {f.name: rule_of(f) for f in SCHEMA.features}
    for i in range(len(checked.bad)):
        record = {n: json_value(columns[n][i].as_py(), rules[n]) for n in SCHEMA.names}
        cell = f"{name}={columns[name][i]!r} ({columns[name].type})"
        try:
            parsed, _ = parser.parse(msgspec.json.encode(record))
        except RequestError:
            assert checked.bad[i], f"{cell}: the parser refuses it, the column check passed it"
            continue
        assert not checked.bad[i], f"{cell}: the parser accepts it, the column check flagged it"
        assert rows[i] == parsed[0], cell
        assert [type(v) for v in rows[i]] == [type(v) for v in parsed[0]], cell


def test_the_matrix_is_the_one_the_compiled_preprocessor_builds_from_the_parsers_rows():
    rng = np.random.default_rng(0)
    n = 500
    columns = {
        "n": pa.array([None if r < 0.1 else repr(float(v)) for r, v in zip(rng.random(n), rng.normal(0, 1e3, n))], pa.string()),
        "i": pa.array([None if r < 0.1 else str(v) for r, v in zip(rng.random(n), rng.integers(-50, 50, n))], pa.string()),
        "m": pa.array(rng.normal(size=n)),  # typed, as a Parquet column
        "c": pa.array([None if r < 0.1 else v for r, v in zip(rng.random(n), rng.choice(["07", "12", "a"], n))]),
        "k": pa.array([None if r < 0.1 else int(v) for r, v in zip(rng.random(n), rng.integers(1, 4, n))], pa.int64()),
        "f": pa.array([None if r < 0.1 else v for r, v in zip(rng.random(n), rng.choice(["0.5", "1.5"], n))]),
        "b": pa.array([None if r < 0.1 else bool(v) for r, v in zip(rng.random(n), rng.integers(0, 2, n))]),
        "s": pa.array(rng.choice(["x", "y"], n)),
    }
    checked = check_columns(columns, SCHEMA)
    assert not checked.bad.any()
    rows = python_rows(checked, SCHEMA)
    expected = PREPROCESSOR.bind(SCHEMA.names)(rows)
    got = matrix(PREPROCESSOR, checked)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.array_equal(got, expected, equal_nan=True)
    assert got.tobytes() == expected.tobytes()  # bitwise: the same numbers reach the estimator
