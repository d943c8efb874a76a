"""Every statement of tand.tracking.sql against a store the installed MLflow created, checked against
MlflowClient's own answers: when MLflow changes its tables, these fail first."""

from __future__ import annotations

import sqlite3

import pytest
from mlflow import MlflowClient

from app_support import copy_store
from tand.tracking import sql


@pytest.fixture
def store(trained_model, tmp_path):
    copied = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    return copied, trained_model.model_name, trained_model.version


def test_the_alias_target_is_mlflows(store):
    copied, name, version = store
    client = MlflowClient(tracking_uri=copied.uri, registry_uri=copied.uri)
    expected = client.get_model_version_by_alias(name, "production")
    rows = sql.query_rows(copied.uri, sql.ALIAS_TARGET, {"name": name, "alias": "production"})
    assert rows == [(int(expected.version), expected.run_id, expected.source, expected.status)]
    assert sql.query_rows(copied.uri, sql.ALIAS_TARGET, {"name": name, "alias": "nowhere"}) == []


def test_the_version_location_and_run_artifacts_are_mlflows(store):
    copied, name, version = store
    client = MlflowClient(tracking_uri=copied.uri, registry_uri=copied.uri)
    mv = client.get_model_version(name, str(version))
    (location,) = sql.query_rows(copied.uri, sql.VERSION_LOCATION, {"name": name, "version": version})[0]
    assert location.removeprefix("file://") == client.get_model_version_download_uri(name, str(version)).removeprefix("file://")
    with sqlite3.connect(copied.db) as connection:
        assert sql.run_artifact_uri(connection, mv.run_id) == client.get_run(mv.run_id).info.artifact_uri
        assert sql.baked_alias_target(connection, name, "production") == (version, mv.run_id, location)
        params = client.get_run(mv.run_id).data.params
        assert sql.run_param(connection, mv.run_id, "train.framework") == params["train.framework"]
        assert sql.run_param(connection, mv.run_id, "no.such.param") is None


def test_every_location_column_exists(store):
    copied, _, _ = store
    with sqlite3.connect(copied.db) as connection:
        for table, column, key in sql.LOCATION_COLUMNS:
            connection.execute(f"SELECT {key}, {column} FROM {table} LIMIT 1").fetchall()  # noqa: S608


def test_relocating_and_trimming_aliases_on_a_copy(store):
    copied, name, version = store
    copied.set_alias(name, "staging", version)
    with sqlite3.connect(copied.db) as connection:
        sql.relocate(connection, lambda location: "moved" if location else None)
        sql.keep_only_alias(connection, name, "production")
        connection.commit()
    client = MlflowClient(tracking_uri=copied.uri, registry_uri=copied.uri)
    assert {k: int(v) for k, v in client.get_registered_model(name).aliases.items()} == {"production": version}
    assert client.get_experiment("0").artifact_location == "moved"


def test_the_relative_experiment_location_is_what_mlflow_reads(store):
    copied, _, _ = store
    client = MlflowClient(tracking_uri=copied.uri)
    experiment_id = client.create_experiment("relative")
    sql.make_experiment_location_relative(copied.uri, experiment_id, "mlruns")
    assert client.get_experiment(experiment_id).artifact_location.endswith(f"mlruns/{experiment_id}")


def test_an_unknown_schema_is_told_apart_from_an_unreachable_store(tmp_path):
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).close()
    with pytest.raises(sql.UnknownSchema):
        sql.query_rows(f"sqlite:///{empty}", sql.ALIAS_TARGET, {"name": "m", "alias": "a"})
    from tand.errors import RegistryError

    with pytest.raises(RegistryError, match="unreachable"):
        sql.query_rows(f"sqlite:///{tmp_path / 'missing.db'}", sql.ALIAS_TARGET, {"name": "m", "alias": "a"})
