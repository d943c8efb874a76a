"""The evaluation plots, drawn from real fitted pipelines: every figure renders, at a readable size, with no
text cut at the figure's edge or running into another Axes, and says what it shows.

Datasets: a synthetic customer-churn frame (text categories with long names, missing values, a Yes/No label,
an imbalanced class) and scikit-learn's bundled breast-cancer (30 numeric), wine (3 classes) and diabetes
(regression) data. Set TAND_PLOTS_DIR to keep the PNGs for a look.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.text import Text

from tand.config import TrainConfig
from tand.schema import Feature, FeatureSchema
from tand.training import feature_plots, plots
from tand.training.data import load_dataset, split
from tand.training.evaluate import Predictions, predict
from tand.training.examples import export
from tand.training.pipeline import build_pipeline

PAYMENT_METHODS = ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"]


def churn_frame(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A customer-churn table like the one users bring: text categories, a few missing values, Yes/No label."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 73, rows)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], rows, p=[0.55, 0.25, 0.2])
    payment = rng.choice(PAYMENT_METHODS, rows, p=[0.34, 0.23, 0.22, 0.21]).astype(object)
    internet = rng.choice(["DSL", "Fiber optic", "No"], rows, p=[0.35, 0.45, 0.2])
    monthly = np.round(rng.normal(65, 30, rows).clip(18, 120), 2)
    total = np.round(monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.1, rows), 2)
    score = -1.6 + 1.2 * (contract == "Month-to-month") + 0.8 * (payment == "Electronic check") - 0.03 * tenure
    score += 0.6 * (internet == "Fiber optic") + rng.normal(0, 0.8, rows)
    frame = pd.DataFrame(
        {
            "gender": rng.choice(["Female", "Male"], rows),
            "senior_citizen": rng.choice([0, 1], rows, p=[0.84, 0.16]),
            "tenure": tenure,
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "streaming_tv": rng.choice(["Yes", "No", "No internet service"], rows),
            # "$" must not turn into mathtext; a name this long is shortened, never cut at the figure's edge
            "plan": rng.choice(["Basic $20", "Premium $45 a month, with the streaming bundle included"], rows),
            "monthly_charges": monthly,
            "total_charges": total,
            "churn": np.where(score > 0, "Yes", "No"),
        }
    )
    frame.loc[rng.choice(rows, 11, replace=False), "total_charges"] = np.nan
    frame.loc[rng.choice(rows, 25, replace=False), "payment_method"] = np.nan
    return frame


def fitted_predictions(csv: Path, **train) -> tuple[pd.DataFrame, Predictions, FeatureSchema]:
    """Load, split and fit the way `invoke train` does (a quick scikit-learn model); the test split's predictions."""
    cfg = TrainConfig(data_path=str(csv), **train)
    dataset = load_dataset(cfg)
    parts = split(dataset, cfg.test_size, cfg.seed)
    pipeline = build_pipeline(dataset.schema, cfg, progress=False).fit(parts.X_train, parts.y_train)
    return parts.X_test, predict(pipeline, parts.X_test, parts.y_test, dataset.schema), dataset.schema


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plots-data")


def churn(data_dir: Path):
    csv = data_dir / "churn.csv"
    churn_frame().to_csv(csv, index=False)
    return fitted_predictions(csv, labels_column="churn", model="logistic_regression")


def bundled(data_dir: Path, name: str):
    config = export(name, data_dir / f"{name}.csv")["train"]
    model = "logistic_regression" if config["task"] == "classification" else "ridge"
    train = {k: v for k, v in config.items() if k in ("labels_column", "labels", "task")}
    return fitted_predictions(Path(config["data_path"]), model=model, **train)


def churn_by_contract(data_dir: Path):
    """Three text classes, so the categorical plot stacks every class's share."""
    csv = data_dir / "churn_contract.csv"
    churn_frame().to_csv(csv, index=False)
    return fitted_predictions(csv, labels_column="contract", model="logistic_regression")


CASES = {
    "churn": churn,
    "churn_contract": churn_by_contract,
    "breast_cancer": lambda d: bundled(d, "breast_cancer"),
    "wine": lambda d: bundled(d, "wine"),
    "diabetes": lambda d: bundled(d, "diabetes"),
}


@dataclass
class Rendered:
    name: str
    X: pd.DataFrame
    p: Predictions
    schema: FeatureSchema
    figures: dict
    pngs: dict


