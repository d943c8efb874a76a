"""The run's global explanation: mean |contribution| per feature on the test split (tand.models.attribution,
a one-hot's columns summed to their feature), as a table (CSV) and a bar plot beside the run's other plots."""

from __future__ import annotations

import io

import numpy as np

from tand.models import attribution

SAMPLE_ROWS = 2000  # attributions of a bounded, seeded sample of the test split
SHOWN = 20


def mean_abs_contributions(pipeline, X_test) -> dict[str, float] | None:
    """Feature → mean |contribution| (summed over classes for multiclass); None: no supported attribution."""
    from tand.training.importance import output_features

    from tand.compiled.model import compile_estimator

    if not hasattr(pipeline, "steps"):
        return None
    model = compile_estimator(pipeline[-1]) or pipeline[-1]  # the MLP: its NumPy forward pass, as served
    if attribution.method(model) is None:
        return None
    if len(X_test) > SAMPLE_ROWS:
        X_test = X_test.sample(SAMPLE_ROWS, random_state=0)
    X = pipeline[:-1].transform(X_test)
    _, contributions = attribution.attribute(model, X)
    owners = output_features(pipeline[0])
    if len(owners) != contributions.shape[1]:
        return None
    per_column = np.abs(contributions).mean(axis=0).sum(axis=1)
    values: dict[str, float] = {}
    for owner, value in zip(owners, per_column):
        values[owner] = values.get(owner, 0.0) + float(value)  # columns of one feature: |sum| <= sum of |.|, summed
    return dict(sorted(values.items(), key=lambda item: -item[1]))


def explanation_files(pipeline, X_test) -> dict[str, bytes]:
    """{"global_explanation.csv", "global_explanation.png"}, or nothing for a model without attribution."""
    values = mean_abs_contributions(pipeline, X_test)
    if not values:
        return {}
    import matplotlib.pyplot as plt

    table = "feature,mean_abs_contribution\n" + "".join(f"{k},{v:.6g}\n" for k, v in values.items())
    shown = list(values.items())[:SHOWN][::-1]
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.5))
    try:
        axis.barh([k for k, _ in shown], [v for _, v in shown], color="#4c72b0")
        axis.set_xlabel("mean |contribution| to the raw output (test split)")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return {"global_explanation.csv": table.encode(), "global_explanation.png": buffer.getvalue()}
