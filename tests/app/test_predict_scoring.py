"""app/predict/scoring.py's ChunkScorer beyond the column check: rows the model cannot compute with are refused
with the API's reason and the others still scored; a row the column check flags but the API's parser accepts is
scored from the parser's row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from app.predict.columns import check_columns
from app.predict.parser import RequestParser
from app.predict.predictor import Predictor
from app.predict.scoring import OUT_OF_RANGE, ChunkScorer
from tand.compiled.model import CompiledPreprocessor, NumericBlock, OneHotBlock
from tand.schema import Feature, FeatureSchema

BIG = 2**60  # an integer category beyond float64's exact whole numbers: the column check flags it, the parser accepts it
TINY = 1e-294  # the fitted scale of x: a value within the API's ±1e15 bound overflows float64 once divided by it

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # 1e15 / TINY, on purpose

SCHEMA = FeatureSchema(
    features=(Feature("x", "numeric", "number"), Feature("k", "categorical", "integer", (1, BIG))),
    task="classification",
    label="y",
    classes=("no", "yes"),
)


def predictor() -> Predictor:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=60), rng.integers(0, 2, 60), np.zeros(60)])
    X[:, 2] = 1 - X[:, 1]
    estimator = LogisticRegression().fit(X, np.where(X[:, 0] > 0, "yes", "no"))
    preprocessor = CompiledPreprocessor((NumericBlock(("x",), None, None, np.array([TINY])), OneHotBlock(("k",), ((1, BIG),))))
    return Predictor(SCHEMA, preprocessor=preprocessor, estimator=estimator)


def test_an_overflowing_row_is_refused_with_the_apis_reason_and_a_rescued_row_is_scored_from_the_parsers_row():
    scorer = ChunkScorer(SCHEMA, predictor())
    cells = {"x": ["1e-294", "1e15", "-2e-294", "3e-294"], "k": ["1", "1", str(BIG), "1"]}
    table = pa.table({name: pa.array(values, pa.string()) for name, values in cells.items()})
    # The premise: only the BIG row is flagged by the column check; the overflow shows only in the model's input.
    assert check_columns({name: table.column(name) for name in SCHEMA.names}, SCHEMA).bad.tolist() == [False, False, True, False]
    scored = scorer.score(table)

    assert scored.refused == [(1, "x", OUT_OF_RANGE)]
    assert scored.positions.tolist() == [0, 2, 3]
    rows = [RequestParser(SCHEMA, 1).parse(body)[0][0] for body in (b'{"x": 1e-294, "k": 1}', b'{"x": -2e-294, "k": %d}' % BIG, b'{"x": 3e-294, "k": 1}')]
    labels, proba = scorer.predictor.predict_rows(rows)
    assert list(scored.labels) == list(labels) and np.array_equal(scored.proba, proba)
    assert rows[1][1] == BIG and type(rows[1][1]) is int
