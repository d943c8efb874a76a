"""`invoke tune`: an Optuna study of one model's parameters, shared by every worker that names the same storage.

Each trial is the cross-validated score (tand.training.crossval) of the training split, reported after every
fold so the median pruner can stop a poor trial early, and a nested MLflow run under this worker's parent
run. Workers on N machines join one study through an RDB URL (PostgreSQL); heartbeats let a killed worker's
trial be failed and retried by the others. When a worker ends and no trial of the study is running or
waiting, it takes the study's lock and, unless the best trial is registered already, trains it with
tand.training.run.train (a new version, never given the alias): one registration per best trial.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from tand.config import Config
from tand.errors import ConfigError
from tand.training.studies import HEARTBEAT_SECONDS, open_storage, storage_url, study_lock

REGISTERED = "registered_trial"


@dataclass
class TuneResult:
    study: str
    trials_run: int  # by this worker
    best_number: int | None
    best_value: float | None
    best_params: dict
    version: int | None = None  # registered by this worker
    run_id: str | None = None
    registered_elsewhere: int | None = None  # the best trial's version, registered by another worker


def _sampler(seed: int):
    """TPE whose random draws are seeded by seed + trial number: two workers with the same seed draw different
    start-up points (trial numbers are unique in a study), and one worker alone is reproducible."""
    import optuna

    class PerTrialSeed(optuna.samplers.TPESampler):
        def before_trial(self, study, trial):
            # Private attributes of Optuna's TPESampler (the version is pinned in requirements.txt).
            self._rng.rng.seed(seed + trial.number)
            self._random_sampler._rng.rng.seed(seed + trial.number)
            super().before_trial(study, trial)

    return PerTrialSeed(seed=seed, constant_liar=True)  # constant liar: others' running trials count as poor


def tuned_config(cfg: Config, model: str, params: dict) -> Config:
    """`cfg` training `model` with `params`: train keys for the MLP, model_args for every other model."""
    from pydantic import ValidationError

    from tand.config import PYTORCH_KEYS
    from tand.config_errors import describe

    raw = cfg.model_dump(by_alias=True, exclude_none=True)
    train = raw["train"]
    train.pop("framework", None)
    if model == "mlp":
        train.update(model="mlp", **params)
        train.pop("model_args", None)
    else:
        same = cfg.train.model == model
        for key in PYTORCH_KEYS:  # the dump holds their defaults; they would only be named in a warning
            train.pop(key, None)
        train.update(model=model, model_args={**(cfg.train.model_args if same else {}), **params})
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"tune: {'; '.join(describe(e, Config) for e in exc.errors())}") from None


def _check_space(cfg: Config, model: str, space: dict, schema) -> None:
    from tand.models.spaces import example_params
    from tand.training.pipeline import build_pipeline

    try:
        build_pipeline(schema, tuned_config(cfg, model, example_params(space)).train, progress=False)
    except ConfigError as exc:
        raise ConfigError(f"tune.space.{model}: {str(exc).split(': ', 1)[-1]}") from None


def study_name(cfg: Config, model: str, name: str | None) -> str:
    return name or cfg.tune.study or f"{cfg.mlflow.model_name}-{model}"


def _objective(cfg: Config, model: str, space: dict, parts, schema, worker: str, experiment_id: str):
    import mlflow
    import optuna

    from tand.models.spaces import suggest
    from tand.training.crossval import cross_validate
    from tand.training.pipeline import build_pipeline

    metric = cfg.train.selection_metric

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        trial.set_user_attr("worker", worker)
        pipeline = build_pipeline(schema, tuned_config(cfg, model, params).train, progress=False)

        def on_fold(index: int, running_mean: float) -> None:
            mlflow.log_metric(f"cv_{metric}", running_mean, step=index)
            trial.report(running_mean, index)
            if trial.should_prune():
                mlflow.set_tag("tand.trial_state", "PRUNED")
                raise optuna.TrialPruned()

        tags = {"tand.trial": str(trial.number)}
        with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name=f"trial {trial.number}", tags=tags):
            mlflow.log_params({"model": model, **params})
            score = cross_validate(
                pipeline, parts.X_train, parts.y_train, schema, metric, cfg.train.cv_folds, cfg.train.seed, on_fold
            )
            mlflow.log_metrics({f"cv_{metric}_mean": score.mean, f"cv_{metric}_std": score.std})
            mlflow.set_tag("tand.trial_state", "COMPLETE")
        return score.mean

    return objective


def tune(
    cfg: Config,
    model: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    project_dir: str | Path = ".",
    heartbeat: float = HEARTBEAT_SECONDS,
) -> TuneResult:
    """Run this worker's trials of the shared study, then register the best trial if this worker ends last."""
    import mlflow
    import optuna

    from tand.models.spaces import search_space
    from tand.tracking import embedded, registry, runs
    from tand.training.crossval import greater_is_better
    from tand.training.data import load_dataset, split

    model = model or cfg.tune.model or cfg.train.model or "mlp"
    if model == "auto":
        raise ConfigError("tune: model 'auto' selects a model itself; name the model to tune, e.g. --model lightgbm")
    base = tuned_config(cfg, model, {})  # an unknown model name fails here, in the config's own words
    space = search_space(model, cfg.tune.space)
    dataset = load_dataset(base.train)
    parts = split(dataset, base.train.test_size, base.train.seed)
    _check_space(base, model, space, dataset.schema)
    name = study_name(cfg, model, study)
    rdb = open_storage(storage_url(storage or cfg.tune.storage, project_dir), heartbeat)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study(
        study_name=name,
        storage=rdb,
        load_if_exists=True,
        direction="maximize" if greater_is_better(base.train.selection_metric) else "minimize",
        sampler=_sampler(base.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    embedded.create_if_missing(registry.tracking_uri())
    registry.check_reachable()
    experiment_id = registry.ensure_experiment(cfg.mlflow.experiment_name)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    objective = _objective(base, model, space, parts, dataset.schema, worker, experiment_id)
    before = _own_trials(the_study, worker)
    tags = {**runs.owner_tags(), "tand.study": name, "tand.model": model}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"tune {name} ({worker})", tags=tags):
        the_study.optimize(objective, n_trials=trials or cfg.tune.trials, timeout=timeout or cfg.tune.timeout, catch=())
        _finish_retries(the_study, objective, rdb)
    result = _result(the_study, name, _own_trials(the_study, worker) - before)
    if result.best_number is not None:
        _register_best(the_study, rdb, base, model, project_dir, result)
    return result


def _own_trials(study, worker: str) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker)


