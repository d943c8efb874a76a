"""A new embedded store is created from the committed schema dump, and that dump is what MLflow's migrations make."""

from __future__ import annotations

import sqlite3

from tand.tracking import embedded as sqlite_store


def test_the_schema_dump_is_what_the_installed_mlflow_creates(tmp_path):
    committed = sqlite_store.SCHEMA_FILE.read_text(encoding="utf-8")
    assert sqlite_store.same_schema(committed, sqlite_store.schema_from_mlflow(tmp_path)), (
        "src/tand/sqlite_schema.sql is stale: run `invoke store-schema` and commit it"
    )


def test_a_changed_schema_is_noticed():
    committed = sqlite_store.SCHEMA_FILE.read_text(encoding="utf-8")
    assert not sqlite_store.same_schema(committed, committed.replace("dc11669786a5", "0000"))
    assert not sqlite_store.same_schema(committed, committed.replace("deleted_time BIGINT,", "", 1))


def test_a_store_from_the_dump_is_one_mlflow_accepts(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'database.db'}"
    assert sqlite_store.create_if_missing(uri)
    assert not sqlite_store.create_if_missing(uri), "an existing store is never replaced"
    client = MlflowClient(tracking_uri=uri)  # MLflow verifies the schema revision and adds its default experiment
    experiment_id = client.create_experiment("x")
    client.create_registered_model("m")
    assert [e.name for e in client.search_experiments()] == ["x", "Default"] and experiment_id == "1"
    with sqlite3.connect(tmp_path / "database.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM registered_models").fetchone() == (1,)


def test_other_uris_and_missing_folders_are_left_to_mlflow(tmp_path):
    assert not sqlite_store.create_if_missing("postgresql://localhost/db")
    assert not sqlite_store.create_if_missing(f"sqlite:///{tmp_path / 'absent' / 'database.db'}")
    assert not (tmp_path / "absent").exists()


def test_a_dump_for_another_mlflow_version_is_not_used(tmp_path, monkeypatch):
    dump = tmp_path / "sqlite_schema.sql"
    text = sqlite_store.SCHEMA_FILE.read_text(encoding="utf-8")
    header, _, script = text.partition("\n")
    dump.write_text(header.replace("MLflow ", "MLflow 0.0.0-", 1) + "\n" + script, encoding="utf-8")
    monkeypatch.setattr(sqlite_store, "SCHEMA_FILE", dump)
    assert not sqlite_store.create_if_missing(f"sqlite:///{tmp_path / 'database.db'}")
    assert not (tmp_path / "database.db").exists(), "MLflow migrates a store the dump was not made for"
