"""`model: auto`: the family the data calls for wins, each candidate is a nested run, the winner is served.

Two synthetic datasets where one family must win: a linear signal (ridge recovers it exactly; trees
approximate it by steps) and an XOR of two thresholds (no linear model separates it; a tree splits it in
two cuts). Small data, a small time budget: every candidate the catalog knows still runs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app_support import auth, settings
from tand.config import parse_config
from tand.errors import DataError
from tand.training import auto
from tand.training.data import load_dataset, split

TREES = {"hist_gradient_boosting", "lightgbm", "xgboost", "catboost", "random_forest"}


def linear_csv(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = X @ np.array([3.0, -2.0, 1.5, 1.0, -0.5, 0.0]) + rng.normal(scale=0.3, size=n)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]).assign(y=y)
    frame.to_csv(path, index=False)
    return path


def xor_label(X: np.ndarray) -> np.ndarray:
    return np.where((X[:, 0] > 0.2) ^ (X[:, 1] > -0.3), "yes", "no")


def xor_csv(path, n=300, seed=0):
    X = np.random.default_rng(seed).uniform(-1, 1, size=(n, 4))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)]).assign(y=xor_label(X))
    frame.to_csv(path, index=False)
    return path


def auto_config(csv, task: str, **train) -> dict:
    return {
        "train": {"data_path": str(csv), "labels_column": "y", "task": task, "model": "auto", "time_budget": 30, **train},
        "mlflow": {"model_name": "auto-model", "experiment_name": "auto-experiment"},
    }


def selection_on(config: dict) -> auto.Selection:
    cfg = parse_config(config)
    dataset = load_dataset(cfg.train)
    parts = split(dataset, cfg.train.test_size, cfg.train.seed)
    return auto.select(cfg.train, dataset.schema, parts.X_train, parts.y_train)


def test_a_linear_signal_picks_the_linear_model(tmp_path):
    selection = selection_on(auto_config(linear_csv(tmp_path / "linear.csv"), "regression"))
    scores = {c.model: c.score.mean for c in selection.candidates if c.status == "done"}
    assert selection.winner_name == "ridge" and selection.metric == "rmse"
    assert selection.winner.framework == "sklearn" and selection.winner.model == "ridge"
    assert set(scores) == set(auto.candidate_names("regression")), "a 30 s budget runs every candidate on 240 rows"
    assert all(scores["ridge"] < scores[tree] for tree in TREES & set(scores))


def test_a_spent_budget_still_finishes_the_first_candidate_and_starts_no_other(tmp_path):
    selection = selection_on(auto_config(xor_csv(tmp_path / "xor.csv"), "classification", time_budget=1e-6))
    first, *rest = selection.candidates
    assert (first.model, first.status, first.score.folds) == ("logistic_regression", "done", 3)
    assert {c.status for c in rest} == {"not started"}
    assert selection.winner_name == "logistic_regression"


def test_an_interaction_picks_a_tree_logs_every_candidate_and_serves_the_winner(project, tmp_path, capfd):
    import mlflow
    from mlflow import MlflowClient

    from tand.training.run import train

    csv = xor_csv(project.path / "data" / "xor.csv")
    # a budget no candidate reaches on this tiny data, however busy the machine: every line is a finished one
    result = train(parse_config(auto_config(csv, "classification", time_budget=600)), project_dir=project.path, progress=True)

    table = result.leaderboard
    winner = table[0]
    assert winner["status"] == "winner" and winner["model"] in TREES and winner["rank"] == 1
    linear = next(row for row in table if row["model"] == "logistic_regression")
    assert linear["cv_mean"] < winner["cv_mean"] - 0.1, "no linear model separates an XOR"
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("auto: ")]
    assert [ln.split()[1] for ln in lines] == auto.candidate_names("classification")  # one line per candidate
    assert all(" ± " in ln and ln.rstrip().endswith(" s") for ln in lines)

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.params["auto.winner"] == run.data.params["train.model"] == winner["model"]
    assert run.data.params["train.framework"] == "sklearn" and run.data.params["auto.metric"] == "roc_auc"
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(c.data.params["model"] for c in children) == sorted(auto.candidate_names("classification"))
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"cv_mean_roc_auc", "cv_std_roc_auc", "cv_mean_accuracy", "fit_seconds"} <= set(child.data.metrics)
    by_model = {c.data.params["model"]: c.data.metrics["cv_mean_roc_auc"] for c in children}
    assert by_model[winner["model"]] == pytest.approx(winner["cv_mean"], abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "auto")}
    assert artifacts == {"auto/leaderboard.csv", "auto/leaderboard.json", "auto/leaderboard.png"}
    saved = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/auto/leaderboard.json"))
    assert saved["candidates"] == table and saved["metric"] == "roc_auc"
    assert mlflow.artifacts.load_dict(f"runs:/{result.run_id}/config.json")["train"]["model"] == "auto"
    assert result.metrics["test_roc_auc"] > 0.9

    # The registered winner answers /predict, and gets the XOR right away from its boundaries.
    points = np.array([[0.8, 0.5, 0.0, 0.0], [0.8, -0.8, 0.0, 0.0], [-0.6, 0.5, 0.0, 0.0], [-0.6, -0.8, 0.0, 0.0]])
    rows = [dict(zip(["x0", "x1", "x2", "x3"], map(float, p))) for p in points]
    app = create_app(settings(project.tracking_uri, result.model_name, tmp_path / "cache"))
    with TestClient(app) as api:
        answer = api.post("/predict", json=rows, headers=auth())
    assert answer.status_code == 200, answer.text
    assert [p["prediction"] for p in answer.json()["predictions"]] == list(xor_label(points))


def test_a_bad_dataset_stops_before_any_run_or_version(project):
    from mlflow import MlflowClient

    from tand.training.run import train

    csv = xor_csv(project.path / "data" / "xor.csv")
    config = auto_config(csv, "classification", labels_column="label")  # not a column of the CSV
    with pytest.raises(DataError, match="labels_column"):
        train(parse_config(config), project_dir=project.path, progress=False)
    if (project.path / "database.db").exists():
        client = MlflowClient()
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
        assert client.search_registered_models() == []


def test_big_data_is_sampled_and_the_slow_families_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "SELECTION_ROWS", 150)  # as if 240 training rows were hundreds of thousands
    monkeypatch.setattr(auto, "LARGE_ROWS", 100)
    selection = selection_on(auto_config(xor_csv(tmp_path / "xor.csv"), "classification"))
    status = {c.model: c.status for c in selection.candidates}
    assert selection.rows == 150 and selection.notes == ["cross-validated on a sample of 150 of 240 training rows"]
    assert status["random_forest"] == status["mlp"] == "skipped"
    assert selection.winner_name in TREES
