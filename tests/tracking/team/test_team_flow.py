"""A team's registry end to end: PostgreSQL behind `invoke mlflow-server`, artifacts proxied to a folder or S3.

Each test: a fresh database and the tracking server on it. The folder case runs the whole command
line (`invoke train` twice, `promote`, `rollback`, `models`), each step checked against the registry
and the rows in PostgreSQL; the S3 case (moto) proves the AWS path: training uploads through the
server, promotion and loading read back through it, and clients hold no storage credentials.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tiny_config, load_registered
from team_support import (
    base_env,
    count_rows,
    fresh_database,
    invoke,
    pg_uri,
    require_postgres,
    start_moto,
    start_tracking_server,
    tracking,
    write_project,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
BUCKET = "team-artifacts"


@dataclass
class TeamStore:
    kind: str
    database: str
    uri: str
    artifacts: str
    s3_endpoint: str | None = None


@pytest.fixture
def team_store(request, tmp_path):
    """A fresh database and a tracking server on it; artifacts in a folder, or in S3 when parametrized "s3"."""
    require_postgres()
    started = []
    with fresh_database() as database:
        try:
            env, endpoint = base_env(), None
            kind = getattr(request, "param", "folder")
            if kind == "s3":
                moto, endpoint = start_moto(tmp_path)
                started.append(moto)
                env = base_env(**_aws_env(endpoint))
                _s3(endpoint).create_bucket(Bucket=BUCKET)
                artifacts = f"s3://{BUCKET}/mlflow"
            else:
                artifacts = str(tmp_path / "artifacts")
            server, uri = start_tracking_server(tmp_path, pg_uri(database), artifacts, env)
            started.append(server)
            yield TeamStore(kind, database, uri, artifacts, endpoint)
        finally:
            for process in reversed(started):
                process.stop()


def _aws_env(endpoint: str) -> dict:
    # Only the tracking server gets these: clients upload and download through it.
    return {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _s3(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def _state(uri: str, name: str) -> tuple[list[int], dict[str, int]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = {alias: int(version) for alias, version in client.get_registered_model(name).aliases.items()}
    return versions, aliases


def _ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def test_train_promote_rollback_models(team_store: TeamStore, tmp_path: Path):
    """The whole command-line flow on PostgreSQL, artifacts in a folder the server owns."""
    config = tiny_config()
    name = config["mlflow"]["model_name"]
    project = write_project(tmp_path / "project", config)
    env = {"MLFLOW_TRACKING_URI": team_store.uri}

    _ok(invoke(project, "train", "--quiet", **env))
    assert _state(team_store.uri, name) == ([1], {"production": 1})
    _ok(invoke(project, "train", "--quiet", **env))
    assert _state(team_store.uri, name) == ([1, 2], {"production": 1})

    out = _ok(invoke(project, "promote", **env))
    assert "'production' of breast-cancer-classifier: version 1 → version 2" in out
    assert _state(team_store.uri, name) == ([1, 2], {"production": 2, "previous-production": 1})

    out = _ok(invoke(project, "rollback", **env))
    assert "version 2 → version 1" in out
    assert _state(team_store.uri, name) == ([1, 2], {"production": 1, "previous-production": 2})

    out = _ok(invoke(project, "models", **env))
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert rows == {"2": "previous-production", "1": "production"}, out

    # The state lives in PostgreSQL, not in a file on this machine.
    assert count_rows(team_store.database, "model_versions") == 2
    assert count_rows(team_store.database, "registered_model_aliases") == 2
    assert not (project / "mlruns").exists() and not (project / "database.db").exists()
    assert len(_artifact_files(team_store, "MLmodel")) == 2  # one logged model per training run
    _assert_production_loads_and_predicts(team_store, name, project, version=1)
    # The API's first load reads the compiled model through the server's artifact proxy, without MLflow.
    from tand.tracking.compiled_files import read_compiled
    from tand.tracking.lookup import lookup_alias

    assert len(_artifact_files(team_store, "compiled_model.npz")) == 2
    meta, _, _ = read_compiled(team_store.uri, name, lookup_alias(team_store.uri, name, "production"))
    assert [f["name"] for f in meta["schema"]["features"]] == list(meta["example"])


@pytest.mark.parametrize("team_store", ["s3"], indirect=True)
def test_s3_artifact_destination(team_store: TeamStore, tmp_path: Path, monkeypatch):
    """The AWS path: artifacts in S3 (moto), written and read only by the tracking server."""
    import mlflow
    from mlflow import MlflowClient

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)  # clients need none: only the server talks to S3

    config = tiny_config(framework="sklearn", model="logistic_regression")
    name = config["mlflow"]["model_name"]
    project = write_project(tmp_path / "project", config)
    _ok(invoke(project, "train", "--quiet", MLFLOW_TRACKING_URI=team_store.uri))
    assert _artifact_files(team_store, "MLmodel"), "training uploaded nothing to the bucket"
    # A second version of the same logged model (no second training): something to promote.
    with tracking(team_store.uri):
        mlflow.register_model(MlflowClient().get_model_version(name, "1").source, name)
    out = _ok(invoke(project, "promote", "--version", "2", MLFLOW_TRACKING_URI=team_store.uri))
    assert "version 1 → version 2" in out  # the schema check read both MLmodel files from S3
    assert _state(team_store.uri, name) == ([1, 2], {"production": 2, "previous-production": 1})
    _assert_production_loads_and_predicts(team_store, name, project, version=2)


def _artifact_files(store: TeamStore, file_name: str) -> list[str]:
    if store.kind == "s3":
        listing = _s3(store.s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")
        keys = [item["Key"] for item in listing.get("Contents", [])]
    else:
        keys = [str(p.relative_to(store.artifacts)) for p in Path(store.artifacts).rglob("*") if p.is_file()]
    return [k for k in keys if k.rsplit("/", 1)[-1] == file_name]


def _assert_production_loads_and_predicts(store: TeamStore, name: str, project: Path, version: int) -> None:
    import pandas as pd

    # This process has no AWS credentials either: artifacts come through the server.
    with tracking(store.uri):
        loaded = load_registered(name, alias="production")
    assert loaded.version == version
    request = json.loads((project / "request_model.json").read_text())
    assert loaded.pipeline.predict(pd.DataFrame([request]))[0] in ("malignant", "benign")