@pytest.fixture(scope="module")
def rendered(data_dir):
    """name -> that case's figures and PNGs, made once per module (fitting is the slow part)."""
    done: dict[str, Rendered] = {}

    def get(name: str) -> Rendered:
        if name not in done:
            X, p, schema = CASES[name](data_dir)
            figures = plots.evaluation_figures(X, p, schema)
            done[name] = Rendered(name, X, p, schema, figures, {file: _png(fig) for file, fig in figures.items()})
            keep = os.environ.get("TAND_PLOTS_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                for file, png in done[name].pngs.items():
                    (Path(keep) / f"{name}_{file}").write_bytes(png)
        return done[name]

    yield get
    for case in done.values():
        plots.close(case.figures)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


EXPECTED = {
    "churn": {"confusion_matrix.png", "roc_curves.png", "pr_curves.png", "categorical_features.png", "numeric_features.png"},
    "churn_contract": {"confusion_matrix.png", "roc_curves.png", "pr_curves.png", "categorical_features.png", "numeric_features.png"},
    "breast_cancer": {"confusion_matrix.png", "roc_curves.png", "pr_curves.png", "numeric_features.png"},
    "wine": {"confusion_matrix.png", "roc_curves.png", "pr_curves.png", "numeric_features.png"},
    "diabetes": {"predicted_vs_actual.png", "residuals.png", "categorical_features.png", "features_vs_prediction.png"},
}


@pytest.mark.parametrize("name", CASES)
def test_every_figure_renders_as_a_png_of_a_readable_size(rendered, name):
    pngs = rendered(name).pngs
    assert set(pngs) == EXPECTED[name]
    for file, png in pngs.items():
        height, width = plt.imread(io.BytesIO(png)).shape[:2]
        # The MLflow UI shows a PNG at its pixel size: wide enough for its text, no wider than the preview pane.
        assert 400 <= width <= 1100 and 200 <= height <= 4000, (file, width, height)


def _texts(fig, renderer) -> list:
    """Every text drawn in `fig` with its extent: titles, axis and tick labels in view, legends, free texts."""
    found = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and not _tick_out_of_view(t)]
    return [(t, t.get_window_extent(renderer)) for t in found]


def _tick_out_of_view(text) -> bool:
    # Tick objects outside the view limits keep a label but are not drawn.
    for ax in text.figure.axes:
        for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if text in (tick.label1, tick.label2):
                    return not low - 1e-9 <= tick.get_loc() <= high + 1e-9
    return False


def _overlap(a, b, slack: float = 1.0) -> bool:
    return a.x0 + slack < b.x1 and b.x0 + slack < a.x1 and a.y0 + slack < b.y1 and b.y0 + slack < a.y1


