"""Training orchestration: config → data → pipeline → fit → evaluate → MLflow run → registry.

Everything that can be checked before the MLflow run starts is checked before it:
a bad config or dataset registers nothing and leaves no run behind. A failure inside
the run marks it FAILED and registers nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from tand import registry
from tand.config import Config
from tand.data import Dataset, Split, example_request, load_dataset, split
from tand.errors import ConfigError
from tand.evaluate import compute_metrics, predict
from tand.pipeline import build_pipeline

log = logging.getLogger(__name__)
REQUEST_EXAMPLE_FILE = "request_model.json"


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    version: int
    alias_set: bool
    metrics: dict[str, float]
    request_example: dict
    timings: dict[str, float] = field(default_factory=dict)


def _flatten(prefix: str, data: dict) -> dict[str, str]:
    flat = {}
    for key, value in data.items():
        if key == "help" or value is None:
            continue
        name = f"{prefix}.{key}"
        flat.update(_flatten(name, value) if isinstance(value, dict) else {name: str(value)[:6000]})
    return flat


def _params(cfg: Config, dataset: Dataset, parts: Split) -> dict[str, str]:
    params = _flatten("train", cfg.train.model_dump(exclude={"help"}))
    params.update(_flatten("mlflow", cfg.mlflow.model_dump(exclude={"help"})))
    schema = dataset.schema
    params.update(
        {
            "data.rows": str(len(dataset.X)),
            "data.features": str(dataset.X.shape[1]),
            "data.train_rows": str(len(parts.X_train)),
            "data.test_rows": str(len(parts.X_test)),
            "features.numeric": ",".join(schema.numeric)[:6000] or "-",
            "features.categorical": ",".join(schema.categorical)[:6000] or "-",
        }
    )
    return params


def _fit(pipeline, parts: Split) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        pipeline.fit(parts.X_train, parts.y_train)
    except InvalidParameterError as exc:
        raise ConfigError(f"train.model_args: {exc}") from None


def _log_history(pipeline) -> None:
    for record in getattr(pipeline[-1], "history_", []):
        step = record["epoch"]
        mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"}, step=step)


def _log_plots(parts: Split, predictions, schema) -> None:
    from tand import plots

    figures = plots.evaluation_figures(parts.X_test, predictions, schema)
    try:
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"plots/{name}")
    finally:
        plots.close(figures)


def _signature(pipeline, X: pd.DataFrame):
    from mlflow.models import infer_signature

    sample = X.head(20)
    return infer_signature(sample, pipeline.predict(sample))


def train(cfg: Config, project_dir: str | Path = ".", progress: bool = True) -> TrainResult:
    """Train, evaluate, log and register one model as `cfg` describes."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    dataset = load_dataset(cfg.train)
    parts = split(dataset, cfg.train.test_size, cfg.train.seed)
    pipeline = build_pipeline(dataset.schema, cfg.train, progress=progress)
    request = example_request(dataset)
    lap("data")

    registry.check_reachable()
    experiment_id = registry.ensure_experiment(cfg.mlflow.experiment_name)
    lap("store")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(_params(cfg, dataset, parts))
        mlflow.log_dict(cfg.model_dump(by_alias=True, exclude_none=True), "config.json")
        _fit(pipeline, parts)
        lap("fit")
        _log_history(pipeline)
        test = predict(pipeline, parts.X_test, parts.y_test, dataset.schema)
        metrics = {f"test_{k}": v for k, v in compute_metrics(test).items()}
        train_pred = predict(pipeline, parts.X_train, parts.y_train, dataset.schema)
        metrics.update({f"train_{k}": v for k, v in compute_metrics(train_pred).items()})
        mlflow.log_metrics(metrics)
        _log_plots(parts, test, dataset.schema)
        lap("evaluate")
        mlflow.log_dict(dataset.schema.to_dict(), "feature_schema.json")
        mlflow.log_dict(request, REQUEST_EXAMPLE_FILE)
        model_uri = registry.log_model(
            pipeline, dataset.schema, pd.DataFrame([request]), _signature(pipeline, parts.X_train)
        )
        lap("log_model")
    version = registry.register(model_uri, cfg.mlflow.model_name)
    alias_set = registry.ensure_alias(cfg.mlflow.model_name, version, cfg.mlflow.alias)
    registry.write_json(Path(project_dir) / REQUEST_EXAMPLE_FILE, request)
    lap("register")
    return TrainResult(run.info.run_id, cfg.mlflow.model_name, version, alias_set, metrics, request, timings)
