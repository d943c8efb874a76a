"""Training on a Dask cluster (`invoke train --dask tcp://host:8786`, or DASK_SCHEDULER_ADDRESS): the same
registered artifact as on one machine, from data that does not fit on it.

    this machine   connect → read the files as a Dask DataFrame (tand.training.dask_data): schema, split,
                   the test split and a bounded training sample here → fit the native-category preprocessor
                   on the categories the cluster counted → MLflow run → register
    the cluster    count rows and categories → encode each partition with that preprocessor →
                   lightgbm.dask / xgboost.dask train one booster across the workers

The booster comes back (LightGBM's `to_local()`, XGBoost's model file) into the template's BoostingClassifier / BoostingRegressor adapter,
behind the same Pipeline `build_pipeline` makes for one machine: the API, the compiled form and `invoke
predict` serve it unchanged. Metrics, threshold, plots and the model card are computed here, on the whole test
split and the bounded training sample (as tand.training.fitting does beside a local fit).

LightGBM's Dask interface has no early stopping (lightgbm issue #3712: workers would stop at different
rounds), so a LightGBM cluster fit runs the rounds `model_args` names (n_estimators; default DEFAULT_ROUNDS).
XGBoost's workers agree on every round, so xgboost stops early on a seeded validation split of the training
frame, as on one machine.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tand.config import Config, TrainConfig
from tand.errors import ConfigError, TandError
from tand.models import boosting_libraries  # imports no boosting library itself

SUPPORTED = ("lightgbm", "xgboost")
DEFAULT_ROUNDS = 100  # LightGBM's own default: its Dask interface has no early stopping
CONNECT_TIMEOUT = "15s"
ENCODER_ROWS = 100_000  # rows of the frame the preprocessor is fitted on when categories are grouped by count


class ClusterError(TandError):
    """The Dask scheduler cannot be reached, or the cluster cannot run the fit."""


def check_model(cfg: TrainConfig) -> None:
    if cfg.framework != "sklearn" or cfg.model not in SUPPORTED:
        raise ConfigError(
            f"train.model: {cfg.model or 'mlp'!r} does not train on a Dask cluster; choose one of: {', '.join(SUPPORTED)} "
            "(or train without --dask / DASK_SCHEDULER_ADDRESS)"
        )


def cluster_args(cfg: TrainConfig) -> tuple[dict, int, int | None]:
    """model_args as (the library's parameters, rounds, early-stopping rounds or None). LightGBM: early
    stopping is refused in one line, and the default rounds are LightGBM's own."""
    libraries = boosting_libraries
    params, rounds, early = libraries.check_args(cfg.model, cfg.model_args)
    if cfg.model != "lightgbm":
        return params, rounds, early
    if any(key in cfg.model_args and cfg.model_args[key] for key in libraries._EARLY_KEYS[cfg.model]):
        raise ConfigError(
            "train.model_args: early stopping does not work with lightgbm on a Dask cluster (LightGBM's Dask interface); "
            "remove early_stopping_rounds and set n_estimators, or use xgboost"
        )
    explicit = any(key in cfg.model_args for key in libraries._ROUNDS_KEYS[cfg.model])
    return params, rounds if explicit else DEFAULT_ROUNDS, None


def connect(address: str):
    """A dask.distributed Client on `address` (also the default scheduler of dask.compute in this process)."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({str(exc).splitlines()[0][:160]}); start one with "
            "`dask scheduler` and `dask worker <address>`, or fix --dask / DASK_SCHEDULER_ADDRESS"
        ) from None


def ship_code() -> None:
    """The functions that run on the workers travel by value (dask_data.by_value): the workers need the
    pinned libraries only."""
    from tand.training import dask_data

    if sys.modules[__name__] not in dask_data.EXTRA_BY_VALUE:
        dask_data.EXTRA_BY_VALUE.append(sys.modules[__name__])


def encoder_frame(schema, counts: dict[str, pd.Series], max_categories: int | None) -> pd.DataFrame:
    """A small frame holding every category of each column (numbers: 0) to fit the preprocessor on. With
    `max_categories`, each category appears in proportion to its count, so the encoder groups the same rare ones."""
    columns = {}
    for feature in schema.features:
        if feature.kind != "categorical":
            continue
        values = list(feature.categories)
        if max_categories and len(values) > max_categories and feature.name in counts:
            weight = _counts_by_category(counts[feature.name], feature)
            total = sum(weight.values()) or 1
            values = [v for v in values for _ in range(max(1, round(weight.get(v, 0) * ENCODER_ROWS / total)))]
        columns[feature.name] = values
    length = max([len(v) for v in columns.values()] + [1])
    frame = pd.DataFrame(index=range(length))
    for feature in schema.features:
        if feature.kind == "numeric":
            frame[feature.name] = 0.0
            continue
        values = columns[feature.name]
        padded = values + [np.nan] * (length - len(values))  # missing: coded NaN, as unknown categories are
        frame[feature.name] = pd.Series(padded, dtype=object if feature.dtype in ("string", "boolean") else np.float64)
    return frame


def _counts_by_category(counts: pd.Series, feature) -> dict:
    cast = str if feature.dtype == "string" else (lambda v: int(v) if float(v).is_integer() else float(v))
    out = {}
    for value, count in counts.items():
        out[cast(value)] = out.get(cast(value), 0) + int(count)
    return out


def _matrix(part: pd.DataFrame, clean, preprocessor) -> np.ndarray:
    """On a worker: one partition as the booster's input (numbers, category codes)."""
    X, _ = clean(part)
    return np.asarray(preprocessor.transform(X), dtype=np.float64)


def _targets(part: pd.DataFrame, clean, codes: dict | None) -> np.ndarray:
    _, y = clean(part)
    return (y.map(codes).to_numpy(dtype=np.int64)) if codes is not None else y.to_numpy(dtype=np.float64)


def fit_on_cluster(client, pipeline, parts, schema, cfg: TrainConfig, progress: bool = False):
    """Train the pipeline's booster on the cluster; its preprocessor is already fitted. Returns the pipeline."""
    from tand.training.dask_data import by_value
    from tand.training.pipeline import categorical_positions

    preprocessor, adapter = pipeline[0], pipeline[-1]
    params, rounds, early = cluster_args(cfg)
    width = len(schema.features)
    codes = None
    if schema.task == "classification":
        adapter.classes_ = np.unique(np.asarray(list(schema.classes), dtype=object))
        codes = {label: i for i, label in enumerate(adapter.classes_)}

    def arrays(frame):
        X = frame.map_partitions(by_value(_matrix), parts.clean, preprocessor, meta=np.empty((0, width)))
        return X, frame.map_partitions(by_value(_targets), parts.clean, codes, meta=np.empty(0))

    if progress:
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        stopping = f"early stopping after {early} rounds without gain" if early else "no early stopping"
        print(f"{cfg.model}: up to {rounds} rounds on {workers} Dask worker(s) ({stopping})", file=sys.stderr)
    categorical = categorical_positions(schema)
    if cfg.model == "lightgbm":
        adapter.model_ = _lightgbm(client, arrays(parts.train_frame), schema.task, categorical, params, rounds, cfg.seed)
    else:
        fit, valid = parts.train_frame.random_split([1 - adapter.validation_fraction, adapter.validation_fraction], random_state=cfg.seed)
        data = (*arrays(fit), *(arrays(valid) if early else (None, None)))
        adapter.model_ = _xgboost(client, data, schema.task, categorical, width, params, rounds, early, cfg.seed)
    adapter.set_params(n_estimators=rounds, early_stopping_rounds=early, params=params)
    adapter.n_features_in_ = width
    adapter.n_rounds_ = int(boosting_libraries.LIBRARIES[cfg.model].rounds(adapter.model_))
    adapter.history_ = []
    return pipeline


def _lightgbm(client, data, task: str, categorical: list[int], params: dict, rounds: int, seed: int):
    """lightgbm.dask's fit; the booster as a local LGBMClassifier / LGBMRegressor."""
    import lightgbm.dask as lgb_dask

    X, y = data
    cls = lgb_dask.DaskLGBMClassifier if task == "classification" else lgb_dask.DaskLGBMRegressor
    model = cls(client=client, n_estimators=rounds, **{"random_state": seed, "verbose": -1, **params})
    with warnings.catch_warnings():
        # lightgbm.dask sets each worker's threads itself and says so for the n_jobs every estimator carries.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        model.fit(X, y, categorical_feature=categorical or "auto")
    return model.to_local()


def _xgboost(client, data, task: str, categorical: list[int], width: int, params: dict, rounds: int, early, seed: int):
    """xgboost.dask's fit (early stopping on a seeded validation split: XGBoost's workers agree on the round);
    the booster as a local XGBClassifier / XGBRegressor, through XGBoost's own model file."""
    import tempfile

    import xgboost.dask as xgb_dask

    X, y, X_valid, y_valid = data
    cls = xgb_dask.DaskXGBClassifier if task == "classification" else xgb_dask.DaskXGBRegressor
    types = ["c" if i in categorical else "q" for i in range(width)]
    model = cls(
        n_estimators=rounds, early_stopping_rounds=early, enable_categorical=bool(categorical),
        feature_types=types if categorical else None, **{"random_state": seed, "verbosity": 0, **params},
    )
    model.client = client
    model.fit(X, y, eval_set=[(X_valid, y_valid)] if early else None, verbose=False)
    local = boosting_libraries.library_class("xgboost", task)(n_estimators=rounds, early_stopping_rounds=early)
    with tempfile.TemporaryDirectory() as folder:
        model.save_model(f"{folder}/model.json")
        local.load_model(f"{folder}/model.json")
    return local


class ClusterFit:
    """What tand.training.run's MLflow run asks a fit worker for (evaluation, then plots), fitting on the cluster."""

    forked = False  # the fit runs on the cluster's workers, not in a process beside this one

    def __init__(self, client, pipeline, parts, schema, cfg: TrainConfig, progress: bool):
        self._args = (client, pipeline, parts, schema, cfg, progress)
        self._evaluation = None

    def evaluation(self):
        from tand.training import fitting
        from tand.training import threshold as decision
        from tand.training.evaluate import compute_metrics, predict

        client, pipeline, parts, schema, cfg, progress = self._args
        start = time.perf_counter()
        fit_on_cluster(client, pipeline, parts, schema, cfg, progress)
        fitted = time.perf_counter()
        # "auto" on imbalanced classes: out-of-fold fits of the pipeline on the bounded training sample, here.
        schema, searched = decision.choose(pipeline, parts, schema, cfg.threshold, cfg.cv_folds, contextlib.nullcontext)
        chosen = time.perf_counter()
        test = predict(pipeline, parts.X_test, parts.y_test, schema)
        metrics = {f"test_{k}": v for k, v in compute_metrics(test).items()}
        train = predict(pipeline, parts.X_train, parts.y_train, schema)
        metrics.update({f"train_{k}": v for k, v in compute_metrics(train).items()})
        if schema.positive_class is not None:
            metrics["threshold"] = schema.threshold if schema.threshold is not None else 0.5
        seconds = {"cluster_fit": fitted - start, "metrics": time.perf_counter() - chosen}
        if searched:
            seconds["threshold"] = chosen - fitted
        self._evaluation = fitting.Evaluation(pipeline, metrics, [], seconds, test, schema)
        return self._evaluation

    def plots(self) -> tuple[dict[str, bytes], float]:
        from tand.training import fitting

        _, _, parts, schema, _, _ = self._args
        started = time.perf_counter()
        evaluation = self._evaluation
        plots = fitting.render_plots(parts, evaluation.predictions, evaluation.schema or schema, evaluation.pipeline)
        return plots, time.perf_counter() - started


def train_on_cluster(cfg: Config, address: str, project_dir: str | Path = ".", progress: bool = True, set_alias: bool = True):
    """tand.training.run.train on the Dask cluster at `address`: one run, one registered version."""
    from tand.monitoring import model_card
    from tand.tracking import registry
    from tand.training import run
    from tand.training.dask_data import load_cluster_dataset
    from tand.training.pipeline import build_pipeline
    from tand.training.request_example import example_request

    laps = run._Laps()
    check_model(cfg.train)
    cluster_args(cfg.train)  # a bad model_args line before connecting
    ship_code()
    with connect(address) as client:
        laps.lap("connect")
        dataset, parts, counts = load_cluster_dataset(cfg.train, client)
        model_card.check_slices(cfg.model_card, dataset.schema)
        pipeline = build_pipeline(dataset.schema, cfg.train, progress=False)
        pipeline[0].fit(encoder_frame(dataset.schema, counts, cfg.train.max_categories))
        request = example_request(dataset)
        laps.lap("data")
        worker = ClusterFit(client, pipeline, parts, dataset.schema, cfg.train, progress)
        run_id, model_uri, evaluation, stale, table, card = run._tracked_run(cfg, dataset, parts, request, worker, laps, cfg, None)
    version = registry.register(model_uri, cfg.mlflow.model_name)
    alias_set = set_alias and registry.ensure_alias(cfg.mlflow.model_name, version, cfg.mlflow.alias)
    registry.write_json(Path(project_dir) / run.REQUEST_EXAMPLE_FILE, request)
    laps.lap("register")
    model_card.log_card(card, run_id, version)
    laps.lap("model_card")
    return run.TrainResult(
        run_id, cfg.mlflow.model_name, version, alias_set, evaluation.metrics, request, laps.seconds, stale, table, dataset.schema
    )