def assert_readable(fig, where: str) -> None:
    """No text cut at the figure's edge, none running into another, no subplot's labels in its neighbour's space."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    texts = _texts(fig, renderer)
    assert texts, where
    for text, box in texts:
        at = f"{where}: {text.get_text()!r} at {box}"
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, "cut at the edge: " + at
    for i, (text, box) in enumerate(texts):
        for other, other_box in texts[i + 1:]:
            if text.axes is other.axes or text.axes is None or other.axes is None:
                assert not _overlap(box, other_box), f"{where}: {text.get_text()!r} runs into {other.get_text()!r}"
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for i, ax in enumerate(axes):
        for other in axes[i + 1:]:
            assert not _overlap(ax.get_tightbbox(renderer), other.get_tightbbox(renderer)), f"{where}: subplots overlap"


@pytest.mark.parametrize("name", CASES)
def test_no_text_is_cut_at_the_edge_or_runs_into_another(rendered, name):
    for file, fig in rendered(name).figures.items():
        assert_readable(fig, f"{name}/{file}")


def test_degenerate_columns_render_readably():
    """A feature missing in every test row, a constant one, a class never predicted, a huge-valued feature."""
    rows = 60
    rng = np.random.default_rng(1)
    X = pd.DataFrame({
        "never_measured": np.full(rows, np.nan),
        "constant": np.full(rows, 3.0),
        "revenue_in_cents": rng.uniform(1e8, 9e8, rows),
        "region": np.full(rows, None, dtype=object),
        "tier": rng.choice(["gold", "silver"], rows).astype(object),
    })
    schema = FeatureSchema(
        features=(
            Feature("never_measured", "numeric", "number"), Feature("constant", "numeric", "number"),
            Feature("revenue_in_cents", "numeric", "number"), Feature("region", "categorical", "string", ("north",)),
            Feature("tier", "categorical", "string", ("gold", "silver")),
        ),
        task="classification", label="churned", classes=("stayed", "left"),
    )
    proba = np.column_stack([np.full(rows, 0.8), np.full(rows, 0.2)])
    p = Predictions(rng.choice(["stayed", "left"], rows), np.full(rows, "stayed"), proba, schema.classes)
    figures = plots.evaluation_figures(X, p, schema)
    try:
        assert set(figures) == EXPECTED["churn"]
        for file, fig in figures.items():
            assert_readable(fig, file)
            _png(fig)
        texts = [t.get_text() for t in figures["numeric_features.png"].axes[0].texts]
        assert "never_measured (100% missing)" in texts and "no values in the test split" in texts and "constant" in texts
    finally:
        plots.close(figures)


@pytest.mark.parametrize("name", ["churn", "breast_cancer", "wine", "churn_contract"])
def test_roc_and_pr_axes_name_the_class_their_legend_names(rendered, name):
    p, figures = rendered(name).p, rendered(name).figures
    for file in ("roc_curves.png", "pr_curves.png"):
        ax = figures[file].axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        labels = ax.get_xlabel() + " " + ax.get_ylabel()
        assert "Positive label" not in labels
        if len(p.classes) == 2:
            positive = p.classes[1]
            assert f"positive class: {positive}" in ax.get_xlabel() and f"positive class: {positive}" in ax.get_ylabel()
            assert any(t.startswith(f"{positive} (") for t in legend), legend
        else:
            assert "each class against the rest" in labels
            assert all(any(t.startswith(f"{c} (") for t in legend) for c in p.classes), legend


def test_categorical_plot_shows_the_actual_share_beside_the_predicted_one(rendered):
    case = rendered("churn")
    X, p, schema, fig = case.X, case.p, case.schema, case.figures["categorical_features.png"]
    texts = [t.get_text() for t in fig.findobj(Text)]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["actual share Yes", "predicted share Yes"]
    for method in PAYMENT_METHODS:  # whole, with their row counts
        count = int((X["payment_method"] == method).sum())
        assert f"{method} ({count})" in texts
    assert f"{feature_plots.MISSING} ({int(X['payment_method'].isna().sum())})" in texts
    assert "Basic $20" in " ".join(texts) and any(t.startswith("Premium $45") and t.split(" (")[0].endswith("…") for t in texts)
    # The bars: per category, actual width / predicted width is the actual share / the predicted share.
    widths = {}
    for collection in fig.axes[0].collections:
        if isinstance(collection, PolyCollection):
            color = tuple(collection.get_facecolor()[0][:3])
            widths[color] = [path.vertices[:, 0].max() - path.vertices[:, 0].min() for path in collection.get_paths()]
    actual = widths[to_rgb(feature_plots.ACTUAL_COLOR)]
    predicted = widths[to_rgb(feature_plots.class_colors(p.classes)["Yes"])]
    k = 0
    for column in schema.categorical:
        groups, order = feature_plots.grouped(X[column])
        for category in order:
            rows = groups == category
            share_actual, share_predicted = np.mean(p.y_true[rows] == "Yes"), np.mean(p.y_pred[rows] == "Yes")
            assert actual[k] * share_predicted == pytest.approx(predicted[k] * share_actual, abs=1e-9), (column, category)
            k += 1
    assert k == len(actual) == len(predicted) and k >= 15


def test_multiclass_categorical_plot_stacks_every_class_actual_and_predicted(rendered):
    case = rendered("churn_contract")
    X, p, schema, fig = case.X, case.p, case.schema, case.figures["categorical_features.png"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(p.classes)
    bars = sum(len(c.get_paths()) for c in fig.axes[0].collections if isinstance(c, PolyCollection))
    categories = sum(len(feature_plots.grouped(X[c])[1]) for c in schema.categorical)
    assert bars == 2 * len(p.classes) * categories  # one segment per class, actual and predicted, per category


@pytest.mark.parametrize("name", CASES)
def test_numeric_plot_has_tick_labels_on_both_axes_of_every_feature(rendered, name):
    p, schema, figures = rendered(name).p, rendered(name).schema, rendered(name).figures
    file = "numeric_features.png" if p.classes is not None else "features_vs_prediction.png"
    texts = [t.get_text() for t in figures[file].axes[0].texts]
    titles = [t for t in texts if any(t.startswith(f) for f in schema.numeric)]
    assert len(titles) == len(schema.numeric)
    numbers = [t for t in texts if t.rstrip("%").replace(".", "").replace("-", "").replace("e+", "").isdigit()]
    assert len(numbers) >= 4 * len(schema.numeric)  # at least two ticks on each axis
    if p.classes is not None:
        assert sum(t.endswith("%") for t in texts) >= 2 * len(schema.numeric)


def test_binary_curves_are_drawn_for_the_positive_class_the_metrics_use():
    rng = np.random.default_rng(0)
    y = np.where(rng.random(200) < 0.1, "churn", "stay")  # the minority sorts first
    proba_churn = np.clip(0.3 * (y == "churn") + rng.random(200) * 0.7, 0, 1)
    p = Predictions(y, np.where(proba_churn > 0.5, "churn", "stay"), np.c_[proba_churn, 1 - proba_churn], ("churn", "stay"), "churn")
    for kind in ("roc", "pr"):
        figure = plots._curves_figure(p, kind)
        ax = figure.axes[0]
        assert "positive class: churn" in ax.get_xlabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()][0].startswith("churn")
    legacy = Predictions(y, y, np.c_[proba_churn, 1 - proba_churn], ("churn", "stay"))  # no positive stored: the second
    assert plots.positive_class(legacy) == "stay"
