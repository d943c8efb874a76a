"""What `invoke train` prints: its own lines only by default, phase seconds with --verbose, one line when refused."""

from __future__ import annotations

import pytest
from conftest import example_frame, tiny_config

pytestmark = pytest.mark.slow


def test_training_is_quiet_by_default_and_verbose_on_request(project):
    frame = example_frame()
    # Integer columns are what make MLflow print its six-line schema hint; pickling, its pickle notice.
    frame["mean_radius"] = frame["mean_radius"].round().astype("int64")
    frame["mean_texture"] = frame["mean_texture"].round().astype("int64")
    frame.to_csv(project.path / "data" / "data.csv", index=False)
    config = tiny_config(framework="sklearn", model="logistic_regression")
    config["train"] = {k: v for k, v in config["train"].items() if k not in ("epochs", "batch_size", "hidden_dim", "patience")}
    project.write_config(config)

    quiet = project.invoke("train", "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == "", quiet.stderr
    lines = quiet.stdout.splitlines()
    assert "seconds:" not in quiet.stdout and lines[1].startswith("registered breast-cancer-classifier version 1")
    # First, the inputs as inferred: the integer columns are numbers (train.categorical would make them categories)
    assert lines[0].startswith("features: 30 numeric (mean_radius, mean_texture, ") and "0 categorical" in lines[0], lines[0]

    verbose = project.invoke("train", "--quiet", "--verbose")
    assert verbose.returncode == 0 and verbose.stderr == "", verbose.stderr[-3000:]
    [seconds] = [line for line in verbose.stdout.splitlines() if line.startswith("seconds: ")]
    assert "data " in seconds and "log_model " in seconds and "register " in seconds


def test_other_data_under_the_examples_model_name_is_one_line(project):
    from tand.training.examples import export

    project.write_config(tiny_config(framework="sklearn", model="logistic_regression"))
    assert project.invoke("train", "--quiet").returncode == 0
    wine = export("wine", project.path / "data" / "data.csv")  # the user's data replaces the example's
    wine["train"].update(framework="sklearn", model="logistic_regression")
    wine["mlflow"] = tiny_config()["mlflow"]  # ... but the model name stays the example's
    project.write_config(wine)
    refused = project.invoke("train", "--quiet")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: mlflow.model_name: "), refused.stderr
    assert "set mlflow.model_name in config.json" in refused.stderr
    assert project.versions(tiny_config()["mlflow"]["model_name"]) == [1]
