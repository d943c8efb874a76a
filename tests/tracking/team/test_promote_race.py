"""Racing promotions on a real registry (SQLite, and PostgreSQL on 127.0.0.1:5432): exactly one wins,
the loser is one clear error, and `previous-production` keeps naming the version that was replaced."""

from __future__ import annotations

import contextlib
import threading

import pytest
from conftest import example_csv, tiny_config
from team_support import fresh_database, pg_uri, require_postgres, start_tracking_server

from tand.errors import RegistryError
from tand.tracking import sql

NAME = "race-model"
LOST = "moved its aliases meanwhile"


def _three_versions(uri: str, artifacts: str) -> None:
    """One small pipeline logged once and registered three times (same inputs, so promotion never refuses)."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from tand.config import parse_config
    from tand.tracking import registry
    from tand.training.data import load_dataset, split
    from tand.training.request_example import example_request
    from tand.training.pipeline import build_pipeline

    cfg = parse_config(tiny_config(data_path=str(example_csv()), framework="sklearn", model="logistic_regression")).train
    dataset = load_dataset(cfg)
    parts = split(dataset, cfg.test_size, cfg.seed)
    pipeline = build_pipeline(dataset.schema, cfg, progress=False).fit(parts.X_train, parts.y_train)
    head = parts.X_train.head(5)
    experiment = mlflow.create_experiment("race", artifact_location=artifacts)
    with mlflow.start_run(experiment_id=experiment):
        model = registry.log_model(
            pipeline, dataset.schema, pd.DataFrame([example_request(dataset)]), infer_signature(head, pipeline.predict(head))
        )
    assert [registry.register(model.model_uri, NAME) for _ in range(3)] == [1, 2, 3]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def store(request, tmp_path, monkeypatch):
    """A store of the parametrized kind holding versions 1-3 of NAME; the test's tracking URI points at it."""
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with contextlib.ExitStack() as cleanup:
        if request.param == "sqlite":
            uri = f"sqlite:///{tmp_path / 'database.db'}"
        else:
            require_postgres()
            uri = "postgresql+psycopg://" + pg_uri(cleanup.enter_context(fresh_database())).removeprefix("postgresql://")
            cleanup.callback(sql._engines.pop, uri, None)  # its engine outlives nothing: the database is dropped
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        cleanup.callback(mlflow.set_tracking_uri, None)
        _three_versions(uri, str(tmp_path / "mlruns"))
        yield uri


def _aliases() -> dict[str, int]:
    from mlflow import MlflowClient

    return {alias: int(version) for alias, version in MlflowClient().get_registered_model(NAME).aliases.items()}


def _start_from(production: int, previous: int | None) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(NAME, "production", str(production))
    if previous is None:
        if "previous-production" in _aliases():
            client.delete_registered_model_alias(NAME, "previous-production")
    else:
        client.set_registered_model_alias(NAME, "previous-production", str(previous))


def _race(*calls) -> list:
    """Run the calls in threads released at the same moment; each result is its return value or exception."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except RegistryError as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a promotion hung"
    return results


def test_of_two_racing_promotes_exactly_one_wins_and_the_history_is_right(store):
    from tand.tracking.promotion import promote

    raced = 0
    for _ in range(4):
        _start_from(production=1, previous=None)
        results = _race(lambda: promote(NAME, version=2), lambda: promote(NAME, version=3))
        wins = [r for r in results if not isinstance(r, Exception)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert all(LOST in str(exc) and "\n" not in str(exc) for exc in losses), losses
        if len(wins) == 1:  # they raced: the winner's move is the final state, the replaced version recorded
            raced += 1
            assert wins[0].old.version == 1
            assert _aliases() == {"production": wins[0].new.version, "previous-production": 1}
        else:  # one finished before the other read: a chain of two real moves, never two moves from 1
            first, second = sorted(wins, key=lambda move: move.old.version != 1)
            assert (first.old.version, second.old.version) == (1, first.new.version)
            assert _aliases() == {"production": second.new.version, "previous-production": first.new.version}
    assert raced, "in four rounds the two promotions never overlapped"


def test_a_promote_racing_a_rollback_leaves_a_consistent_pair(store):
    from tand.tracking.promotion import promote, rollback

    for _ in range(3):
        _start_from(production=2, previous=1)
        results = _race(lambda: promote(NAME, version=3), lambda: rollback(NAME))
        aliases = _aliases()
        wins = [r for r in results if not isinstance(r, Exception)]
        assert wins and all(LOST in str(r) for r in results if isinstance(r, Exception))
        # Whatever won last, production and previous-production are its new and old version.
        last = next(move for move in wins if move.new.version == aliases["production"])
        assert aliases == {"production": last.new.version, "previous-production": last.old.version}


def test_the_two_aliases_move_together_or_not_at_all(store):
    """What makes a kill between the two writes harmless: they are one transaction, so when the second
    compare-and-set fails the first is undone too (a killed process's transaction is discarded the same way)."""
    from tand.tracking import sql

    _start_from(production=2, previous=1)
    # previous-production still reads 1 (its move would succeed); production no longer reads 1.
    assert sql.move_aliases(store, NAME, [("previous-production", 1, 2), ("production", 1, 3)]) is False
    assert _aliases() == {"production": 2, "previous-production": 1}
    assert sql.move_aliases(store, NAME, [("previous-production", 1, 2), ("production", 2, 3)]) is True
    assert _aliases() == {"production": 3, "previous-production": 2}


@pytest.fixture
def server_store(tmp_path, monkeypatch):
    """A tracking server (HTTP) on a SQLite store, holding versions 1-3 of NAME."""
    import mlflow

    server, uri = start_tracking_server(tmp_path, f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        _three_versions(uri, None)
        yield uri
    finally:
        mlflow.set_tracking_uri(None)
        server.stop()


@pytest.mark.slow
def test_through_a_tracking_server_aliases_move_by_the_client_and_a_race_seen_is_refused(server_store):
    from mlflow import MlflowClient

    from tand.tracking.promotion import _move_with_client, promote, rollback

    _start_from(production=1, previous=None)
    assert promote(NAME, version=2).old.version == 1
    assert _aliases() == {"production": 2, "previous-production": 1}
    rollback(NAME)
    assert _aliases() == {"production": 1, "previous-production": 2}
    # Read as production 2, but another writer has put it on 1 since: nothing is written.
    assert _move_with_client(MlflowClient(), NAME, [("previous-production", 2, 3), ("production", 2, 3)]) is False
    assert _aliases() == {"production": 1, "previous-production": 2}
