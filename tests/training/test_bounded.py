"""Work beside the fit is bounded: train-split metrics and per-feature plots on a seeded sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tand.training import fitting, plots
from tand.training.evaluate import Predictions


def test_bounded_sample_is_seeded_and_keeps_small_data_whole():
    X = pd.DataFrame({"a": np.arange(1000)}, index=np.arange(1000) * 3)
    y = pd.Series(np.arange(1000) % 2, index=X.index)
    few_X, few_y = fitting.bounded_sample(X, y, rows=100)
    again, _ = fitting.bounded_sample(X, y, rows=100)
    assert len(few_X) == 100 and few_X.index.equals(again.index) and few_X.index.equals(few_y.index)
    assert few_X.index.is_monotonic_increasing  # the rows keep their order
    whole_X, _ = fitting.bounded_sample(X, y, rows=5000)
    assert whole_X is X


def test_plot_sample_keeps_predictions_aligned_with_rows():
    X = pd.DataFrame({"a": np.arange(300.0)})
    truth = np.where(np.arange(300) % 3 == 0, "yes", "no")
    proba = np.column_stack([np.arange(300) / 300, 1 - np.arange(300) / 300])
    p = Predictions(truth, truth.copy(), proba, ("yes", "no"))
    few_X, few = plots.sample(X, p, rows=50)
    assert len(few_X) == len(few.y_true) == len(few.proba) == 50
    positions = few_X["a"].to_numpy().astype(int)
    assert (few.y_true == truth[positions]).all() and np.allclose(few.proba, proba[positions])
