"""The served model: one immutable `ServedModel`, replaced in a single assignment when the alias moves.

A reload looks the alias up, loads the version beside the one serving (off the event loop,
in a thread), checks that it takes the same inputs, then swaps the reference. Requests in
flight keep the object they started with. One asyncio lock: concurrent reloads never load
twice at once. Every process also converges on the alias by itself (`keep_converging`):
workers and instances share nothing, and /update-model reaches only one of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from app.metrics import Metrics
from app.store.loading import load_from_registry
from app.predict.predictor import Predictor
from tand.tracking.compiled_files import read_compiled
from tand.tracking.lookup import AliasTarget, lookup_alias
from app.predict.parser import RequestParser
from app.settings import Settings
from app.store.snapshots import Snapshot, SnapshotCache
from tand.errors import TandError
from tand.schema import FeatureSchema

log = logging.getLogger("app")


class SchemaMismatch(TandError):
    """The alias points to a version that takes other inputs than the one serving."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    alias: str
    run_id: str
    target: AliasTarget
    schema: FeatureSchema
    metrics: dict
    example: dict
    predictor: Predictor
    parser: RequestParser
    # "snapshot" (a local file), "registry" (the compiled file logged with the version, read without
    # MLflow) or "mlflow" (the pickled pipeline, through MLflow: models that do not compile to NumPy)
    loaded_from: str


class ModelStore:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics(settings.metrics_dir)
        self.current: ServedModel | None = None
        self.last_error: str | None = "the model has not been loaded yet"
        self._lock = asyncio.Lock()
        self._rejected: tuple[AliasTarget, str] | None = None
        self._cache = SnapshotCache(settings.cache_dir, settings.model_name) if settings.cache_dir else None

    async def refresh(self) -> tuple[int | None, int]:
        """Converge on the alias; returns (previous version, serving version). Raises RegistryError or SchemaMismatch."""
        async with self._lock:
            previous = self.current
            try:
                target = await asyncio.to_thread(
                    lookup_alias, self.settings.tracking_uri, self.settings.model_name, self.settings.model_alias
                )
                if previous is not None and previous.target == target:
                    return previous.version, previous.version
                if self._rejected is not None and self._rejected[0] == target:
                    raise SchemaMismatch(self._rejected[1])
                loaded = await asyncio.to_thread(self.load, target)
                if previous is not None and not previous.schema.same_inputs(loaded.schema):
                    reason = _mismatch(previous, loaded)
                    self._rejected = (target, reason)
                    raise SchemaMismatch(reason)
            except TandError as exc:
                if previous is None:
                    self.last_error = str(exc)
                self.metrics.reload_failed()
                raise
            single_threaded_blas()  # a loaded model may have brought its own BLAS library
            self.current = loaded  # the swap
            self.metrics.model_swapped(loaded.name, loaded.version)
            self.last_error = None
            log.info(
                "serving %s version %d (alias %r, loaded from: %s, %s inference)%s",
                loaded.name, loaded.version, loaded.alias, loaded.loaded_from, loaded.predictor.inference,
                f"; was version {previous.version}" if previous else "",
            )
            return (previous.version if previous else None), loaded.version

    async def keep_converging(self, interval: float) -> None:
        """Check the alias every `interval` seconds, for ever (cancelled at shutdown)."""
        last_problem = None
        while True:
            await asyncio.sleep(interval if self.current is not None else min(interval, 5.0))
            try:
                await self.refresh()
                last_problem = None
            except TandError as exc:
                if str(exc) != last_problem:  # say it once, not every interval
                    log.warning("model refresh: %s; still serving %s", exc, _describe(self.current))
                    last_problem = str(exc)
            except Exception:  # noqa: BLE001 - a bug in a reload must not end convergence silently
                log.exception("model refresh failed; still serving %s", _describe(self.current))

    # -- loading (runs in a worker thread) -------------------------------------------------

    def load(self, target: AliasTarget) -> ServedModel:
        """The cheapest source first: a local snapshot, then `load_version` (the compiled file, MLflow)."""
        snapshot = self._cache.read(target) if self._cache else None
        if snapshot is not None:
            return self._served(target, snapshot.schema, snapshot.metrics, snapshot.example, snapshot.predictor(), "snapshot")
        loaded = load_version(self.settings.tracking_uri, self.settings.model_name, target)
        if self._cache is not None and loaded.snapshot is not None:
            self._cache.write(target, loaded.snapshot)
        return self._served(target, loaded.schema, loaded.metrics, loaded.example, loaded.predictor, loaded.loaded_from)

    def _served(self, target, schema, metrics, example, predictor, loaded_from) -> ServedModel:
        s = self.settings
        parser = RequestParser(schema, s.max_batch_rows)
        return ServedModel(
            s.model_name, target.version, s.model_alias, target.run_id, target, schema, metrics, example, predictor, parser, loaded_from
        )


@dataclass(frozen=True)
class Servable:
    """A version loaded for serving, and where it came from."""

    schema: FeatureSchema
    metrics: dict
    example: dict | None
    predictor: Predictor
    loaded_from: str  # "registry" (the compiled file logged with the version) or "mlflow"
    snapshot: Snapshot | None  # what a local snapshot of it holds (None: the model does not compile)


def load_version(tracking_uri: str, model_name: str, target: AliasTarget) -> Servable:
    """A registered version as the API serves it: the compiled file logged with it when there is one (no MLflow
    or scikit-learn import), else the pipeline through MLflow. `invoke predict` loads through this too."""
    logged = read_compiled(tracking_uri, model_name, target)
    if logged is not None:
        snapshot = Snapshot.from_loaded(*logged)
        return Servable(snapshot.schema, snapshot.metrics, snapshot.example, snapshot.predictor(), "registry", snapshot)
    loaded = load_from_registry(tracking_uri, model_name, target.version)
    parts = loaded.predictor.snapshot_parts
    snapshot = Snapshot(loaded.schema, loaded.metrics, loaded.example, *parts) if parts is not None else None
    return Servable(loaded.schema, loaded.metrics, loaded.example, loaded.predictor, "mlflow", snapshot)


def single_threaded_blas():
    """One BLAS thread per process. Threads that fight over the cores uvicorn workers already use make a
    1,000-row batch several times slower (measured: 0.7 ms vs 8 ms for the MLP's matrix products on 2 cores).
    Returns the limiter, whose restore_original_limits() undoes it."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _mismatch(serving: ServedModel, candidate: ServedModel) -> str:
    details = serving.schema.describe_difference(candidate.schema)
    return (
        f"version {candidate.version} takes different inputs than version {serving.version}, which keeps serving "
        f"({details}); restart the API to switch to it on purpose"
    )


def _describe(served: ServedModel | None) -> str:
    return f"version {served.version}" if served else "no model"
