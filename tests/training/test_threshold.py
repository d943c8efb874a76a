"""Imbalanced binary classes: the decision threshold is chosen on the training split, stored with the model
and applied by the API. A 5 %-positive dataset with a weak signal predicts only the majority at argmax."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from app_support import TOKEN, Store, server_env, start_server, train_version, write_config

from tand.config import parse_config
from tand.schema import FeatureSchema
from tand.training import threshold as decision
from tand.training.data import load_dataset, split
from tand.training.fitting import fit_and_evaluate
from tand.training.pipeline import build_pipeline

MODEL = "threshold-model"


def weak_signal_frame(rows: int, seed: int, intercept: float = -3.7) -> pd.DataFrame:
    """Four numbers and a category; the label 'churn' (about 5 % at the default intercept) depends
    weakly on two of them, so no row reaches probability 0.5. 'churn' sorts first: the old rule (the
    second class is positive) would have scored the majority."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    logit = intercept + 0.9 * X[:, 0] + 0.5 * X[:, 1]
    frame = pd.DataFrame(X, columns=["tenure", "calls", "spend", "age"])
    frame["plan"] = rng.choice(["basic", "plus", "pro"], rows)
    frame["label"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "churn", "stay")
    return frame


def config(data_path, **train) -> dict:
    base = {"data_path": str(data_path), "labels_column": "label", "model": "logistic_regression", "seed": 7}
    return {"train": {**base, **train}, "mlflow": {"model_name": MODEL, "experiment_name": "threshold"}}


