"""LightGBM, XGBoost and CatBoost as `train.model`: a user's kind of data (text labels, text categories,
missing values), native categories (no one-hot), early stopping, model_args checked against each
library, an importance plot, and answers through the live API equal to the pipeline's own."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app_support import TOKEN, Store, auth, server_env, settings, start_server, train_version, wait_until, write_config
from tand.config import parse_config
from tand.errors import ConfigError
from tand.models import boosting, catalog
from tand.training.data import load_dataset, split
from tand.training.pipeline import build_pipeline

LIBRARIES = ("lightgbm", "xgboost", "catboost")
FEATURES = ["dose", "weight", "ward", "shift"]


def patients(rows: int, seed: int, task: str) -> pd.DataFrame:
    """Two numbers (one with gaps), two text categories (one with gaps); the outcome depends on both kinds."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "dose": rng.normal(size=rows),
            "weight": rng.normal(70, 12, size=rows),
            "ward": rng.choice(["cardio", "neuro", "ortho", None], size=rows, p=[0.3, 0.3, 0.3, 0.1]),
            "shift": rng.choice(["day", "night"], size=rows),
        }
    )
    frame.loc[rng.choice(rows, rows // 10, replace=False), "weight"] = np.nan
    signal = 1.4 * frame["dose"] + 2.0 * (frame["ward"] == "cardio") - 0.8
    if task == "classification":
        frame["outcome"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-signal)), "relapse", "recovered")
    else:
        frame["outcome"] = 10 * signal + rng.normal(scale=1.0, size=rows)
    return frame


