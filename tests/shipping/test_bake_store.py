"""The baked store: a trimmed copy of the embedded MLflow store that loads from wherever it is copied."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

from tand.shipping.bake import MARKER, REQUIREMENTS, BakeError, stage_store


@pytest.fixture(scope="module")
def staged(trained_model, tmp_path_factory):
    """The session model's store staged as `invoke docker-build` stages it (its artifact paths are absolute)."""
    dest = tmp_path_factory.mktemp("context") / "build" / "model-store"
    baked = stage_store(trained_model.project.tracking_uri, trained_model.model_name, "production", trained_model.project.path, dest)
    return baked, dest


def test_only_the_served_version_is_copied(staged, trained_model):
    baked, dest = staged
    assert baked.version == trained_model.version and baked.alias == "production"
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == sorted([*baked.files, MARKER, REQUIREMENTS])
    assert not [ln for ln in (dest / REQUIREMENTS).read_text().splitlines() if not ln.startswith("#")], "an MLP needs no library"
    assert any(f.endswith("/model.pkl") for f in files) and any(f.endswith("/MLmodel") for f in files)
    # The run's plots and other artifacts stay out of the image; its example request comes along for /docs.
    assert not any(f.endswith(".png") for f in files)
    assert [f for f in files if f.endswith("request_model.json")]
    assert f"version {trained_model.version}" in (dest / MARKER).read_text()


def test_artifact_locations_are_relative_and_one_alias_is_left(staged, trained_model):
    _, dest = staged
    with sqlite3.connect(dest / "database.db") as connection:
        locations = [row[0] for row in connection.execute(
            "SELECT storage_location FROM model_versions UNION ALL SELECT artifact_uri FROM runs "
            "UNION ALL SELECT artifact_location FROM logged_models UNION ALL SELECT artifact_location FROM experiments")]
        aliases = connection.execute("SELECT name, alias FROM registered_model_aliases").fetchall()
    assert locations and all(not loc.startswith("/") for loc in locations), locations
    assert aliases == [(trained_model.model_name, "production")]


def test_the_baked_store_loads_from_a_copy_of_the_context(staged, trained_model, tmp_path, monkeypatch):
    """What the image does under /app: another folder, the store and relative artifact paths only."""
    from app.store.loading import load_from_registry
    from tand.tracking.lookup import lookup_alias
    from conftest import load_registered

    _, dest = staged
    elsewhere = tmp_path / "app"
    shutil.copytree(dest, elsewhere)
    monkeypatch.chdir(elsewhere)  # relative artifact paths resolve against the working directory, as in the image
    uri = f"sqlite:///{elsewhere / 'database.db'}"
    target = lookup_alias(uri, trained_model.model_name, "production")
    loaded = load_from_registry(uri, trained_model.model_name, target.version)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model.project.tracking_uri)
    original = load_registered(trained_model.model_name, version=trained_model.version)
    frame = pd.DataFrame([trained_model.request])
    expected = original.pipeline.predict_proba(frame)[0]
    answer = loaded.predictor.answers(loaded.schema.rows([trained_model.request]))[0]
    assert answer["prediction"] == original.pipeline.predict(frame)[0]
    classes = list(original.pipeline.classes_)
    assert np.allclose([answer["probabilities"][c] for c in classes], expected, atol=1e-6)


def test_a_tracking_server_bakes_nothing(tmp_path):
    dest = tmp_path / "build" / "model-store"
    assert stage_store("http://mlflow.example.internal:5000", "m", "production", tmp_path, dest) is None
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, REQUIREMENTS]
    assert "MLFLOW_TRACKING_URI" in (dest / MARKER).read_text()


def test_missing_store_and_missing_alias_are_clear(trained_model, tmp_path):
    with pytest.raises(BakeError, match="no MLflow store here; train a model first"):
        stage_store("sqlite:///database.db", "m", "production", tmp_path, tmp_path / "out")
    with pytest.raises(BakeError, match="has no alias 'staging'.*invoke promote"):
        stage_store(trained_model.project.tracking_uri, trained_model.model_name, "staging", trained_model.project.path, tmp_path / "out")
