"""Training orchestration: config → data → pipeline → fit → evaluate → MLflow run → registry.

Everything that can be checked before the MLflow run starts is checked before it:
a bad config or dataset registers nothing and leaves no run behind. A failure inside
the run marks it FAILED and registers nothing.

With `processes=True` (`invoke train`) the work is shared with other processes
(tand.training.workers): for the PyTorch MLP, one imports PyTorch and trains the network; fitting,
metrics and plots run in another, while this one imports MLflow, prepares the store, and logs. This
module imports pandas and scikit-learn only after the PyTorch process has started, so those imports
overlap. By default (a notebook, a debugger) all of it runs in the caller's process.

With `model: "auto"` the selection (tand.training.auto) runs first, in this process, before the MLflow run
starts (a bad config or dataset still leaves no run); then the winner is refitted on the whole training
split and evaluated on the test split as if the config had named it, also in this process (the selection
has imported what the refit needs). The run logs the winner's train section as params, `auto.winner`, one
nested run per candidate and the leaderboard (tand.training.leaderboard).
"""

from __future__ import annotations

import errno
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tand.config import Config
from tand.errors import TandError

if TYPE_CHECKING:
    from tand.schema import FeatureSchema
    from tand.training.auto import Selection
    from tand.training.data import Dataset, Split
    from tand.training.fitting import Evaluation

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
    stale_runs_failed: list[str] = field(default_factory=list)  # RUNNING runs of dead processes, now FAILED
    leaderboard: list[dict] = field(default_factory=list)  # model "auto": one row per candidate, best first
    schema: FeatureSchema | None = None  # the inputs as inferred from the data (`invoke train` prints them)


class DiskFull(TandError):
    pass


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
            # On a Dask cluster, X and X_train are local samples; `rows`, `train_rows`: the whole frame's counts.
            "data.rows": str(getattr(dataset, "rows", len(dataset.X))),
            "data.features": str(dataset.X.shape[1]),
            "data.train_rows": str(getattr(parts, "train_rows", len(parts.X_train))),
            "data.test_rows": str(len(parts.X_test)),
            "features.numeric": ",".join(schema.numeric)[:6000] or "-",
            "features.categorical": ",".join(schema.categorical)[:6000] or "-",
        }
    )
    return params


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


def _compiled_meta(schema, evaluation: Evaluation, request: dict) -> dict:
    """What the API shows beside a compiled model: the run's final metrics and /docs' example."""
    metrics = {f"epoch_{k}": v for k, v in (evaluation.history[-1] if evaluation.history else {}).items() if k != "epoch"}
    metrics.update(evaluation.metrics)
    return {"schema": schema.to_dict(), "metrics": metrics, "example": request}


def _signature(pipeline, X):
    from mlflow.models import infer_signature

    from tand.tracking import registry

    sample = X.head(20)
    with registry.without_known_mlflow_notices():
        return infer_signature(sample, pipeline.predict(sample))


def _start_torch_process(cfg: Config):
    """The process that imports PyTorch now and trains the network later, when the model is the MLP."""
    from tand.training import fitting, workers

    if cfg.train.framework != "pytorch":
        return None
    return workers.TorchProcess(meanwhile=fitting.prepare_imports)


class _Laps:
    """Seconds per phase, in the order they ran (`invoke train` prints them; bench/train_bench.py reads them)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._clock = now - self._clock, now


def _disk_full(exc: BaseException) -> DiskFull | None:
    """A DiskFull naming what was being written when `exc`, or what it was raised during, is a full
    disk (MLflow and SQLAlchemy wrap the OSError, or raise their own while marking the run FAILED)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = exc.filename2 or exc.filename or _run_artifacts()  # a copy's destination is filename2
            return DiskFull(f"disk full while writing {where}; free some space there and train again")
        if "database or disk is full" in str(exc):
            return DiskFull("disk full while writing the tracking database; free some space there and train again")
        exc = exc.__cause__ or exc.__context__
    return None


def _run_artifacts() -> str:
    import mlflow

    try:
        run = mlflow.last_active_run()
    except Exception:  # noqa: BLE001 - only to name the place in the message; the store may be what failed
        run = None
    return f"the run's artifacts in {run.info.artifact_uri}" if run is not None else "the run's artifacts"


def train(
    cfg: Config, project_dir: str | Path = ".", progress: bool = True, processes: bool = False, set_alias: bool = True,
    dask: str | None = None,
) -> TrainResult:
    """Train, evaluate, log and register one model as `cfg` describes. `processes=True` (what `invoke train`
    does, on Linux) shares the work between processes (tand.training.workers); by default everything
    runs here, in the caller's process. A full disk is one DiskFull (the run marked FAILED when the
    store can still record it). `set_alias=False` (`invoke tune`) registers the version without giving
    it the alias, even when it is the model's first. `dask`: a Dask scheduler's address (tcp://host:8786):
    the boosting model trains on that cluster (tand.training.distributed)."""
    try:
        if dask:
            from tand.training.distributed import train_on_cluster

            return train_on_cluster(cfg, dask, project_dir, progress, set_alias)
        return _train(cfg, project_dir, progress, processes, set_alias)
    except Exception as exc:  # noqa: BLE001 - only a full disk is translated; anything else re-raised as is
        full = _disk_full(exc)
        if full is None:
            raise
        raise full from None