def config(csv, model: str, task: str = "classification", name: str = "boosted", **model_args) -> dict:
    train = {"data_path": str(csv), "labels_column": "outcome", "task": task, "model": model, "seed": 3}
    train["model_args"] = {"n_estimators": 40, **model_args} if model in LIBRARIES else model_args
    return {"train": train, "mlflow": {"model_name": name, "experiment_name": "boosting"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patients")
    for task in ("classification", "regression"):
        patients(400, seed=1, task=task).to_csv(folder / f"{task}.csv", index=False)
    return folder


def request_rows(csv, n: int = 12) -> list[dict]:
    frame = pd.read_csv(csv).drop(columns="outcome").head(n)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_each_library_is_known_and_categories_are_native(data):
    for task in ("classification", "regression"):
        assert set(LIBRARIES) <= set(catalog.known_models(task))
    cfg = parse_config(config(data / "classification.csv", "lightgbm")).train
    dataset = load_dataset(cfg)
    pipeline = build_pipeline(dataset.schema, cfg, progress=False)
    encoders = {type(step).__name__ for _, step, _ in pipeline[0].transformers}
    assert "OrdinalEncoder" in encoders and not any("OneHot" in str(t) for _, t, _ in pipeline[0].transformers)
    parts = split(dataset, cfg.test_size, cfg.seed)
    pipeline.fit(parts.X_train, parts.y_train)
    width = pipeline[0].transform(parts.X_test.head(3)).shape[1]
    assert width == len(FEATURES), "one column per feature: codes, not a one-hot matrix"
    assert pipeline[-1].categorical == (2, 3)


@pytest.mark.parametrize("library", LIBRARIES)
def test_model_args_are_checked_against_the_librarys_own_parameters(data, library):
    misspelt = {"lightgbm": "num_leafs", "xgboost": "max_dept", "catboost": "depht"}[library]
    with pytest.raises(ConfigError, match=rf"{library} has no parameter '{misspelt}'.*did you mean"):
        boosting.build_boosting("classification", library, {misspelt: 3}, seed=0)
    reserved = {"lightgbm": "categorical_feature", "xgboost": "enable_categorical", "catboost": "cat_features"}[library]
    with pytest.raises(ConfigError, match="set by the template"):
        boosting.build_boosting("classification", library, {reserved: [0]}, seed=0)
    with pytest.raises(ConfigError, match="boosting rounds"):
        boosting.build_boosting("classification", library, {"n_estimators": 0}, seed=0)
    aliases = {"lightgbm": {"num_leaves": 7, "eta": 0.2}, "xgboost": {"max_depth": 3, "eta": 0.2}, "catboost": {"depth": 3}}
    boosting.build_boosting("classification", library, aliases[library], seed=0)  # documented names and aliases pass


@pytest.mark.parametrize("library", LIBRARIES)
def test_early_stopping_keeps_the_rounds_that_help(library):
    frame = patients(600, seed=2, task="classification")
    X = frame[["dose"]].to_numpy()
    y = frame["outcome"].to_numpy()
    model = boosting.build_boosting("classification", library, {"n_estimators": 2000, "learning_rate": 0.3}, seed=0)
    model.fit(X, y)
    assert 1 <= model.n_rounds_ < 2000, "a one-feature problem stops long before 2,000 rounds"
    assert model.history_ and all(len(point) == 2 and "epoch" in point for point in model.history_)
    assert all(key.startswith("val_") for point in model.history_ for key in point if key != "epoch")
    proba = model.predict_proba(X[:5])
    assert np.allclose(proba.sum(axis=1), 1.0) and list(model.classes_) == ["recovered", "relapse"]


@pytest.fixture(scope="module")
def served(data, tmp_path_factory):
    """One version per library of one model name, in one store, and one live uvicorn serving it."""
    store = Store(tmp_path_factory.mktemp("store"))
    root = tmp_path_factory.mktemp("served")
    versions = {lib: train_version(store, config(data / "classification.csv", lib), root / lib) for lib in LIBRARIES}
    server = start_server(root, server_env(store.uri, write_config(root / "config.json", "boosted"), root / "cache"))
    yield store, versions, server
    server.stop()


@pytest.mark.slow  # a live uvicorn, three trained models
@pytest.mark.parametrize("library", LIBRARIES)
def test_each_library_trains_logs_and_answers_predict_through_the_live_api(served, data, library, monkeypatch):
    from conftest import load_registered

    store, versions, server = served
    version = versions[library]
    store.set_alias("boosted", "production", version)
    reload = httpx.post(f"{server.url}/update-model", headers={"TOKEN": TOKEN}, timeout=60)
    assert reload.status_code == 200, reload.text
    wait_until(lambda: httpx.get(f"{server.url}/model", headers={"TOKEN": TOKEN}).json().get("version") == version, 30, "the swap")

    rows = request_rows(data / "classification.csv")
    answer = httpx.post(f"{server.url}/predict", json=rows, headers={"TOKEN": TOKEN}, timeout=30)
    assert answer.status_code == 200, answer.text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    registered = load_registered("boosted", version=version)
    assert registered.pipeline[-1].library == library
    expected = registered.pipeline.predict_proba(pd.DataFrame(rows, columns=FEATURES))
    classes = list(registered.pipeline.classes_)
    for got, want in zip(answer.json()["predictions"], expected):
        assert got["probabilities"] == pytest.approx(dict(zip(classes, want)), rel=1e-9, abs=1e-12)

    client = store.client()
    run = client.get_run(client.get_model_version("boosted", str(version)).run_id)
    assert run.data.params["train.model"] == library and run.data.metrics["test_roc_auc"] > 0.7
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/feature_importance.png", "plots/roc_curves.png", "plots/categorical_features.png"} <= plots
    assert any(key.startswith("epoch_val_") for key in run.data.metrics), "the validation curve is logged"


@pytest.mark.parametrize("library", LIBRARIES)
def test_each_library_regresses_and_is_served(data, tmp_path, library):
    store = Store(tmp_path / "store")
    store.path.mkdir()
    version = train_version(store, config(data / "regression.csv", library, "regression", name="boosted-r"), tmp_path / "w")
    app = create_app(settings(store.uri, "boosted-r", tmp_path / "cache"))
    rows = request_rows(data / "regression.csv", 5)
    with TestClient(app) as api:
        answer = api.post("/predict", json=rows, headers=auth())
    assert answer.status_code == 200, answer.text
    predictions = [p["prediction"] for p in answer.json()["predictions"]]
    run = store.client().get_run(store.client().get_model_version("boosted-r", str(version)).run_id)
    assert run.data.metrics["test_r2"] > 0.5 and all(isinstance(p, float) for p in predictions)


def test_hist_gradient_boosting_takes_categories_natively(data):
    cfg = parse_config(config(data / "classification.csv", "hist_gradient_boosting", max_iter=20)).train
    dataset = load_dataset(cfg)
    pipeline = build_pipeline(dataset.schema, cfg, progress=False)
    parts = split(dataset, cfg.test_size, cfg.seed)
    pipeline.fit(parts.X_train, parts.y_train)
    assert list(pipeline[-1].is_categorical_) == [False, False, True, True]
    assert pipeline[0].transform(parts.X_test).shape[1] == len(FEATURES)
