"""Training orchestration: config → data → pipeline → fit → evaluate → MLflow run → registry.

Everything that can be checked before the MLflow run starts is checked before it:
a bad config or dataset registers nothing and leaves no run behind. A failure inside
the run marks it FAILED and registers nothing.

Fitting and metrics (PyTorch) run in a forked worker process while this process imports
MLflow and prepares the tracking store; then the worker renders the per-feature plots while
this process logs the model and renders the summary plots: on two cores that hides most of
MLflow's cost. Where fork is not available, or TAND_INLINE_FIT=1 is set (to step through your
preprocess hook in a debugger, or to profile), they run inline.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tand.config import Config
from tand.data import Dataset, Split, example_request, load_dataset, split
from tand.errors import ConfigError, TandError
from tand.evaluate import compute_metrics, predict
from tand.pipeline import build_pipeline
from tand.schema import FeatureSchema

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


@dataclass
class Evaluation:
    """What the worker sends back first: the fitted pipeline and its metrics (plots follow)."""

    pipeline: object
    metrics: dict[str, float]
    history: list[dict]
    seconds: dict[str, float]
    predictions: object = None  # the test split's, for the plots


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


def render_plots(parts: Split, predictions, schema: FeatureSchema, part: str) -> dict[str, bytes]:
    """One part of the test split's plots ("summary" or "features"), as PNG bytes keyed by file name."""
    import io

    from tand import plots

    if part == "summary":
        figures = plots.summary_figures(predictions)
    else:
        figures = plots.feature_figures(parts.X_test, predictions, schema)
    try:
        rendered = {}
        for name, figure in figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            rendered[name] = buffer.getvalue()
        return rendered
    finally:
        plots.close(figures)


def fit_and_evaluate(pipeline, parts: Split, schema: FeatureSchema) -> Evaluation:
    """Fit on the training split; metrics on both splits (plots: render_plots, on the test split)."""
    start = time.perf_counter()
    _fit(pipeline, parts)
    fitted = time.perf_counter()
    test = predict(pipeline, parts.X_test, parts.y_test, schema)
    metrics = {f"test_{k}": v for k, v in compute_metrics(test).items()}
    train_pred = predict(pipeline, parts.X_train, parts.y_train, schema)
    metrics.update({f"train_{k}": v for k, v in compute_metrics(train_pred).items()})
    seconds = {"fit": fitted - start, "metrics": time.perf_counter() - fitted}
    return Evaluation(pipeline, metrics, list(getattr(pipeline[-1], "history_", [])), seconds, test)