def _train(cfg: Config, project_dir: str | Path, progress: bool, processes: bool, set_alias: bool) -> TrainResult:
    laps = _Laps()
    from tand.training import workers

    processes = processes and workers.available() and cfg.train.framework != "auto"
    torch_process = _start_torch_process(cfg) if processes else None
    worker = None
    try:
        from tand.training.data import load_dataset, split
        from tand.training.request_example import example_request
        from tand.training.pipeline import build_pipeline
        from tand.training import memory
        from tand.monitoring import model_card

        digest = model_card.digest_beside(cfg.train.data_path) if processes else None  # while the data is read
        dataset = load_dataset(cfg.train)
        model_card.check_slices(cfg.model_card, dataset.schema)
        parts = split(dataset, cfg.train.test_size, cfg.train.seed)
        requested, selection = cfg, None
        if cfg.train.framework == "auto":
            cfg, dataset, selection = _select(cfg, dataset, parts, progress)
            laps.lap("select")
        memory.check(dataset.schema, cfg.train, len(parts.X_train))  # one line, not the OOM killer
        pipeline = build_pipeline(dataset.schema, cfg.train, progress=progress)
        request = example_request(dataset)
        laps.lap("data")
        worker = workers.FitWorker(
            pipeline, parts, dataset.schema, torch_process,
            fork=processes, threshold=cfg.train.threshold, cv_folds=cfg.train.cv_folds,
        )
        run_id, model_uri, evaluation, stale, table, card = _tracked_run(
            cfg, dataset, parts, request, worker, laps, requested, selection, digest
        )
    finally:
        if worker is not None:
            worker.stop()
        if torch_process is not None:
            torch_process.stop()
    from tand.tracking import registry

    version = registry.register(model_uri, cfg.mlflow.model_name)
    alias_set = set_alias and registry.ensure_alias(cfg.mlflow.model_name, version, cfg.mlflow.alias)
    registry.write_json(Path(project_dir) / REQUEST_EXAMPLE_FILE, request)
    laps.lap("register")
    model_card.log_card(card, run_id, version)  # rendered once the version number is known
    laps.lap("model_card")
    return TrainResult(
        run_id, cfg.mlflow.model_name, version, alias_set, evaluation.metrics, request, laps.seconds, stale, table, dataset.schema
    )


def _select(cfg: Config, dataset: Dataset, parts: Split, progress: bool):
    """Model "auto": the config and dataset as if the config had named the winner, and the Selection."""
    from tand.training import auto

    selection = auto.select(cfg.train, dataset.schema, parts.X_train, parts.y_train, auto.stderr_report if progress else None)
    cfg = cfg.model_copy(update={"train": selection.winner})
    schema = replace(dataset.schema, framework=cfg.train.framework, model=selection.winner_name)
    return cfg, replace(dataset, schema=schema), selection


def _open_store(cfg: Config, schema) -> tuple[str, list[str]]:
    """Create the embedded store if it is new, check that the store answers and the model name is free for this
    schema; (the experiment's id, ids of the stale runs marked FAILED)."""
    from tand.tracking import embedded, registry, runs

    embedded.create_if_missing(registry.tracking_uri())
    registry.check_reachable()
    registry.check_model_name(cfg.mlflow.model_name, schema)
    experiment_id = registry.ensure_experiment(cfg.mlflow.experiment_name)
    return experiment_id, runs.fail_stale_runs(experiment_id)


def _tracked_run(
    cfg: Config, dataset: Dataset, parts: Split, request: dict, worker, laps: _Laps, requested: Config, selection, digest=None
):
    """The MLflow run: set up the store while the worker fits, then log what it sends. `requested`: the
    config as written (model "auto" for a selection, whose winner `cfg` names).
    Returns (run id, logged model URI, evaluation, ids of stale runs marked FAILED, the auto leaderboard, the model card)."""
    if worker.forked:  # beside the fit: at the lowest priority, so as not to stall its threads
        from tand.training.workers import at_low_priority

        experiment_id, stale = at_low_priority(_open_store, cfg, dataset.schema)  # MLflow is imported there
    else:
        experiment_id, stale = _open_store(cfg, dataset.schema)
    laps.lap("store")
    import mlflow
    import pandas as pd

    from tand.tracking import registry, runs
    from tand.monitoring import model_card
    from tand.training import leaderboard

    with mlflow.start_run(experiment_id=experiment_id, tags=runs.owner_tags()) as run:
        mlflow.log_params(_params(cfg, dataset, parts))
        mlflow.log_dict(requested.model_dump(by_alias=True, exclude_none=True), "config.json")
        table = leaderboard.log_selection(run.info.run_id, experiment_id, selection) if selection is not None else []
        evaluation = worker.evaluation()
        laps.lap("fit_wait")
        laps.seconds.update({f"worker_{k}": v for k, v in evaluation.seconds.items()})
        schema = evaluation.schema or dataset.schema  # fitting may have set the decision threshold
        _log_evaluation(run.info.run_id, evaluation)
        mlflow.log_dict(schema.to_dict(), "feature_schema.json")
        from tand.monitoring import profile  # what `invoke drift` compares logged requests with

        mlflow.log_dict(profile.build(parts.X_train, schema, evaluation.predictions), profile.PROFILE_FILE)
        mlflow.log_dict(request, REQUEST_EXAMPLE_FILE)
        laps.lap("log_metrics")
        # Meanwhile the worker renders the plots: the model and the card's content are done before waiting for them.
        pipeline = evaluation.pipeline
        model = registry.log_model(pipeline, schema, pd.DataFrame([request]), _signature(pipeline, parts.X_train))
        registry.log_compiled(model.model_id, pipeline, parts.X_test, _compiled_meta(schema, evaluation, request))
        laps.lap("log_model")
        card = model_card.build(cfg, dataset, parts, evaluation, schema, run.info.run_id, digest)  # beside the plots
        laps.lap("model_card_build")
        plots, laps.seconds["worker_plots"] = worker.plots()
        _log_plots(plots)
        model_card.attach_plots(card, plots)
        laps.lap("plots_wait")
    return run.info.run_id, model.model_uri, evaluation, stale, table, card