@pytest.fixture(scope="module")
def imbalanced_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "churn.csv"
    weak_signal_frame(3000, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def served(store, imbalanced_csv, tmp_path_factory):
    """The 'auto' model, trained by tand.training.run.train into its own store and served by uvicorn."""
    root = tmp_path_factory.mktemp("served")
    version = train_version(store, config(imbalanced_csv), root)
    env = server_env(store.uri, write_config(root / "config.json", MODEL), root / "cache")
    server = start_server(root, env)
    yield server, version
    server.stop()


def _counting_fits(monkeypatch) -> list:
    from sklearn.linear_model import LogisticRegression

    fits, original = [], LogisticRegression.fit

    def fit(self, X, y, *args, **kwargs):
        fits.append(len(X))
        return original(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", fit)
    return fits


def _fit(csv, threshold, **train):
    cfg = parse_config(config(csv, threshold=threshold, **train))
    dataset = load_dataset(cfg.train)
    parts = split(dataset, cfg.train.test_size, cfg.train.seed)
    pipeline = build_pipeline(dataset.schema, cfg.train, progress=False)
    return fit_and_evaluate(pipeline, parts, dataset.schema, None, cfg.train.threshold, cfg.train.cv_folds), parts


@pytest.mark.slow  # a live uvicorn
def test_the_served_model_finds_minority_rows_and_labels_by_the_stored_threshold(served):
    server, version = served
    headers = {"TOKEN": TOKEN}
    info = httpx.get(f"{server.url}/model", headers=headers, timeout=10).json()
    assert info["version"] == version
    assert info["positive_class"] == "churn" == info["feature_schema"]["positive_class"]
    threshold = info["threshold"]
    assert 0 < threshold < 0.5 and info["metrics"]["threshold"] == pytest.approx(threshold)
    assert info["metrics"]["test_recall_churn"] > 0

    held_out = weak_signal_frame(1000, seed=99)
    rows = held_out.drop(columns="label").to_dict(orient="records")
    answer = httpx.post(f"{server.url}/predict", json=rows, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    labels = np.array([p["prediction"] for p in predictions])
    p_churn = np.array([p["probabilities"]["churn"] for p in predictions])
    assert (labels == np.where(p_churn >= threshold, "churn", "stay")).all()
    assert (p_churn < 0.5).mean() > 0.95  # argmax would have answered 'stay' (almost) everywhere
    churned = held_out["label"].to_numpy() == "churn"
    assert (labels[churned] == "churn").mean() > 0  # minority recall


def test_auto_on_imbalanced_data_fits_out_of_fold_clones_without_touching_the_test_split(imbalanced_csv, monkeypatch):
    fits = _counting_fits(monkeypatch)
    evaluation, parts = _fit(imbalanced_csv, "auto")
    train_rows = len(parts.X_train)
    assert fits[0] == train_rows and len(fits) == 4  # the model, then cv_folds (3) out-of-fold clones
    assert all(n < train_rows for n in fits[1:]) and sum(fits[1:]) == 2 * train_rows
    assert evaluation.schema.positive_class == "churn" and evaluation.metrics["threshold"] == evaluation.schema.threshold
    assert evaluation.metrics["test_recall_churn"] > 0 and "threshold" in evaluation.seconds


def test_balanced_data_keeps_the_models_own_decision_with_no_extra_fit(tmp_path, monkeypatch):
    csv = tmp_path / "balanced.csv"
    weak_signal_frame(600, seed=2, intercept=0.0).to_csv(csv, index=False)
    fits = _counting_fits(monkeypatch)
    evaluation, parts = _fit(csv, "auto")
    assert len(fits) == 1
    assert evaluation.schema.threshold is None and evaluation.metrics["threshold"] == 0.5
    assert evaluation.schema.positive_class == decision.positive_class(parts.y_train, ("churn", "stay"))


def test_a_configured_threshold_is_stored_and_served_on_every_path(store, imbalanced_csv, tmp_path, monkeypatch):
    from app.predict.predictor import Predictor
    from app.store.loading import load_from_registry

    fits = _counting_fits(monkeypatch)
    version = train_version(store, config(imbalanced_csv, threshold=0.3), tmp_path)
    assert len(fits) == 1  # a given threshold needs no out-of-fold fit
    loaded = load_from_registry(store.uri, MODEL, version)
    assert (loaded.schema.positive_class, loaded.schema.threshold) == ("churn", 0.3)
    assert loaded.metrics["threshold"] == 0.3
    frame = weak_signal_frame(400, seed=5).drop(columns="label")
    frame["tenure"] = frame["calls"] = np.linspace(-5, 5, len(frame))  # probabilities across 0.3
    rows = loaded.schema.rows(frame.to_dict(orient="records"))
    frame_path = Predictor(loaded.schema, pipeline=_pipeline(store, version))
    for predictor in (loaded.predictor, frame_path):
        answers = predictor.answers(rows)
        labels = [a["prediction"] for a in answers]
        assert labels == ["churn" if a["probabilities"]["churn"] >= 0.3 else "stay" for a in answers]
        assert "churn" in labels and "stay" in labels
    assert loaded.predictor.inference == "numpy-preprocessing+estimator"


def _pipeline(store: Store, version: int):
    import mlflow.sklearn

    location = store.client().get_model_version_download_uri(MODEL, str(version))
    return mlflow.sklearn.load_model(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=store.uri))


def test_the_mlp_chooses_its_threshold_with_the_same_runner_and_answers_by_it_in_numpy(imbalanced_csv):
    from app.store.loading import build_predictor

    calls = []

    def runner(*args):  # what tand.training.workers.TorchProcess is called with, here in-process
        from tand.models.network import fit_network

        calls.append(1)
        return fit_network(*args)

    cfg = parse_config(config(imbalanced_csv, model="mlp", epochs=2, hidden_dim=8, patience=0))
    dataset = load_dataset(cfg.train)
    parts = split(dataset, cfg.train.test_size, cfg.train.seed)
    pipeline = build_pipeline(dataset.schema, cfg.train, progress=False)
    evaluation = fit_and_evaluate(pipeline, parts, dataset.schema, runner, "auto", 3)
    assert len(calls) == 4  # the model and its three out-of-fold clones, all through the runner
    schema = evaluation.schema
    assert schema.positive_class == "churn" and schema.threshold is not None
    example = parts.X_test.iloc[0].to_dict()
    predictor = build_predictor(evaluation.pipeline, schema, example)
    assert predictor.inference == "numpy"
    answers = predictor.answers(schema.rows(parts.X_test.to_dict(orient="records")))
    assert [a["prediction"] for a in answers] == [
        "churn" if a["probabilities"]["churn"] >= schema.threshold else "stay" for a in answers
    ]


def test_positive_class_is_the_minority_and_a_tie_keeps_the_second():
    assert decision.positive_class(["b", "a", "a"], ("a", "b")) == "b"
    assert decision.positive_class(["a", "b", "b"], ("a", "b")) == "a"
    assert decision.positive_class(["a", "b"], ("a", "b")) == "b"


def test_the_chosen_threshold_maximises_f1_over_all_cut_points():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.1
    p = np.clip(0.1 + 0.2 * y + rng.normal(0, 0.1, 300), 0.001, 0.999)
    t = decision.best_f1_threshold(y, p)
    best = max(f1_score(y, p >= cut) for cut in np.unique(p))
    assert f1_score(y, p >= t) == pytest.approx(best)


def test_schemas_round_trip_the_threshold_and_old_ones_read_as_argmax():
    schema = FeatureSchema((), "classification", "y", ("a", "b"), positive_class="a", threshold=0.12)
    assert FeatureSchema.from_dict(schema.to_dict()) == schema
    old = schema.to_dict()
    del old["positive_class"], old["threshold"]
    restored = FeatureSchema.from_dict(old)
    assert (restored.positive_class, restored.threshold) == (None, None)
    assert restored.positive_index(("a", "b")) is None


def test_a_forked_fit_worker_sends_the_chosen_threshold_back(imbalanced_csv):
    from tand.training.workers import FitWorker, available

    if not available():
        pytest.skip("no fork on this platform")
    cfg = parse_config(config(imbalanced_csv))
    dataset = load_dataset(cfg.train)
    parts = split(dataset, cfg.train.test_size, cfg.train.seed)
    worker = FitWorker(build_pipeline(dataset.schema, cfg.train, progress=False), parts, dataset.schema, threshold="auto")
    try:
        evaluation = worker.evaluation()
        worker.plots()
    finally:
        worker.stop()
    inline, _ = _fit(imbalanced_csv, "auto")
    assert evaluation.schema.threshold == inline.schema.threshold is not None


@pytest.mark.skipif(__import__("sys").platform != "linux", reason="invoke train's worker processes are forked (Linux)")
def test_the_mlp_on_imbalanced_data_trains_as_invoke_train_does_with_its_out_of_fold_fits(imbalanced_csv, tmp_path):
    """The network trains in the PyTorch process; the threshold's out-of-fold fits go to it too (it once
    answered only the first, and invoke train failed on every imbalanced label with the MLP)."""
    import os

    from tand.training.run import train

    store = Store(tmp_path / "store")
    store.path.mkdir()
    cfg = parse_config(config(imbalanced_csv, model="mlp", epochs=2, hidden_dim=8, patience=0))
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store.uri
    try:
        result = train(cfg, project_dir=tmp_path, progress=False, processes=True)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if saved is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", saved)
    assert "worker_threshold" in result.timings  # the out-of-fold fits ran, in the worker, through the PyTorch process
    assert result.version == 1 and "threshold" in result.metrics  # registered, with the threshold it chose