class _Worker:
    """Fitting, metrics and plots in a forked child (Linux), or inline where fork is not the safe default.

    The child sends the fitted pipeline and its metrics as soon as they exist, then renders the
    per-feature plots while this process logs the model and renders the summary plots."""

    def __init__(self, pipeline, parts: Split, schema: FeatureSchema):
        self._args = (pipeline, parts, schema)
        self._process = None
        self._evaluation = None
        if sys.platform == "linux" and os.environ.get("TAND_INLINE_FIT", "") in ("", "0"):
            context = multiprocessing.get_context("fork")
            self._reader, writer = context.Pipe(duplex=False)
            self._process = context.Process(target=self._main, args=(writer, *self._args), daemon=True)
            self._process.start()
            writer.close()

    @staticmethod
    def _main(writer, pipeline, parts, schema) -> None:
        try:
            evaluation = fit_and_evaluate(pipeline, parts, schema)
            writer.send(("ok", evaluation))
            started = time.perf_counter()
            plots = render_plots(parts, evaluation.predictions, schema, "features")
            writer.send(("ok", (plots, time.perf_counter() - started)))
        except TandError as exc:
            writer.send(("error", exc))
        except BaseException:
            writer.send(("crash", traceback.format_exc()))
        finally:
            writer.close()

    def _receive(self):
        try:
            status, payload = self._reader.recv()
        except EOFError:
            self._process.join()
            raise TandError(f"the training process died (exit code {self._process.exitcode}); out of memory?") from None
        if status == "error":
            raise payload
        if status == "crash":
            raise RuntimeError(f"training failed in the worker process:\n{payload}")
        return payload

    def evaluation(self) -> Evaluation:
        if self._process is None:
            self._evaluation = fit_and_evaluate(*self._args)
            return self._evaluation
        return self._receive()

    def feature_plots(self) -> tuple[dict[str, bytes], float]:
        """(PNG bytes by file name, seconds spent rendering)."""
        if self._process is None:
            started = time.perf_counter()
            pipeline, parts, schema = self._args
            return render_plots(parts, self._evaluation.predictions, schema, "features"), time.perf_counter() - started
        plots = self._receive()
        self._process.join()
        return plots

    def stop(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join()


def _log_evaluation(run_id: str, evaluation: Evaluation) -> None:
    """Per-epoch curves and final metrics in one batch (one transaction, not one per epoch)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"epoch_{key}", float(value), now, int(record["epoch"]))
        for record in evaluation.history
        for key, value in record.items()
        if key != "epoch"
    ]
    metrics += [Metric(key, float(value), now, 0) for key, value in evaluation.metrics.items()]
    MlflowClient().log_batch(run_id, metrics=metrics)


def _log_plots(plots: dict[str, bytes]) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        for name, png in plots.items():
            (Path(folder) / name).write_bytes(png)
        mlflow.log_artifacts(folder, "plots")


def _compiled_meta(dataset: Dataset, evaluation: Evaluation, request: dict) -> dict:
    """What the API shows beside a compiled model: the run's final metrics and /docs' example."""
    metrics = {f"epoch_{k}": v for k, v in (evaluation.history[-1] if evaluation.history else {}).items() if k != "epoch"}
    metrics.update(evaluation.metrics)
    return {"schema": dataset.schema.to_dict(), "metrics": metrics, "example": request}


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

    worker = _Worker(pipeline, parts, dataset.schema)
    try:
        import mlflow

        from tand import registry, sqlite_store

        sqlite_store.create_if_missing(registry.tracking_uri())
        registry.check_reachable()
        experiment_id = registry.ensure_experiment(cfg.mlflow.experiment_name)
        lap("store")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_params(_params(cfg, dataset, parts))
            mlflow.log_dict(cfg.model_dump(by_alias=True, exclude_none=True), "config.json")
            registry.prepare_log_model()
            from tand import plots  # noqa: F401 - matplotlib's import, also done while the worker fits
            evaluation = worker.evaluation()
            lap("fit_wait")
            timings.update({f"worker_{k}": v for k, v in evaluation.seconds.items()})
            _log_evaluation(run.info.run_id, evaluation)
            mlflow.log_dict(dataset.schema.to_dict(), "feature_schema.json")
            mlflow.log_dict(request, REQUEST_EXAMPLE_FILE)
            lap("log_metrics")
            # Meanwhile the worker renders the per-feature plots.
            model = registry.log_model(
                evaluation.pipeline, dataset.schema, pd.DataFrame([request]), _signature(evaluation.pipeline, parts.X_train)
            )
            registry.log_compiled(model.model_id, evaluation.pipeline, parts.X_test, _compiled_meta(dataset, evaluation, request))
            lap("log_model")
            rendered = render_plots(parts, evaluation.predictions, dataset.schema, "summary")
            lap("plots")
            features, timings["worker_plots"] = worker.feature_plots()
            _log_plots({**rendered, **features})
            lap("plots_wait")
    finally:
        worker.stop()
    version = registry.register(model.model_uri, cfg.mlflow.model_name)
    alias_set = registry.ensure_alias(cfg.mlflow.model_name, version, cfg.mlflow.alias)
    registry.write_json(Path(project_dir) / REQUEST_EXAMPLE_FILE, request)
    lap("register")
    return TrainResult(run.info.run_id, cfg.mlflow.model_name, version, alias_set, evaluation.metrics, request, timings)
