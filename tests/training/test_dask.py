"""Training on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1.

The workers run without the template on their path (only the venv's libraries): what runs there travels by
value. `invoke train --dask` trains LightGBM on a CSV split into several files (a glob), registers it, and the
live API answers as the registered pipeline does; XGBoost trains there too, stopping early.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app_support import auth, free_port, mixed_dataset, server_env, start_server, write_config
from conftest import load_registered, make_project, stop_process_group, tiny_config
from tand.schema import Feature, FeatureSchema

DASK = str(Path(sys.executable).with_name("dask"))
MODEL = "dask-model"


def _cluster_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DASK_"))}
    env.pop("PYTHONPATH", None)  # the scheduler and workers import none of the template
    env.update(OMP_NUM_THREADS="1", DASK_DISTRIBUTED__WORKER__DAEMON="false")
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """tcp://127.0.0.1:<port> of a scheduler with two single-threaded workers, each its own process group."""
    from distributed import Client

    root = tmp_path_factory.mktemp("dask-cluster")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = [[DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    commands += [
        [DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
         "--memory-limit", "1GB", "--no-dashboard", "--local-directory", str(root / f"worker-{i}")]
        for i in range(2)
    ]  # fmt: skip
    processes = []
    try:
        for i, command in enumerate(commands):
            with open(root / f"process-{i}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(command, cwd=root, env=_cluster_env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
                )  # fmt: skip
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)  # polls the scheduler, with a deadline
        yield address
    finally:
        for process in reversed(processes):
            stop_process_group(process)


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory):
    """A project whose data is the mixed example (numbers, a text and an integer category) in three CSV files."""
    project = make_project(tmp_path_factory.mktemp("dask-project"))
    frame = pd.read_csv(mixed_dataset(project.path / "mixed.csv"))
    (project.path / "data" / "data.csv").unlink()
    for i in range(3):
        frame.iloc[i::3].to_csv(project.path / "data" / f"part-{i}.csv", index=False)
    config = tiny_config(data_path="data/part-*.csv", framework="sklearn", model="lightgbm", model_args={"n_estimators": 20})
    for key in ("epochs", "batch_size", "hidden_dim", "patience"):
        config["train"].pop(key)
    config["mlflow"]["model_name"] = MODEL
    project.write_config(config)
    return project, frame


