"""`invoke train` on a user's own CSV and config: each kind of bad data or contradictory config ends with one
line naming the column or key and the fix, before any MLflow run starts; CSV dialects that options describe train."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from test_train_cli import assert_train_fails_with_one_line
from conftest import tiny_config

PYTORCH_ONLY = ("epochs", "batch_size", "hidden_dim", "patience")


def sklearn_config(model="logistic_regression", **train) -> dict:
    """The example config for a quick scikit-learn model, without the PyTorch keys (they would only warn)."""
    config = tiny_config(framework="sklearn", model=model, **train)
    for key in PYTORCH_ONLY:
        config["train"].pop(key, None)
    return config


def customers(rows: int = 120) -> pd.DataFrame:
    """A customer table of the kind the issue trained: text label, text categories, numbers with gaps."""
    rng = np.random.default_rng(3)
    tenure = rng.integers(0, 72, rows)
    charges = np.round(rng.uniform(18, 118, rows), 2)
    return pd.DataFrame(
        {
            "tenure": tenure,
            "monthly_charges": charges,
            "total_charges": np.round(tenure * charges, 2),
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], rows),
            "city": rng.choice(["Köln", "Zürich", "Málaga", "Paris"], rows),
            "churn": np.where(tenure < 12, "Yes", "No"),
        }
    )


def bad_cases(data_dir):
    """(name, config, expected part of the one error line) for each case of issue 14, points 4, 5, 6 and 8."""

    def csv(name, frame, **to_csv):
        path = data_dir / name
        frame.to_csv(path, index=False, **to_csv)
        return str(path)

    frame = customers()
    with_inf = frame.astype({"monthly_charges": object})
    with_inf.loc[7, "monthly_charges"] = "inf"
    huge = frame.copy()
    huge.loc[9, "total_charges"] = -1e308
    inf_target = frame.astype({"total_charges": object})
    inf_target.loc[2, "total_charges"] = "-inf"
    duplicated = data_dir / "duplicated.csv"
    frame.to_csv(duplicated, index=False, header=["tenure", "monthly_charges", "total_charges", "contract", "churn", "churn"])
    empty_column = frame.assign(coupon=None)
    marker = frame.astype({"total_charges": object})
    marker.loc[::8, "total_charges"] = "not given"
    label = {"labels_column": "churn", "labels": None}
    return [
        ("inf in a feature", sklearn_config(data_path=csv("inf.csv", with_inf), **label),
         "numeric column 'monthly_charges' holds inf in 1 row(s) (first: line 9 of the CSV); numbers must be finite"),
        ("-1e308 in a feature", sklearn_config(data_path=csv("huge.csv", huge), **label),
         "numeric column 'total_charges' holds -1e+308 in 1 row(s)"),
        ("inf regression target", sklearn_config(data_path=csv("target.csv", inf_target), labels_column="total_charges", labels=None, task="regression", model="ridge"),
         "train.labels_column: the label 'total_charges' holds -inf in 1 row(s)"),
        ("duplicated label column", sklearn_config(data_path=str(duplicated), **label),
         "column 'churn' appears 2 times in the header"),
        ("column with no values", sklearn_config(data_path=csv("empty_column.csv", empty_column), categorical=["coupon"], **label),
         "column 'coupon' has no values (every row is missing), so nothing can be learnt from it; add it to train.to_drop"),
        ("unknown missing marker", sklearn_config(data_path=csv("marker.csv", marker), **label),
         "column 'total_charges' holds 'not given', not a number (15 row(s); values 'not given'); if that means missing, add it to train.csv.missing_values"),
        ("latin-1 file", sklearn_config(data_path=csv("latin1.csv", frame, encoding="latin-1"), **label),
         "error: train.csv.encoding: "),
        ("decimal comma", sklearn_config(data_path=csv("comma.csv", frame, sep=";", decimal=","), **label),
         "train.csv.decimal: column 'monthly_charges' holds"),
        ("wrong separator", sklearn_config(data_path=csv("semicolon.csv", frame, sep=";"), csv={"separator": ","}, **label),
         "train.csv.separator: the header of"),
        ("string for a number", tiny_config(epochs="50"), 'train.epochs: Input should be a valid integer, got "50"; write 50 without quotes'),
        ("model with framework pytorch", tiny_config(model="hist_gradient_boosting"),
         "`model` 'hist_gradient_boosting' is a scikit-learn model but `framework` is 'pytorch'"),
    ]


def test_bad_data_and_contradictory_config_are_one_line_before_any_run(project, capsys):
    cases = bad_cases(project.path / "data")
    for name, config, message in cases:
        assert_train_fails_with_one_line(project, capsys, name, config, message)
    client = MlflowClient()
    assert client.search_registered_models() == []
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    assert not experiment_ids or client.search_runs(experiment_ids) == []  # no run was even started


@pytest.mark.slow
def test_a_european_customer_csv_trains_with_csv_options_and_names_ignored_keys(project):
    """latin-1, ';' (detected), decimal commas, 14 % "n/a?" in a numeric column, and PyTorch keys left over
    beside a scikit-learn model: trains, warns once about the keys, and keeps the column numeric."""
    frame = customers()
    frame["total_charges"] = frame["total_charges"].map(lambda v: f"{v:.2f}".replace(".", ","))
    frame.loc[::7, "total_charges"] = "n/a?"
    path = project.path / "data" / "customers.csv"
    frame.to_csv(path, index=False, sep=";", decimal=",", encoding="latin-1")
    config = tiny_config(
        data_path=str(path), labels_column="churn", labels=None, framework="sklearn", model="logistic_regression",
        csv={"encoding": "latin-1", "decimal": ","},
    )
    config["mlflow"] = {"model_name": "churn-classifier", "experiment_name": "churn"}
    project.write_config(config, "churn.json")
    done = project.invoke("train", "--config", "churn.json", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: churn.json: ")]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("warning: churn.json: train.epochs, train.batch_size, train.hidden_dim, train.patience: ")
    assert "ignored with framework 'sklearn'" in warnings[0]
    client = MlflowClient(tracking_uri=project.tracking_uri)
    (version,) = client.search_model_versions("name = 'churn-classifier'")
    params = client.get_run(version.run_id).data.params
    assert params["features.numeric"].split(",") == ["tenure", "monthly_charges", "total_charges"]
    assert params["features.categorical"].split(",") == ["contract", "city"]
    said = "features: 3 numeric (tenure, monthly_charges, total_charges); 2 categorical (contract, city)"
    assert said in done.stdout.splitlines()[0], done.stdout  # what was inferred, said before anything else
    assert params["train.csv.encoding"] == "latin-1"
    request = json.loads((project.path / "request_model.json").read_text())
    assert isinstance(request["total_charges"], float) and request["city"] in {"Köln", "Zürich", "Málaga", "Paris"}
