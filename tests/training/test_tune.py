"""`invoke tune` workers on the local PostgreSQL: two processes share one study (no trial run twice) and register
one best version; a worker killed mid-trial leaves no RUNNING trial and its trial is retried; --report lists them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import example_csv, tiny_sklearn_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking" / "team"))
from team_support import INVOKE, Process, base_env, fresh_database, pg_admin, pg_uri, require_postgres, wait_for  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
MODEL_NAME = "tune-model"


def _project(root: Path, model: str, space: dict | None = None) -> Path:
    config = tiny_sklearn_config(MODEL_NAME, data_path=str(example_csv()), model=model)
    config["mlflow"]["experiment_name"] = "tune-experiment"
    config["tune"] = {"space": space or {}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture
def databases():
    """(optuna storage URL, MLflow tracking URI): two throwaway PostgreSQL databases, MLflow's tables created."""
    require_postgres()
    from mlflow import MlflowClient

    with fresh_database() as optuna_db, fresh_database() as mlflow_db:
        tracking = "postgresql+psycopg://" + pg_uri(mlflow_db).removeprefix("postgresql://")
        MlflowClient(tracking_uri=tracking).search_experiments()  # the schema, before two workers race to create it
        yield pg_uri(optuna_db), tracking  # dropped WITH (FORCE): this process's open connections too


def _worker(name: str, project: Path, storage: str, tracking: str, *flags: str) -> Process:
    env = base_env(MLFLOW_TRACKING_URI=tracking, OMP_NUM_THREADS="1")
    return Process(name, [*INVOKE, "tune", "--storage", storage, *flags], project, project, env)


def _wait(process: Process, timeout: float = 120) -> str:
    code = process.popen.wait(timeout)
    assert code == 0, f"{process.name} exited with {code}:\n{process.log_tail(40)}"
    return process.log.read_text()


def _study(storage: str, name: str):
    import optuna

    from tand.training.studies import storage_url

    return optuna.load_study(study_name=name, storage=storage_url(storage))


def _registered_versions(tracking: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking).search_model_versions(f"name = '{MODEL_NAME}'")


def test_two_workers_share_one_study_and_register_one_best_version(tmp_path, databases):
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    storage, tracking = databases
    project = _project(tmp_path / "project", "logistic_regression")
    workers = [_worker(f"worker{i}", project, storage, tracking, "--trials", "4", "--study", "shared") for i in (1, 2)]
    try:
        logs = [_wait(w) for w in workers]
    finally:
        for w in workers:
            w.stop()
    trials = _study(storage, "shared").get_trials()
    assert len(trials) == 8 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.number for t in trials}) == 8
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 8, "a parameter set was tried twice"
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers ran trials"
    study = _study(storage, "shared")
    versions = _registered_versions(tracking)
    assert len(versions) == 1, f"{len(versions)} versions registered:\n" + "\n".join(logs)
    assert study.user_attrs["registered_trial"] == study.best_trial.number
    assert sum("registered tune-model version 1" in log for log in logs) == 1
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(versions[0].run_id)
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text())
    assert config["train"]["model_args"]["C"] == pytest.approx(study.best_params["C"])
    assert client.get_model_version(MODEL_NAME, "1").aliases == [], "tune never promotes"
    experiment = client.get_experiment_by_name("tune-experiment").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    parents = {r.info.run_id for r in runs if r.data.tags.get("tand.study") == "shared"}
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parents]
    assert len(parents) == 2, "one parent run per worker"
    assert len(nested) == 8 and {r.data.params["model"] for r in nested} == {"logistic_regression"}
    report = _report(project, storage, tracking, "shared")
    assert "8 trial(s)" in report
    first = report.splitlines()[2].split()
    assert int(first[0]) == study.best_trial.number and first[1] == "COMPLETE", report


def _report(project: Path, storage: str, tracking: str, study: str) -> str:
    process = _worker("report", project, storage, tracking, "--study", study, "--report")
    return _wait(process, 60)


def _running_with_heartbeat(storage: str) -> int | None:
    dbname = storage.rsplit("/", 1)[1]
    with contextlib.suppress(Exception), pg_admin(dbname) as conn:  # the tables appear with the first worker
        row = conn.execute(
            "SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING'"
            " AND (SELECT count(*) FROM trial_params p WHERE p.trial_id = t.trial_id) = 4"  # all sampled: fitting folds
        ).fetchone()
        return row[0] if row else None
    return None


def test_a_killed_workers_trial_is_failed_and_retried(tmp_path, databases):
    from optuna.trial import TrialState

    storage, tracking = databases
    # Slow trials (a few hundred trees per fold) so the kill lands mid-trial; 4 parameters (2 of the catalog's).
    space = {"random_forest": {"n_estimators": {"low": 150, "high": 250}, "max_depth": {"low": 3, "high": 6}}}
    project = _project(tmp_path / "project", "random_forest", space)
    flags = ("--study", "kill", "--heartbeat", "1")
    doomed = _worker("doomed", project, storage, tracking, "--trials", "20", *flags)
    try:
        killed = wait_for(lambda: _running_with_heartbeat(storage), 120, "a running trial", 0.05, doomed.check_alive)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.popen.wait(10)
    finally:
        doomed.stop()
    survivor = _worker("survivor", project, storage, tracking, "--trials", "1", *flags)
    try:
        log = _wait(survivor)
    finally:
        survivor.stop()
    trials = {t.number: t for t in _study(storage, "kill").get_trials()}
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == trials[killed].params
    assert len(_registered_versions(tracking)) == 1, log
    assert "registered tune-model version 1" in log
