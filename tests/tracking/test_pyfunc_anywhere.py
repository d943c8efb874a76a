"""The registered model outside the template: in a clean virtual environment holding only the model's
logged requirements (no tand, no PyTorch, no PYTHONPATH, a working directory outside the repo), MLflow's
own tools load it and answer as the template's pipeline does: `mlflow models predict` and `serve` on
models:/<name>@production, mlflow.pyfunc.load_model on a downloaded model folder, and Spark's
mlflow.pyfunc.spark_udf (where Java is on PATH).

One environment for the session, built from the first model's requirements.txt; the models whose
requirements are the same share it, a boosting model adds its library to it (its requirements then are
exactly what the environment holds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from app_support import Store, free_port, mixed_dataset, train_version, wait_until
from conftest import REPO, example_frame, load_registered, stop_process_group, tiny_config

pytestmark = pytest.mark.slow

# Loads the model the way a notebook would; prints what it answered and where `tand` came from.
LOAD_AND_PREDICT = """
import json, sys
import mlflow.pyfunc, mlflow.sklearn
import pandas as pd
model_dir, rows, out = sys.argv[1:]
X = pd.read_csv(rows)
labels = mlflow.pyfunc.load_model(model_dir).predict(X)
pipeline = mlflow.sklearn.load_model(model_dir)
proba = pipeline.predict_proba(X).tolist() if hasattr(pipeline, "predict_proba") else None
tand = sys.modules.get("tand")  # imported by unpickling only when the pipeline holds a template class
json.dump({"labels": pd.Series(labels).tolist(), "proba": proba, "tand": tand and tand.__file__,
           "torch": "torch" in sys.modules}, open(out, "w"))
"""


@dataclass
class Registered:
    uri: str  # the store's tracking URI
    name: str
    model_dir: Path  # the production version, downloaded
    rows: Path  # feature rows (no label) as a CSV


def _outside_env(venv: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


def _run(venv: Path, args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_outside_env(venv, **env), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _registered(uri: str, name: str, frame: pd.DataFrame, folder: Path) -> Registered:
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@production", dst_path=str(folder / "model")))
        features = load_registered(name, alias="production").schema.names
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if saved is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", saved)
    rows = folder / "rows.csv"
    frame[features].head(25).to_csv(rows, index=False)
    return Registered(uri, name, model_dir, rows)


def _template_answers(model: Registered) -> tuple[list, list | None]:
    """The template's own pipeline (its tand, in this process) on the same CSV rows."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = model.uri
    try:
        pipeline = load_registered(model.name, alias="production").pipeline
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if saved is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", saved)
    X = pd.read_csv(model.rows)
    proba = pipeline.predict_proba(X).tolist() if hasattr(pipeline, "predict_proba") else None
    return pd.Series(pipeline.predict(X)).tolist(), proba


@pytest.fixture(scope="session")
def mlp_model(trained_model, tmp_path_factory) -> Registered:
    """The session's tiny PyTorch MLP (a template class in the pickle), its first version is production."""
    return _registered(trained_model.project.tracking_uri, trained_model.model_name, example_frame(), tmp_path_factory.mktemp("mlp"))


def _train_outside(tmp_path_factory, label: str, **train) -> Registered:
    """A tiny model of `train`'s kind on the example data plus a string and an integer category."""
    root = tmp_path_factory.mktemp(label)
    store = Store(root / "store")
    store.path.mkdir()
    data = mixed_dataset(root / "mixed.csv")
    train_version(store, tiny_config(data_path=str(data), **train), root / "work")
    return _registered(store.uri, tiny_config()["mlflow"]["model_name"], pd.read_csv(data), root / "outside")


@pytest.fixture(scope="session")
def sklearn_model(tmp_path_factory) -> Registered:
    return _train_outside(tmp_path_factory, "sklearn", framework="sklearn", model="logistic_regression")


@pytest.fixture(scope="session")
def lightgbm_model(tmp_path_factory) -> Registered:
    pytest.importorskip("lightgbm")
    return _train_outside(tmp_path_factory, "lightgbm", framework="sklearn", model="lightgbm", model_args={"n_estimators": 20})


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory, mlp_model) -> Path:
    """A virtual environment with the MLP's logged requirements.txt and nothing else (no system site-packages)."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip_install(venv, mlp_model.model_dir / "requirements.txt")
    print(f"\nclean venv: python -m venv + pip install -r requirements.txt took {time.perf_counter() - started:.0f} s")
    return venv


def _pip_install(venv: Path, requirements: Path) -> None:
    installed = _run(venv, [str(venv / "bin" / "pip"), "install", "--quiet", "-r", str(requirements)], requirements.parent, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]


def _check_outside(venv: Path, model: Registered, workdir: Path) -> dict:
    """The CLI's and a notebook's answers equal the template's; returns what the notebook saw."""
    workdir.mkdir(parents=True, exist_ok=True)
    assert REPO not in workdir.parents
    labels, proba = _template_answers(model)

    out = workdir / "predictions.json"
    cli = [str(venv / "bin" / "mlflow"), "models", "predict", "-m", f"models:/{model.name}@production"]
    cli += ["-i", str(model.rows), "-t", "csv", "-o", str(out), "--env-manager", "local"]
    predicted = _run(venv, cli, workdir, MLFLOW_TRACKING_URI=model.uri)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(out.read_text())["predictions"] == labels

    answers = workdir / "python.json"
    loaded = _run(venv, [str(venv / "bin" / "python"), "-c", LOAD_AND_PREDICT, str(model.model_dir), str(model.rows), str(answers)], workdir)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    answer = json.loads(answers.read_text())
    assert answer["labels"] == labels
    # The same NumPy build on both sides; a BLAS may still order a sum differently with other thread counts.
    assert (answer["proba"] is None) == (proba is None)
    if proba is not None:
        np.testing.assert_allclose(answer["proba"], proba, rtol=0, atol=1e-12)
    if answer["tand"] is not None:  # the copy logged with the model
        assert Path(answer["tand"]).is_relative_to(model.model_dir / "code"), answer["tand"]
    assert not answer["torch"]
    return answer


