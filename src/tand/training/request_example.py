"""The example /predict body (request_model.json, the example in /docs): typical values, never a real row.

/openapi.json and /docs need no token, and request_model.json is written beside the project, so the
example must not be a customer's record: each feature gets a statistic of its column instead (the
median of a number, rounded to 4 significant digits; the most frequent category, among at most MODE_ROWS
seeded rows), cast to the type the API expects.
"""

from __future__ import annotations

import pandas as pd

from tand.schema import Feature

MODE_ROWS = 50_000  # a category's most frequent value among this many seeded rows (all of them when fewer)


def _typical(column: pd.Series, feature: Feature):
    if feature.kind == "numeric":
        median = column.median()  # of the values present
        median = 0.0 if pd.isna(median) else float(median)
        return int(round(median)) if feature.dtype == "integer" else float(f"{median:.4g}")
    present = column.dropna()
    if len(present) > MODE_ROWS:  # counting a million text cells takes 0.1 s a column
        present = present.sample(MODE_ROWS, random_state=0)
    if len(present):
        value = present.mode().iloc[0]
    else:
        value = (feature.categories or (None,))[0]
    if feature.dtype == "integer":
        return int(value)
    if feature.dtype == "number":
        return float(value)
    if feature.dtype == "boolean":
        return bool(value)
    return str(value)


def example_request(dataset) -> dict:
    """One valid /predict body of typical values for a tand.training.data.Dataset."""
    return {feature.name: _typical(dataset.X[feature.name], feature) for feature in dataset.schema.features}
