"""`invoke train` as users run it: bad input ends with one line and registers nothing; real datasets train."""

import json

import pytest
from invoke import Program
from mlflow import MlflowClient

import tasks
from conftest import example_frame, shared_dataset, tiny_config
from test_config import TAND_PYTORCH, tand_sklearn

MODEL = tiny_config()["mlflow"]["model_name"]


def run_task(capsys, *argv):
    """Run an invoke task in-process, as the CLI would: (exit status, stdout, stderr)."""
    try:
        Program(namespace=tasks.ns).run(["invoke", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_csv(project, frame, name="bad.csv"):
    path = project.path / "data" / name
    frame.to_csv(path, index=False)
    return str(path)


def bad_configs(project):
    """(name, config dict or raw text, expected message) for every bad-input case of the issue."""
    data = example_frame()
    cases = []
    config = tiny_config()
    config["train"]["modle"] = "knn"
    cases.append(("unknown key", config, "unknown key 'train.modle' (did you mean 'model'?)"))
    cases.append(("missing data file", tiny_config(data_path="data/missing.csv"), "file 'data/missing.csv' not found"))
    cases.append(("label column", tiny_config(labels_column="diagnosis_"), "column 'diagnosis_' is not in the CSV"))
    cases.append(("labels mismatch", tiny_config(labels=["only_one"]), "holds classes [0, 1] but `labels` names 1"))
    cases.append(
        ("unknown model", tiny_config(framework="sklearn", model="zzz"), "train.model: unknown classification model 'zzz'; known models: ada_boost, catboost"),
    )
    text = data.head(40).astype({"mean_radius": object})
    text.loc[3, "mean_radius"] = "twelve"
    cases.append(
        ("non-numeric", tiny_config(data_path=write_csv(project, text, "text.csv"), numeric=["mean_radius"]), "column 'mean_radius' holds 'twelve', not a number")
    )
    cases.append(("empty dataset", tiny_config(data_path=write_csv(project, data.head(0), "empty.csv")), "has a header but no rows"))
    single = data[data.diagnosis == 1].head(30)
    cases.append(("single class", tiny_config(data_path=write_csv(project, single, "single.csv")), "holds a single class"))
    cases.append(("bad model_args", tiny_config(framework="sklearn", model="knn", model_args={"neighbours": 3}), "KNeighborsClassifier takes no argument 'neighbours'"))
    return cases


def assert_train_fails_with_one_line(project, capsys, name: str, config: dict, message: str) -> None:
    """`invoke train` on `config` exits 1 with exactly one `error: ` line on stderr that holds `message`."""
    path = project.write_config(config, "bad.json")
    code, _, err = run_task(capsys, "train", "--config", str(path), "--quiet")
    assert code == 1, f"{name}: exit {code}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{name}: expected one line on stderr, got {err!r}"
    assert lines[0].startswith("error: ") and message in lines[0], f"{name}: {lines[0]!r}"
    assert "Traceback" not in err


def test_every_bad_input_exits_1_with_one_line_and_registers_nothing(project, capsys):
    for name, config, message in bad_configs(project):
        assert_train_fails_with_one_line(project, capsys, name, config, message)
    assert MlflowClient().search_registered_models() == []


def test_missing_config_file_is_one_line(project, capsys):
    code, _, err = run_task(capsys, "train", "--config", "nope.json")
    assert code == 1 and err.strip() == "error: nope.json: config file not found; pass --config PATH or create config.json"


@pytest.mark.slow
def test_cli_failure_prints_no_traceback(project):
    project.write_config(tiny_config(labels_column="nope"))
    done = project.invoke("train", "--quiet")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: train.labels_column: column 'nope'")
    assert "Traceback" not in done.stderr


def train_cli(project, config, name="config.json"):
    project.write_config(config, name)
    done = project.invoke("train", "--config", name, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def latest_run_metrics(project, model_name):
    client = MlflowClient(tracking_uri=project.tracking_uri)
    version = max(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version))
    return client.get_run(version.run_id).data.metrics, client.list_artifacts(version.run_id, "plots")


@pytest.mark.slow
def test_default_config_then_random_forest(project):
    done = train_cli(project, tiny_config())
    assert f"registered {MODEL} version 1" in done.stdout and "now 'production'" in done.stdout
    request = json.loads((project.path / "request_model.json").read_text())
    assert "diagnosis" not in request and len(request) == 30
    train_cli(project, tiny_config(framework="sklearn", model="random_forest", model_args={"n_estimators": 30}))
    assert project.versions(MODEL) == [1, 2]
    metrics, plots = latest_run_metrics(project, MODEL)
    assert metrics["test_roc_auc"] > 0.95 and len(plots) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "sklearn"])
def test_heart_tand_config_reaches_roc_auc_085(project, framework):
    config = json.loads(json.dumps(TAND_PYTORCH)) if framework == "pytorch" else tand_sklearn()
    config["train"]["data_path"] = str(shared_dataset("heart.csv"))
    train_cli(project, config)
    name = config["mlflow"]["model_name"]
    metrics, plots = latest_run_metrics(project, name)
    assert metrics["test_roc_auc"] >= 0.85, metrics["test_roc_auc"]
    assert "test_recall_heart_disease" in metrics
    names = {p.path for p in plots}
    assert "plots/categorical_features.png" in names and "plots/numeric_features.png" in names
    request = json.loads((project.path / "request_model.json").read_text())
    assert "target" not in request and "age" in request


@pytest.mark.slow
def test_wine_quality_regression(project):
    config = {
        "train": {
            "data_path": str(shared_dataset("winequality-red.csv")),
            "labels_column": "quality",
            "task": "regression",
            "epochs": 15,
            "hidden_dim": [64, 32],
        },
        "mlflow": {"model_name": "wine-quality", "experiment_name": "wine"},
    }
    train_cli(project, config)
    metrics, plots = latest_run_metrics(project, "wine-quality")
    assert {"test_mae", "test_rmse", "test_r2", "test_mape"} <= set(metrics)
    assert metrics["test_r2"] > 0.2
    assert {"plots/predicted_vs_actual.png", "plots/residuals.png"} <= {p.path for p in plots}
    request = json.loads((project.path / "request_model.json").read_text())
    assert "fixed acidity" in request and "quality" not in request