@pytest.mark.slow
def test_lightgbm_trains_on_two_workers_registers_and_serves(cluster, dask_project, tmp_path, monkeypatch):
    project, frame = dask_project
    trained = project.invoke("train", "--dask", cluster, timeout=240)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert f"registered {MODEL} version 1" in trained.stdout
    assert "on 2 Dask worker(s)" in trained.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    monkeypatch.chdir(project.path)  # the store's artifact paths are relative to the project
    registered = load_registered(MODEL, alias="production")
    booster = registered.pipeline[-1]
    assert type(booster).__name__ == "BoostingClassifier" and booster.n_rounds_ == 20
    assert set(registered.schema.categorical) == {"clinic", "grade"}

    from mlflow import MlflowClient

    run = MlflowClient().get_run(MlflowClient().get_model_version(MODEL, "1").run_id)
    assert run.data.params["data.rows"] == str(len(frame))
    assert float(run.data.metrics["test_accuracy"]) > 0.85

    rows = frame.drop(columns=["diagnosis"]).sample(5, random_state=1)
    expected = registered.pipeline.predict_proba(rows)
    config = write_config(tmp_path / "config.json", MODEL)
    server = start_server(project.path, server_env(project.tracking_uri, config, tmp_path / "cache"))
    try:
        import httpx

        answer = httpx.post(f"{server.url}/predict", json=rows.to_dict("records"), headers=auth(), timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    classes = [str(c) for c in registered.pipeline.classes_]
    for row, probabilities in zip(answer.json()["predictions"], expected):
        for name, p in zip(classes, probabilities):
            assert math.isclose(row["probabilities"][name], p, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.slow
def test_xgboost_trains_on_the_cluster_with_early_stopping(cluster, project):
    """In this process (tand.training.run.train(dask=...)): xgboost.dask, early stopping on a validation split."""
    from tand.config import parse_config
    from tand.training.run import train

    frame = pd.read_csv(mixed_dataset(project.path / "mixed.csv"))
    for i in range(2):
        frame.iloc[i::2].to_csv(project.path / "data" / f"part-{i}.csv", index=False)
    config = tiny_config(data_path="data/part-*.csv", framework="sklearn", model="xgboost",
                         model_args={"n_estimators": 200, "early_stopping_rounds": 5, "max_depth": 3})  # fmt: skip
    config["mlflow"]["model_name"] = "dask-xgboost"
    result = train(parse_config(config), project_dir=project.path, progress=False, dask=cluster)
    assert result.version == 1 and result.metrics["test_accuracy"] > 0.85
    booster = load_registered("dask-xgboost", version=1).pipeline[-1]
    assert booster.library == "xgboost" and 1 <= booster.n_rounds_ < 200  # stopped early


@pytest.mark.slow  # invoke train as a subprocess
def test_a_model_the_cluster_cannot_train_is_one_line(tmp_path):
    """DASK_SCHEDULER_ADDRESS (Dask's own variable) selects the cluster; the MLP is refused before connecting."""
    project = make_project(tmp_path / "project")
    project.write_config(tiny_config(data_path="data/data.csv"))
    result = project.invoke("train", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: train.model: 'mlp' does not train on a Dask cluster")
    config = tiny_config(data_path="data/data.csv", framework="sklearn", model="lightgbm", model_args={"early_stopping_rounds": 10})
    project.write_config(config)
    result = project.invoke("train", "--dask", "tcp://127.0.0.1:9")
    assert result.returncode == 1 and "early stopping does not work with lightgbm on a Dask cluster" in result.stderr


def test_the_encoder_frame_holds_every_category_and_weights_them_when_grouped():
    from tand.training.distributed import encoder_frame

    schema = FeatureSchema(
        features=(Feature("x", "numeric", "number"), Feature("colour", "categorical", "string", ("blue", "green", "red"))),
        task="classification", label="y", classes=("a", "b"),
    )
    counts = {"colour": pd.Series({"red": 900, "blue": 90, "green": 10})}
    plain = encoder_frame(schema, counts, None)
    assert list(plain.columns) == ["x", "colour"] and sorted(plain["colour"]) == ["blue", "green", "red"]
    grouped = encoder_frame(schema, counts, 2)
    shares = grouped["colour"].value_counts(normalize=True)
    assert shares.index[0] == "red" and np.isclose(shares["red"], 0.9, atol=0.01)


@pytest.mark.slow
def test_a_part_whose_column_type_differs_is_one_line_and_declaring_it_categorical_reads_it(cluster, project):
    from tand.config import parse_config
    from tand.errors import DataError
    from tand.training.run import train

    frame = pd.read_csv(mixed_dataset(project.path / "mixed.csv"))
    frame.iloc[:300].to_csv(project.path / "data" / "part-0.csv", index=False)
    later = frame.iloc[300:].astype({"grade": object})
    later.iloc[0, later.columns.get_loc("grade")] = "high"  # text where the first part has numbers
    later.to_csv(project.path / "data" / "part-1.csv", index=False)
    config = tiny_config(data_path="data/part-*.csv", framework="sklearn", model="lightgbm", model_args={"n_estimators": 5})
    config["mlflow"]["model_name"] = "dask-mixed-parts"
    with pytest.raises(DataError, match=r"column 'grade' holds numbers in the first rows .* but text \('high'\)"):
        train(parse_config(config), project_dir=project.path, progress=False, dask=cluster)
    assert project.versions("dask-mixed-parts") == []
    config["train"]["categorical"] = ["grade"]
    result = train(parse_config(config), project_dir=project.path, progress=False, dask=cluster)
    schema = load_registered("dask-mixed-parts", version=result.version).schema
    assert "high" in next(f for f in schema.features if f.name == "grade").categories
