"""A first load reads the compiled model file training logged with the version: no MLflow, no scikit-learn."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.store.loading import load_from_registry
from app.main import create_app
from tand.tracking.compiled_files import read_compiled
from tand.tracking.lookup import lookup_alias
from app_support import REPO, auth, copy_store, settings
from tand.compiled.model import MODEL_FILE


def _storage_folder(db: Path, name: str, version: int) -> Path:
    with sqlite3.connect(db) as connection:
        (location,) = connection.execute(
            "SELECT storage_location FROM model_versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
    return Path(location.removeprefix("file://"))


def test_training_logs_the_compiled_model_with_the_version(trained_model):
    project = trained_model.project
    folder = _storage_folder(project.path / "database.db", trained_model.model_name, trained_model.version)
    assert (folder / MODEL_FILE).is_file() and (folder / "MLmodel").is_file()
    target = lookup_alias(project.tracking_uri, trained_model.model_name, "production")
    meta, preprocessor, mlp = read_compiled(project.tracking_uri, trained_model.model_name, target)
    assert "test_accuracy" in meta["metrics"] and meta["example"] == trained_model.request
    # Its answers are the pickled pipeline's, loaded through MLflow.
    through_mlflow = load_from_registry(project.tracking_uri, trained_model.model_name, trained_model.version).predictor
    rows = [trained_model.request, {**trained_model.request, **{k: 0.0 for k in list(trained_model.request)[:5]}}]
    X = preprocessor.transform(rows)
    assert np.array_equal(X, through_mlflow._preprocessor.transform(rows))
    fresh, pickled = mlp.predict_with_proba(X)[1], through_mlflow._estimator.predict_with_proba(X)[1]
    assert np.allclose(fresh, pickled, rtol=0, atol=1e-12)


def test_a_first_load_imports_neither_mlflow_nor_sklearn(trained_model, tmp_path):
    script = f"""
import json, sys
sys.path[:0] = {[str(REPO), str(REPO / "src")]!r}
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings
settings = Settings(api_token="t", model_name={trained_model.model_name!r}, tracking_uri={trained_model.project.tracking_uri!r}, cache_dir=None)
with TestClient(create_app(settings)) as client:
    answer = client.post("/predict", json={trained_model.request!r}, headers={{"TOKEN": "t"}})
    info = client.get("/model", headers={{"TOKEN": "t"}}).json()
print(json.dumps({{"status": answer.status_code, "loaded_from": info["loaded_from"], "inference": info["inference"],
                  "imported": sorted(m for m in ("mlflow", "sklearn", "pandas", "torch") if m in sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"status": 200, "loaded_from": "registry", "inference": "numpy", "imported": []}


def test_a_version_without_the_compiled_file_loads_through_mlflow(trained_model, tmp_path):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    original = _storage_folder(store.db, trained_model.model_name, trained_model.version)
    # The copy's version points at a copy of its files, without the compiled model (an older version's shape).
    files = tmp_path / "files"
    shutil.copytree(original, files)
    (files / MODEL_FILE).unlink()
    with sqlite3.connect(store.db) as connection:
        connection.execute("UPDATE model_versions SET storage_location = ? WHERE name = ?", (str(files), trained_model.model_name))
    app = create_app(settings(store.uri, trained_model.model_name, None))
    with TestClient(app) as client:
        info = client.get("/model", headers=auth()).json()
        answer = client.post("/predict", json=trained_model.request, headers=auth())
    assert info["loaded_from"] == "mlflow" and info["inference"] == "numpy"
    assert answer.status_code == 200


def test_a_corrupt_compiled_file_falls_back_to_mlflow(trained_model, tmp_path):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    files = tmp_path / "files"
    shutil.copytree(_storage_folder(store.db, trained_model.model_name, trained_model.version), files)
    (files / MODEL_FILE).write_bytes(b"not an npz file")
    with sqlite3.connect(store.db) as connection:
        connection.execute("UPDATE model_versions SET storage_location = ? WHERE name = ?", (str(files), trained_model.model_name))
    app = create_app(settings(store.uri, trained_model.model_name, None))
    with TestClient(app) as client:
        assert client.get("/model", headers=auth()).json()["loaded_from"] == "mlflow"
        assert client.post("/predict", json=trained_model.request, headers=auth()).status_code == 200
