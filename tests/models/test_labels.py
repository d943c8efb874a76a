"""Class labels as the classifiers hold them (tand.models.labels): what np.unique(y, return_inverse=True) gives."""

import numpy as np
import pandas as pd
import pytest

from tand.models.labels import class_codes

LABELS = ["No", "Yes", "No", "maybe", "Yes", "No"]


@pytest.mark.parametrize(
    "y",
    [
        pd.Series(LABELS),
        pd.Series(LABELS, dtype="str"),
        pd.Series(LABELS, dtype=object),
        np.array(LABELS, dtype=object),
        np.array(LABELS),  # <U5
        LABELS,
        pd.Series(pd.Categorical(LABELS, categories=["maybe", "Yes", "No"])),  # sorted as text, not by category order
        pd.Series([3, 1, 2, 1, 3]),
        np.array([True, False, True]),
        pd.Series([0.5, np.nan, 0.25, 0.5]),  # a missing label: np.unique's own answer (NaN last)
    ],
    ids=["series", "str", "object-series", "object-array", "unicode-array", "list", "categorical", "int", "bool", "nan"],
)
def test_classes_and_codes_are_np_unique_s(y):
    classes, codes = class_codes(y)
    expected, inverse = np.unique(np.asarray(y), return_inverse=True)
    np.testing.assert_array_equal(classes, expected)
    assert classes.dtype == expected.dtype
    np.testing.assert_array_equal(codes, inverse)
    assert codes.dtype == np.int64
