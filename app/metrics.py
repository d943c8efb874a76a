"""GET /metrics: the API's Prometheus metrics (prometheus_client), right with one worker or several.

One worker: the metrics live in this app's own registry. Several uvicorn workers share nothing, so
each would answer a scrape with its own counts; prometheus_client's multiprocess mode writes every
worker's values to files in PROMETHEUS_MULTIPROC_DIR and a scrape sums them. `invoke serve --workers N`
creates a fresh folder for each start and removes it after (cli/serving.py); prometheus_client reads
the variable when first imported, so it must be set before the workers start.

Recording is on the hot path of /predict: children of labelled metrics are bound once (a dict lookup
per request, not `labels()`), and each record is one `inc` or `observe`.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from pathlib import Path
from time import perf_counter

import numpy as np
from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import multiprocess

from app.auth import SECURITY, token_checker

PREDICT = "/predict"
# /predict answers in well under a millisecond; Prometheus' default buckets start at 5 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)
# A regression target can be on any scale: powers of ten on both sides of zero.
VALUE_BUCKETS = (*(-(10.0**e) for e in range(6, -4, -1)), 0.0, *(10.0**e for e in range(-3, 7)))
PREDICT_STATUSES = (200, 401, 413, 422, 503)
UNMATCHED = "unmatched"  # requests no route matched: one label value, whatever path was asked for


class Metrics:
    """The metrics of one app. `multiprocess_dir`: PROMETHEUS_MULTIPROC_DIR when several workers share it."""

    def __init__(self, multiprocess_dir: Path | None = None):
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        # In multiprocess mode metrics are registered nowhere: a scrape reads every worker's files instead.
        registry = None if multiprocess_dir else self.registry
        if registry is not None:
            ProcessCollector(registry=registry)
        self._registry_for_new = registry
        self.requests = Counter("tand_http_requests", "HTTP requests answered, by route and status.", ["route", "status"], registry=registry)
        self.latency = Histogram(
            "tand_http_request_duration_seconds", "Time from the request to its answer, by route.", ["route"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.rows = Histogram("tand_predict_rows", "Rows per answered /predict request.", buckets=ROW_BUCKETS, registry=registry)
        self.predictions = Counter("tand_predictions", "Predicted labels, by class (classification).", ["class"], registry=registry)
        self._predicted_values: Histogram | None = None  # regression only: created with the first prediction
        # Info is not supported in multiprocess mode: a gauge at 1 per served (name, version), the largest
        # over the live workers (so a version any worker serves shows 1 while workers converge).
        self.model_info = Gauge(
            "tand_model_info", "The served model: 1 for the name and version a worker serves.", ["name", "version"],
            multiprocess_mode="livemax", registry=registry,
        )
        self.reloads = Counter("tand_model_reloads", "Model versions loaded and swapped in (the first one at start-up included).", registry=registry)
        self.reload_failures = Counter(
            "tand_model_reload_failures", "Refreshes that failed (registry unreachable, load error, other inputs); the current model kept serving.",
            registry=registry,
        )
        self.log_drops = Counter("tand_prediction_log_dropped", "Prediction-log entries dropped because the sink fell behind.", registry=registry)
        self._predict_requests = {status: self.requests.labels(PREDICT, str(status)) for status in PREDICT_STATUSES}
        self._predict_latency = self.latency.labels(PREDICT)
        self._classes: dict[str, Counter] = {}
        self._served: tuple[str, str] | None = None

    # -- recording ---------------------------------------------------------------------------

    def predict_answered(self, status: int, seconds: float) -> None:
        child = self._predict_requests.get(status)
        (child if child is not None else self.requests.labels(PREDICT, str(status))).inc()
        self._predict_latency.observe(seconds)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def predicted(self, answers: list[dict], classification: bool) -> None:
        """Rows and predictions of one answered /predict request."""
        self.rows.observe(len(answers))
        if classification:
            if len(answers) == 1:
                self._class(answers[0]["prediction"]).inc()
            else:
                for label, count in Tally(answer["prediction"] for answer in answers).items():
                    self._class(label).inc(count)
        else:
            self._observe_values([answer["prediction"] for answer in answers])

    def count_log_drops(self, n: int = 1) -> None:
        """The prediction log dropped `n` entries (its queue was full): for the log's writer to call."""
        self.log_drops.inc(n)

    def model_swapped(self, name: str, version: int) -> None:
        """A new version serves in this process (app/store/serving.py calls it after the swap)."""
        self.reloads.inc()
        if self._served is not None:
            old = self.model_info.labels(*self._served)
            # A file of a worker keeps every series it wrote: 0 says "not served here any more".
            old.set(0) if self.multiprocess_dir else self.model_info.remove(*self._served)
        self._served = (name, str(version))
        self.model_info.labels(*self._served).set(1)

    def reload_failed(self) -> None:
        self.reload_failures.inc()

    def _class(self, label: str) -> Counter:
        child = self._classes.get(label)
        if child is None:
            child = self._classes[label] = self.predictions.labels(label)
        return child

    def _observe_values(self, values: list[float]) -> None:
        histogram = self._predicted_values
        if histogram is None:
            histogram = self._predicted_values = Histogram(
                "tand_predicted_value", "Predicted values (regression).", buckets=VALUE_BUCKETS, registry=self._registry_for_new,
            )
        if len(values) <= 16:
            for value in values:
                histogram.observe(value)
            return
        # A large batch in one pass: prometheus_client has no bulk observe, and one call per row costs
        # about a microsecond. The same bucket rule as Histogram.observe (the first bound >= the value).
        bounds = histogram._upper_bounds
        counts = np.bincount(np.searchsorted(bounds, np.asarray(values, dtype=np.float64), side="left"), minlength=len(bounds))
        for bucket, count in zip(histogram._buckets, counts.tolist()):
            if count:
                bucket.inc(count)
        histogram._sum.inc(float(np.sum(values)))

    # -- reading -----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format a scrape gets: this process's registry, or every worker's files."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)

    def process_exits(self) -> None:
        """At shutdown: this worker's live gauges (the model info) stop counting; its counters stay."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))


class MetricsMiddleware:
    """Counts and times every route but POST /predict, which records itself (app/predict/endpoint.py)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["path"] == PREDICT and scope["method"] == "POST"):
            return await self.app(scope, receive, send)
        started, status = perf_counter(), [500]  # an exception that escapes is answered 500 further out

        async def send_noting_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")
            self.metrics.answered(getattr(route, "path", UNMATCHED), status[0], perf_counter() - started)


def install_metrics(app: FastAPI, metrics: Metrics, api_token: str, public: bool) -> None:
    """GET /metrics (the API token unless `public`) and the middleware that counts the other routes."""
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    dependencies = [] if public else [Depends(token_checker(api_token))]

    @app.get(
        "/metrics",
        dependencies=dependencies,
        response_class=Response,
        summary="Prometheus metrics (text format)" + ("" if public else "; the API token unless METRICS_PUBLIC is set"),
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus' text exposition format."}},
        openapi_extra=None if public else {"security": SECURITY},
    )
    def scrape():  # a plain function: FastAPI runs it in a thread, off the event loop (it reads files)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
