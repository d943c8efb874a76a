"""Tasks for tuning: an Optuna study that many workers can share through PostgreSQL."""

from __future__ import annotations

import json
import os

from invoke import task

from cli.common import known_errors, load_env, whole_number


@task(
    help={
        "config": "Path of the config file (default: config.json).",
        "model": "Model to tune, e.g. logistic_regression, lightgbm, mlp (default: tune.model, else train.model).",
        "trials": "Trials this worker runs (default: tune.trials, 30); each worker of a shared study runs its own.",
        "timeout": "Seconds after which this worker starts no new trial (default: tune.timeout, none).",
        "study": "Study name (default: tune.study, else <model_name>-<model>); workers with the same name share it.",
        "storage": "Optuna storage shared by workers, e.g. postgresql://user@host/db (default: tune.storage, "
        "else optuna.db in the project).",
        "report": "Print the study's leaderboard so far (trial, state, score, params, seconds) and exit.",
        "heartbeat": "Seconds between a running trial's heartbeats (default 30); a trial silent for twice as long "
        "(its worker was killed) is failed and retried by another worker.",
    }
)
def tune(c, config="config.json", model=None, trials=None, timeout=None, study=None, storage=None, report=False, heartbeat=None):
    """Tune a model's parameters (Optuna, cross-validated), then register the best as a new version (not promoted)."""
    load_env("train.env")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tand.config import load_config
    from tand.training import studies
    from tand.training import tune as tuning

    trials = whole_number("--trials", trials)
    with known_errors():
        cfg = load_config(config)
        timeout_s = _seconds("--timeout", timeout)
        beat = _seconds("--heartbeat", heartbeat) or studies.HEARTBEAT_SECONDS
        if report:
            name = tuning.study_name(cfg, model or cfg.tune.model or cfg.train.model or "mlp", study)
            _print_leaderboard(name, studies.leaderboard(name, storage or cfg.tune.storage))
            return
        result = tuning.tune(cfg, model, trials, timeout_s, study, storage, heartbeat=beat)
    print(f"study {result.study}: this worker ran {result.trials_run} trial(s)")
    if result.best_number is None:
        print("no trial completed yet; nothing registered")
        return
    print(f"best trial {result.best_number}: {cfg.train.selection_metric} {result.best_value:.4f} {json.dumps(result.best_params)}")
    if result.version is not None:
        print(f"registered {cfg.mlflow.model_name} version {result.version} (run {result.run_id}); "
              f"promote it with `invoke promote --version {result.version}`")  # fmt: skip
    elif result.registered_elsewhere is not None:
        print(f"the best trial is registered already: version {result.registered_elsewhere}")
    else:
        print("other workers are still running trials: the last one to finish registers the best")


def _seconds(flag: str, value) -> float | None:
    from tand.errors import ConfigError

    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ConfigError(f"{flag} must be positive; got {value}")
    return seconds


def _print_leaderboard(name: str, rows: list[dict]) -> None:
    print(f"study {name}: {len(rows)} trial(s), best first")
    print(f"{'trial':>5}  {'state':<8}  {'score':>8}  {'seconds':>7}  params")
    for row in rows:
        score = f"{row['score']:.4f}" if row["score"] is not None else "-"
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else "-"
        print(f"{row['trial']:>5}  {row['state']:<8}  {score:>8}  {seconds:>7}  {json.dumps(row['params'])}")
