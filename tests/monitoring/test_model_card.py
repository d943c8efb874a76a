"""The model card: written by a real training run into a real MLflow store, served by the API, written by the task."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app_support import Store, auth, mixed_dataset, settings, train_version
from conftest import Project, tiny_sklearn_config

from tand.config import parse_config
from tand.errors import ConfigError
from tand.monitoring import bootstrap
from tand.monitoring.model_card import check_slices, read_card
from tand.training.evaluate import Predictions, compute_metrics

INTENDED = "Ranking biopsies for a second look by a pathologist."
LIMITS = "Not validated outside the clinics it was trained on."
CLASSIFIER, REGRESSOR = "card-classifier", "card-regressor"


def _config(data: Path, name: str, **train) -> dict:
    config = tiny_sklearn_config(name, data_path=str(data), **train)
    config["model_card"] = {"intended_use": INTENDED, "limitations": LIMITS, "slice_by": "clinic", "owners": ["ml@example.org"]}
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One store: a tiny classifier sliced by `clinic` (version 1) and a tiny regressor."""
    root = tmp_path_factory.mktemp("card")
    store = Store(root / "store")
    store.path.mkdir()
    data = mixed_dataset(root / "mixed.csv")
    version = train_version(store, _config(data, CLASSIFIER), root / "work")
    regression = _config(data, REGRESSOR, task="regression", labels_column="mean_radius", labels=None, model="ridge")
    train_version(store, regression, root / "work")
    return store, data, version


def _card(store: Store, name: str, fmt: str) -> str:
    run_id = store.client().get_model_version(name, "1").run_id
    text = read_card(store.uri, run_id, fmt)
    assert text is not None
    return text


def test_the_card_names_the_metrics_features_data_and_intended_use(trained):
    store, data, version = trained
    run = store.client().get_run(store.client().get_model_version(CLASSIFIER, str(version)).run_id)
    metrics = run.data.metrics
    for fmt in ("md", "html"):
        card = _card(store, CLASSIFIER, fmt)
        assert f"{CLASSIFIER} · version {version}" in card
        assert INTENDED in card and LIMITS in card and "ml@example.org" in card
        for feature in ("clinic", "grade", "mean_radius", "worst_fractal_dimension"):
            assert feature in card
        assert hashlib.sha256(data.read_bytes()).hexdigest() in card
        for key in ("accuracy", "roc_auc", "log_loss"):
            assert f"{metrics[f'test_{key}']:.4f}" in card
        assert re.search(r"\d\.\d{4} – \d\.\d{4}", card), "each metric has its bootstrap interval"
        for clinic in ("north", "south", "east"):  # the slices
            assert clinic in card
        assert "scikit-learn" in card and "malignant" in card
    page = _card(store, CLASSIFIER, "html")
    assert page.count("data:image/png;base64,") >= 2  # confusion matrix, ROC, importance: embedded
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<link" not in page  # nothing fetched
    assert "../plots/confusion_matrix.png" in _card(store, CLASSIFIER, "md")


def test_the_regression_card_shows_its_errors_and_residuals(trained):
    store, _, _ = trained
    card = _card(store, REGRESSOR, "md")
    run = store.client().get_run(store.client().get_model_version(REGRESSOR, "1").run_id)
    for key in ("rmse", "mae", "r2"):
        assert f"| {key} | {run.data.metrics[f'test_{key}']:.4f} |" in card
    assert "residuals.png" in card and "Predicts the number `mean_radius`" in card
    assert "**`clinic`**" in card  # slices work for regression too


def test_get_model_card_serves_the_served_versions_page_with_the_token(trained, tmp_path):
    store, _, _ = trained
    app = create_app(settings(store.uri, CLASSIFIER, tmp_path / "cache"))
    with TestClient(app) as client:
        answer = client.get("/model/card", headers=auth())
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        assert INTENDED in answer.text and answer.text == _card(store, CLASSIFIER, "html")
        for headers in ({}, auth("wrong")):
            refused = client.get("/model/card", headers=headers)
            assert refused.status_code == 401 and "detail" in refused.json()