def _finish_retries(study, objective, rdb) -> None:
    """Run the retries of killed workers' trials; wait (one grace period at most) for trials that may be stale."""
    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + rdb.grace_period + rdb.heartbeat_interval + 1
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            study.optimize(objective, n_trials=len(waiting), catch=())
            continue
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) or time.monotonic() > deadline:
            return  # past the deadline the running trials have live heartbeats: their workers finish the study
        time.sleep(0.5)


def _result(study, name: str, trials_run: int) -> TuneResult:
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return TuneResult(name, trials_run, None, None, {})
    best = study.best_trial
    return TuneResult(name, trials_run, best.number, best.value, dict(best.params))


def _register_best(study, rdb, base: Config, model: str, project_dir, result: TuneResult) -> None:
    from optuna.trial import TrialState

    from tand.training.run import train

    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        return  # another worker is still at it: the last one registers
    with study_lock(rdb, study.study_name):
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            return  # one started while we waited for the lock
        attrs = study.user_attrs
        best = study.best_trial
        if attrs.get(REGISTERED) == best.number:
            result.registered_elsewhere = attrs.get("registered_version")
            return
        trained = train(tuned_config(base, model, best.params), project_dir=project_dir, progress=False, set_alias=False)
        study.set_user_attr(REGISTERED, best.number)
        study.set_user_attr("registered_version", trained.version)
        study.set_user_attr("registered_run", trained.run_id)
        result.version, result.run_id = trained.version, trained.run_id
        result.best_number, result.best_value, result.best_params = best.number, best.value, dict(best.params)