def test_the_environment_has_neither_the_template_nor_pytorch(clean_venv, tmp_path):
    for module in ("tand", "torch"):
        imported = _run(clean_venv, [str(clean_venv / "bin" / "python"), "-c", f"import {module}"], tmp_path)
        assert imported.returncode != 0 and f"No module named '{module}'" in imported.stderr, (module, imported.stderr)


def test_the_mlp_loads_and_answers_outside_the_template(clean_venv, mlp_model, tmp_path):
    answer = _check_outside(clean_venv, mlp_model, tmp_path / "outside")
    assert answer["tand"] is not None, "the MLP is a template class: unpickling imports the logged copy of tand"


def test_a_scikit_learn_model_needs_the_same_requirements_and_answers_too(clean_venv, mlp_model, sklearn_model, tmp_path):
    ours = (sklearn_model.model_dir / "requirements.txt").read_text()
    assert ours == (mlp_model.model_dir / "requirements.txt").read_text()
    _check_outside(clean_venv, sklearn_model, tmp_path / "outside")


def test_mlflow_models_serve_answers_as_the_pipeline_does(clean_venv, mlp_model, tmp_path):
    labels, _ = _template_answers(mlp_model)
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    command = [str(clean_venv / "bin" / "mlflow"), "models", "serve", "-m", f"models:/{mlp_model.name}@production"]
    command += ["-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=_outside_env(clean_venv, MLFLOW_TRACKING_URI=mlp_model.uri),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: server.poll() is not None or httpx.get(f"{base}/ping").status_code == 200, 120, "mlflow models serve")
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        rows = pd.read_csv(mlp_model.rows)
        answer = httpx.post(f"{base}/invocations", json={"dataframe_split": rows.to_dict(orient="split")}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == labels
    finally:
        stop_process_group(server)
        log.close()


def test_a_boosting_model_adds_its_library_and_answers_too(clean_venv, mlp_model, lightgbm_model, tmp_path):
    from importlib.metadata import version

    base = set((mlp_model.model_dir / "requirements.txt").read_text().split())
    ours = set((lightgbm_model.model_dir / "requirements.txt").read_text().split())
    assert ours - base == {f"lightgbm=={version('lightgbm')}"}
    _pip_install(clean_venv, lightgbm_model.model_dir / "requirements.txt")  # the environment now holds exactly these
    _check_outside(clean_venv, lightgbm_model, tmp_path / "outside")


# Spark's own way to score a table with the model: mlflow.pyfunc.spark_udf, in Spark's Python workers (other
# processes than the driver, each loading the model and the logged copy of tand on its own).
PYSPARK = "pyspark==4.3.0"
SPARK_UDF = """
import json, sys
import mlflow.pyfunc
import pandas as pd
from pyspark.sql import SparkSession
model_uri, rows, out = sys.argv[1:]
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
try:
    table = spark.createDataFrame(pd.read_csv(rows))
    predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="string", env_manager="local")
    labels = table.select(predict(*table.columns).alias("label")).toPandas()["label"].tolist()
finally:
    spark.stop()
json.dump(labels, open(out, "w"))
"""


def _java_major() -> int:
    """The major version of the `java` on PATH (0: none)."""
    import re

    if shutil.which("java") is None:
        return 0
    said = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', said.stderr + said.stdout)
    if found is None:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def test_spark_udf_scores_a_table_as_the_pipeline_does(clean_venv, mlp_model, tmp_path):
    """Last in this module: it adds Spark (pyspark, and Java from the machine) to the environment."""
    if _java_major() < 17:
        pytest.skip("spark_udf needs Java 17 or 21 on PATH (Spark 4)")
    installed = _run(clean_venv, [str(clean_venv / "bin" / "pip"), "install", "--quiet", PYSPARK], tmp_path, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    labels, _ = _template_answers(mlp_model)
    out = tmp_path / "spark.json"
    python = str(clean_venv / "bin" / "python")
    command = [python, "-c", SPARK_UDF, f"models:/{mlp_model.name}@production", str(mlp_model.rows), str(out)]
    scored = _run(clean_venv, command, tmp_path, MLFLOW_TRACKING_URI=mlp_model.uri, PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert json.loads(out.read_text()) == [str(label) for label in labels]