def test_a_version_without_a_card_is_a_404(trained, tmp_path, monkeypatch):
    store, _, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)  # MLflow resolves the logged model through it
    client = store.client()
    logged = client.get_model_version(REGRESSOR, "1")
    bare = client.create_run(client.get_run(logged.run_id).info.experiment_id)  # a run that wrote no card
    client.set_terminated(bare.info.run_id)
    client.create_registered_model("no-card")
    version = client.create_model_version("no-card", logged.source, run_id=bare.info.run_id)
    client.set_registered_model_alias("no-card", "production", version.version)
    with TestClient(create_app(settings(store.uri, "no-card", tmp_path / "cache"))) as api:
        answer = api.get("/model/card", headers=auth())
    assert answer.status_code == 404 and answer.json() == {"detail": "version 1 has no model card (trained before cards existed)"}


def test_slice_by_must_name_a_categorical_feature(trained):
    from tand.training.data import load_dataset

    _, data, _ = trained
    cfg = parse_config(_config(data, CLASSIFIER))
    assert cfg.model_card.slice_by == ["clinic"]
    schema = load_dataset(cfg.train).schema
    with pytest.raises(ConfigError, match=r"model_card.slice_by: 'mean_radius' is numeric; name a categorical feature: clinic, grade"):
        check_slices(cfg.model_card.model_copy(update={"slice_by": ["mean_radius"]}), schema)
    with pytest.raises(ConfigError, match=r"'clinik' is not a feature"):
        check_slices(cfg.model_card.model_copy(update={"slice_by": ["clinik"]}), schema)
    with pytest.raises(ConfigError, match="model_card.intended_uses"):
        parse_config({**_config(data, CLASSIFIER), "model_card": {"intended_uses": "typo"}})


def _predictions(kind: str, n: int = 250) -> Predictions:
    rng = np.random.default_rng(3)
    if kind == "regression":
        y = rng.normal(5, 2, n)
        return Predictions(y, y + rng.normal(0, 1, n), None, None)
    classes = ("a", "b") if kind == "binary" else ("a", "b", "c")
    proba = np.round(rng.dirichlet(np.ones(len(classes)), n), 2)  # rounded: tied scores, as real models give
    proba /= proba.sum(axis=1, keepdims=True)
    y = np.array(classes)[rng.integers(0, len(classes), n)]
    return Predictions(y, np.array(classes)[proba.argmax(axis=1)], proba, classes, "a" if kind == "binary" else None)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_weighted_metrics_with_unit_weights_are_the_evaluations_and_intervals_are_seeded(kind):
    p = _predictions(kind)
    expected = compute_metrics(p)
    got = bootstrap.weighted_metrics(p, np.ones((1, len(p.y_true))))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key][0] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    first, again = bootstrap.intervals(p, 200, seed=7), bootstrap.intervals(p, 200, seed=7)
    assert first == again and set(first) == set(expected)
    headline = "accuracy" if kind != "regression" else "rmse"
    low, high = first[headline]
    assert low < expected[headline] < high


def test_a_big_test_split_is_resampled_through_a_sample_scaled_to_its_size(monkeypatch):
    p = _predictions("binary", n=3000)
    full = bootstrap.intervals(p, 200, seed=1)
    monkeypatch.setattr(bootstrap, "MAX_ROWS", 1000)
    scaled = bootstrap.intervals(p, 200, seed=1)
    assert set(scaled) == set(full)
    for key in ("accuracy", "roc_auc", "log_loss", "recall_a"):
        width, scaled_width = full[key][1] - full[key][0], scaled[key][1] - scaled[key][0]
        assert scaled_width == pytest.approx(width, rel=0.25), key


@pytest.mark.slow
def test_invoke_model_card_writes_the_file(trained, tmp_path):
    store, data, version = trained
    project = Project(tmp_path, store.uri)
    project.write_config(_config(data, CLASSIFIER))
    done = project.invoke("model-card", "--output", "card.html")  # the production version's, as HTML
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "card.html").read_text(encoding="utf-8") == _card(store, CLASSIFIER, "html")
    done = project.invoke("model-card", "--version", "9")
    assert done.returncode == 1 and done.stderr.strip().startswith("error: model 'card-classifier' has no version 9")
    assert "Traceback" not in done.stderr
