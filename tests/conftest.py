"""Shared fixtures: temporary projects with their own MLflow store, a trained tiny model, task runners.

Every test that touches MLflow gets a store of its own under tmp_path; nothing writes to the repo.
The template's own suite never reads the project's config.json or data/ (a fork's are the user's):
its example is scikit-learn's bundled breast-cancer data (EXAMPLE_CONFIG, example_csv()).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]

# tests/app/app_support.py (copies of the session store, live servers) serves tests in other folders too.
sys.path.insert(0, str(Path(__file__).with_name("app")))

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no network here; users opt in, not out
os.environ.pop("MLFLOW_TRACKING_URI", None)  # every test names its own store


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM a server started with start_new_session=True (uvicorn workers too), SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


SHARED_ABOUT = {
    "heart.csv": "UCI heart-disease data (a TanD example with a byte-order mark and integer categories)",
    "winequality-red.csv": "red-wine quality data (a TanD regression example)",
}


def shared_dataset(name: str) -> Path:
    """A dataset from the project's shared test data beside the repo, or a clean skip where it is absent
    (a user's fork has none: these tests only re-check the original TanD examples)."""
    path = SHARED_DATASETS / name
    if not path.is_file():
        about = SHARED_ABOUT.get(name, name)
        pytest.skip(f"optional check on the {about}: not shipped with the template, so not run here")
    return path


# The template's example, fixed here so that the suite does not depend on what the user made of config.json.
EXAMPLE_CONFIG = {
    "train": {
        "data_path": "data/data.csv",
        "labels_column": "diagnosis",
        "labels": ["malignant", "benign"],
        "task": "classification",
        "framework": "pytorch",
        "epochs": 50,
        "batch_size": 32,
        "hidden_dim": 256,
        "test_size": 0.2,
        "seed": 42,
    },
    "app": {},
    "mlflow": {"model_name": "breast-cancer-classifier", "experiment_name": "breast-cancer-experiment"},
}


@functools.cache
def example_csv() -> Path:
    """scikit-learn's bundled breast-cancer data as a CSV (label `diagnosis`: 0 malignant, 1 benign), written once."""
    from tand.training.examples import export

    path = Path(tempfile.mkdtemp(prefix="tand-example-")) / "data.csv"
    export("breast_cancer", path)
    return path


def example_frame():
    import pandas as pd

    return pd.read_csv(example_csv())


def tiny_config(**train) -> dict:
    """The example config, with few epochs and overrides for the train section."""
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["train"].update({"epochs": 3, "hidden_dim": 16, "patience": 0, **train})
    return config


def tiny_sklearn_config(model_name: str, **train) -> dict:
    """tiny_config for a scikit-learn model (logistic regression unless `model` names another), without the
    network's settings (epochs, hidden_dim, patience, batch_size), registered as `model_name`."""
    config = tiny_config(framework="sklearn", **{"model": "logistic_regression", **train})
    for key in ("epochs", "hidden_dim", "patience", "batch_size"):
        config["train"].pop(key, None)
    config["mlflow"]["model_name"] = model_name
    return config


@dataclass
class Project:
    """A temporary project folder: its own database.db and mlruns/, the example data, a config."""

    path: Path
    tracking_uri: str

    def write_config(self, config: dict, name: str = "config.json") -> Path:
        target = self.path / name
        target.write_text(json.dumps(config, indent=2))
        return target

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "API_TOKEN", "MODEL_"))}
        env.update(
            MLFLOW_TRACKING_URI=self.tracking_uri,
            MLFLOW_DISABLE_TELEMETRY="true",
            PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        )
        env.update(extra)
        return env

    def invoke(self, *args: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
        """Run `invoke ARGS` as a user would, from the project folder."""
        return subprocess.run(
            [*INVOKE, *args],
            cwd=self.path,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def versions(self, name: str) -> list[int]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def make_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    shutil.copy(example_csv(), root / "data" / "data.csv")
    return Project(root, f"sqlite:///{root / 'database.db'}")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    """A fresh project; the test runs inside it with MLFLOW_TRACKING_URI pointing at its store."""
    proj = make_project(tmp_path / "project")
    monkeypatch.chdir(proj.path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proj.tracking_uri)
    monkeypatch.setenv("MLFLOW_DEFAULT_ARTIFACT_ROOT", "./mlruns/")
    return proj


@dataclass
class TrainedModel:
    project: Project
    model_name: str
    version: int
    request: dict
    config: dict


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> TrainedModel:
    """One tiny PyTorch classifier trained once per session into its own store (artifact paths absolute,
    so it loads from any working directory). Tests must not move its alias; copy its store first (tests/app/app_support.py: copy_store)."""
    from tand.config import parse_config
    from tand.training.run import train

    proj = make_project(tmp_path_factory.mktemp("trained"))
    config = tiny_config(data_path=str(proj.path / "data" / "data.csv"))
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_DEFAULT_ARTIFACT_ROOT")}
    os.environ["MLFLOW_TRACKING_URI"] = proj.tracking_uri
    os.environ["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = str(proj.path / "mlruns")
    cwd = os.getcwd()
    os.chdir(proj.path)
    try:
        result = train(parse_config(config), project_dir=proj.path, progress=False)
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return TrainedModel(proj, result.model_name, result.version, result.request_example, config)


@dataclass
class RegisteredPipeline:
    version: int
    pipeline: object
    schema: object


def load_registered(name: str, alias: str | None = None, version: int | None = None) -> RegisteredPipeline:
    """A registered version's pickled pipeline and feature schema through MLflow's own API (the process's
    tracking URI), to compare the template's answers with."""
    import mlflow.sklearn
    from mlflow import MlflowClient

    from tand.tracking.registry import read_schema

    client = MlflowClient()
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}")
    return RegisteredPipeline(int(mv.version), mlflow.sklearn.load_model(local), read_schema(local))
