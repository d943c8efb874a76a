"""promote / rollback / list over a real MLflow registry (a SQLite store: quick), and the tracking tasks' pure parts.

Three versions are registered once for the module: 1 and 2 take the same inputs, 3 drops a
feature. Each test first puts the aliases where it needs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, example_csv, tiny_config

from tand.errors import RegistryError

NAME = "promote-test-model"
DROPPED = "mean_radius"


def _register(config: dict, metric: float, experiment_id: str) -> int:
    """Fit and register one small sklearn pipeline: the registry operations train() ends with."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from tand.tracking import registry
    from tand.config import parse_config
    from tand.training.data import load_dataset, split
    from tand.training.request_example import example_request
    from tand.training.pipeline import build_pipeline

    cfg = parse_config(config).train
    dataset = load_dataset(cfg)
    parts = split(dataset, cfg.test_size, cfg.seed)
    pipeline = build_pipeline(dataset.schema, cfg, progress=False).fit(parts.X_train, parts.y_train)
    head = parts.X_train.head(5)

    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_metrics({"test_accuracy": metric, "test_roc_auc": metric})
        mlflow.log_params({"train.framework": cfg.framework, "train.model": cfg.model})  # as train() logs them
        model = registry.log_model(
            pipeline,
            dataset.schema,
            pd.DataFrame([example_request(dataset)]),
            infer_signature(head, pipeline.predict(head)),
        )
    return registry.register(model.model_uri, NAME)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with versions 1, 2 (same inputs) and 3 (one feature fewer)."""
    import mlflow

    root = tmp_path_factory.mktemp("promote")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    uri = f"sqlite:///{root / 'database.db'}"
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("promote-test", artifact_location=str(root / "mlruns"))
    data = str(example_csv())
    same = tiny_config(data_path=data, framework="sklearn", model="logistic_regression")
    fewer = tiny_config(data_path=data, framework="sklearn", model="logistic_regression", to_drop=[DROPPED])
    versions = [
        _register(same, 0.91, experiment),
        _register(same, 0.93, experiment),
        _register(fewer, 0.95, experiment),
    ]
    assert versions == [1, 2, 3]
    yield uri
    mlflow.set_tracking_uri(None)
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _aliases(**targets: int | None) -> dict[str, int]:
    """Set (or delete, for None) aliases; returns the model's aliases afterwards."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for alias, version in targets.items():
        alias = alias.replace("_", "-")
        if version is None:
            client.delete_registered_model_alias(NAME, alias)
        else:
            client.set_registered_model_alias(NAME, alias, str(version))
    return {a: int(v) for a, v in client.get_registered_model(NAME).aliases.items()}


def _reset(production: int | None = 1, previous: int | None = None) -> None:
    current = _aliases()
    targets = {"production": production, "previous_production": previous}
    _aliases(**{k: v for k, v in targets.items() if v is not None or k.replace("_", "-") in current})


def test_promote_moves_the_alias_and_records_the_previous_version(store):
    from tand.tracking.promotion import promote

    _reset(production=1)
    move = promote(NAME, version=2)
    assert (move.old.version, move.new.version, move.changed) == (1, 2, True)
    assert move.new.metrics["test_accuracy"] == pytest.approx(0.93)
    assert _aliases() == {"production": 2, "previous-production": 1}


def test_promote_without_a_version_takes_the_newest_with_the_same_inputs(store):
    from tand.tracking.promotion import promote

    _reset(production=3)
    move = promote(NAME, force=True, version=None)  # newest is 3 already: nothing moves
    assert (move.new.version, move.changed) == (3, False)
    _reset(production=1)
    with pytest.raises(RegistryError, match="version 3 takes different inputs than version 1"):
        promote(NAME)  # the newest (3) lacks a feature


def test_promote_by_run_id(store):
    from mlflow import MlflowClient

    from tand.tracking.promotion import promote

    _reset(production=1)
    run_id = MlflowClient().get_model_version(NAME, "2").run_id
    assert promote(NAME, run_id=run_id).new.version == 2
    with pytest.raises(RegistryError, match="does not exist"):
        promote(NAME, run_id="0" * 32)


