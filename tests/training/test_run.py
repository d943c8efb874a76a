"""Training in-process against a real MLflow store: what a registered version carries."""

import json
import shutil

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.models import Model

from conftest import tiny_config, load_registered
from tand.tracking import registry
from tand.config import parse_config
from tand.errors import ConfigError, RegistryError
from tand.training.run import train


def test_registered_version_carries_metrics_plots_schema_and_example(trained_model):
    client = MlflowClient(tracking_uri=trained_model.project.tracking_uri)
    mv = client.get_model_version_by_alias(trained_model.model_name, "production")
    assert int(mv.version) == trained_model.version
    run = client.get_run(mv.run_id)
    metrics = run.data.metrics
    for name in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "log_loss"):
        assert f"test_{name}" in metrics
    for kind in ("precision", "recall", "f1", "specificity", "npv", "fpr"):
        assert f"test_{kind}_malignant" in metrics and f"test_{kind}_benign" in metrics
    assert "epoch_loss" in metrics, "per-epoch history is logged"
    params = run.data.params
    assert params["train.framework"] == "pytorch" and params["data.rows"] == "569"
    assert "mean_radius" in params["features.numeric"]
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc_curves.png", "plots/pr_curves.png", "plots/numeric_features.png"} <= artifacts


def test_model_artifact_has_signature_input_example_and_schema(trained_model, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model.project.tracking_uri)
    loaded = load_registered(trained_model.model_name, alias="production")
    assert loaded.schema.classes == ("malignant", "benign")
    assert loaded.schema.names == list(trained_model.request)
    local = mlflow.artifacts.download_artifacts(f"models:/{trained_model.model_name}/{loaded.version}")
    meta = Model.load(local)
    assert meta.signature is not None and meta.saved_input_example_info is not None
    assert [c.name for c in meta.signature.inputs.inputs] == loaded.schema.names
    import pandas as pd

    assert loaded.pipeline.predict(pd.DataFrame([trained_model.request]))[0] in ("malignant", "benign")
    request_file = json.loads((trained_model.project.path / "request_model.json").read_text())
    assert request_file == trained_model.request


def test_later_versions_do_not_move_the_alias_and_the_store_is_relocatable(project, tmp_path, monkeypatch):
    cfg = parse_config(tiny_config(framework="sklearn", model="logistic_regression"))
    first = train(cfg, project.path, progress=False)
    second = train(cfg, project.path, progress=False)
    assert (first.version, first.alias_set) == (1, True)
    assert (second.version, second.alias_set) == (2, False)
    assert registry.alias_version(cfg.mlflow.model_name, "production") == 1
    # copy database.db + mlruns/ elsewhere (as the Docker image does) and load from there
    moved = tmp_path / "moved"
    shutil.copytree(project.path, moved)
    shutil.rmtree(project.path)
    monkeypatch.chdir(moved)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{moved / 'database.db'}")
    loaded = load_registered(cfg.mlflow.model_name, alias="production")
    assert loaded.version == 1 and loaded.pipeline is not None


def test_failure_inside_the_run_marks_it_failed_and_registers_nothing(project):
    cfg = parse_config(tiny_config(framework="sklearn", model="random_forest", model_args={"n_estimators": -3}))
    with pytest.raises(ConfigError, match="train.model_args: .*n_estimators"):
        train(cfg, project.path, progress=False)
    client = MlflowClient()
    runs = client.search_runs([mlflow.get_experiment_by_name(cfg.mlflow.experiment_name).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert client.search_registered_models() == []
    assert not (project.path / "request_model.json").exists()


def _wine_under_the_examples_name(project) -> dict:
    """Another dataset (wine: other label, other features) configured under the breast-cancer model's name,
    as a user who replaced data/data.csv but not mlflow.model_name would."""
    from tand.training.examples import export

    config = export("wine", project.path / "data" / "wine.csv")
    config["train"].update(framework="sklearn", model="logistic_regression")
    config["mlflow"] = dict(tiny_config()["mlflow"])
    return config


def test_other_data_under_an_existing_models_name_is_refused_before_any_run(project):
    example = parse_config(tiny_config(framework="sklearn", model="logistic_regression"))
    train(example, project.path, progress=False)
    wine = _wine_under_the_examples_name(project)
    with pytest.raises(RegistryError, match=r"its version 1 predicts 'diagnosis', not 'cultivar'.*set mlflow.model_name in config.json"):
        train(parse_config(wine), project.path, progress=False)
    client = MlflowClient()
    assert [int(v.version) for v in client.search_model_versions(f"name = '{example.mlflow.model_name}'")] == [1]
    experiment = mlflow.get_experiment_by_name(wine["mlflow"]["experiment_name"])
    assert len(client.search_runs([experiment.experiment_id])) == 1, "the refused training started no run"
    wine["mlflow"]["model_name"] = "wine-classifier"
    assert train(parse_config(wine), project.path, progress=False).version == 1


def test_the_same_data_with_a_column_dropped_stays_the_same_model(project):
    train(parse_config(tiny_config(framework="sklearn", model="logistic_regression")), project.path, progress=False)
    fewer = parse_config(tiny_config(framework="sklearn", model="logistic_regression", to_drop=["mean_radius", "mean_area"]))
    assert train(fewer, project.path, progress=False).version == 2