def test_promote_refuses_a_missing_version_and_both_selectors(store):
    from tand.tracking.promotion import promote

    _reset(production=1)
    with pytest.raises(RegistryError, match=r"has no version 9 \(its versions: 1, 2, 3\)"):
        promote(NAME, version=9)
    with pytest.raises(RegistryError, match="not both"):
        promote(NAME, version=2, run_id="abc")
    assert _aliases() == {"production": 1}


def test_a_schema_change_is_refused_unless_forced(store):
    from tand.tracking.promotion import promote

    _reset(production=2)
    with pytest.raises(RegistryError, match=f"lacks {DROPPED}.*--force"):
        promote(NAME, version=3)
    assert _aliases() == {"production": 2}
    move = promote(NAME, version=3, force=True)
    assert move.schema_note and DROPPED in move.schema_note
    assert _aliases() == {"production": 3, "previous-production": 2}


def test_rollback_swaps_back_and_a_second_rollback_undoes_it(store):
    from tand.tracking.promotion import promote, rollback

    _reset(production=1)
    promote(NAME, version=2)
    move = rollback(NAME)
    assert (move.old.version, move.new.version) == (2, 1)
    assert _aliases() == {"production": 1, "previous-production": 2}
    rollback(NAME)
    assert _aliases() == {"production": 2, "previous-production": 1}


def test_rollback_without_history_is_refused(store):
    from tand.tracking.promotion import rollback

    _reset(production=1)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(NAME)
    assert _aliases() == {"production": 1}


def test_list_versions_has_aliases_metrics_and_dates(store):
    from tand.tracking.promotion import list_versions
    from cli.tracking import format_versions

    _reset(production=2, previous=1)
    versions = list_versions(NAME)
    assert [(v.version, v.aliases, v.status) for v in versions] == [
        (1, ("previous-production",), "READY"),
        (2, ("production",), "READY"),
        (3, (), "READY"),
    ]
    assert versions[2].metrics["test_accuracy"] == pytest.approx(0.95)
    table = format_versions(NAME, versions).splitlines()
    assert table[1].split() == ["version", "aliases", "framework", "model", "created", "(UTC)", "status", "accuracy", "roc_auc"]
    assert table[2].split()[:4] == ["3", "-", "sklearn", "logistic_regression"]
    assert table[3].split()[:2] == ["2", "production"]


def test_an_unknown_model_is_one_clear_error(store):
    from tand.tracking.promotion import list_versions

    with pytest.raises(RegistryError, match="has no versions"):
        list_versions("no-such-model")


# -- the tracking tasks' pure parts and quick failures --------------------------------


def test_backend_uri_names_the_psycopg_driver():
    from tand.tracking.stores import backend_uri, redact

    assert backend_uri("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert backend_uri("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert backend_uri("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert backend_uri("sqlite:///database.db") == "sqlite:///database.db"
    assert redact("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"


def test_server_command_proxies_artifacts():
    from cli.tracking import server_command

    command = server_command("postgresql://h/db", "s3://bucket/mlflow", "127.0.0.1", 5000, 2, None)
    assert command[1:4] == ["-m", "mlflow", "server"]
    joined = " ".join(command)
    assert "--backend-store-uri postgresql+psycopg://h/db" in joined
    assert "--serve-artifacts --artifacts-destination s3://bucket/mlflow" in joined
    assert "--workers 2" in joined and "--default-artifact-root" not in joined


def _invoke(*args: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environ.update(MLFLOW_DISABLE_TELEMETRY="true", **env)
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend-store-uri", "http://127.0.0.1:5000"], "is a tracking server, not a database"),
        (["--port", "70000"], "is not a TCP port"),
        (
            ["--backend-store-uri", "postgresql://mlflow:s3cret@127.0.0.1:1/mlflow"],
            "postgresql://mlflow:***@127.0.0.1:1/mlflow is unreachable",
        ),
    ],
)
def test_mlflow_server_refuses_bad_settings_in_one_line(tmp_path, args, message):
    result = _invoke("mlflow-server", *args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_promote_with_a_bad_version_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config()))
    result = _invoke("promote", "--version", "two", cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (1, "error: --version 'two' is not a whole number")


def test_models_against_a_stopped_server_fails_fast(tmp_path):
    """MLflow would retry for minutes; the check before any registry call makes it one attempt."""
    import socket

    (tmp_path / "config.json").write_text(json.dumps(tiny_config()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    result = _invoke("models", cwd=tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "is unreachable" in lines[0], result.stderr
