"""The app factory: `uvicorn --factory app.main:create_app`.

No work at import time. `create_app(settings)` builds the app; the model loads in the lifespan
handler (before uvicorn reports "Application startup complete"), and a background task keeps
each process converging on the registry alias. Without a loadable model the process still
starts: /health/live answers 200, readiness and /predict 503, and the refresh keeps trying.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.store.serving import ModelStore, single_threaded_blas
from app.docs import install_docs
from app.metrics import Metrics, install_metrics
from app.openapi import install_openapi
from app.predict.prediction_log import PredictionLog
from app.routes import add_routes
from app.settings import Settings, SettingsError
from tand.errors import TandError

log = logging.getLogger("app")

DESCRIPTION = """Predictions from the model the MLflow registry alias points to.

Send the API token in the `TOKEN` header (or `Authorization: Bearer <token>`). `POST /predict` takes
one JSON object of features, or a JSON array of them for a batch; each answer names the model
version that produced it (`model_version`, header `X-Model-Version`)."""


def _configure_logging() -> None:
    # uvicorn configures only its own loggers; ours gets the same look on stderr.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     [app] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _settings_from_env_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        # One line and exit status 1: uvicorn would otherwise print a traceback.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's default is a plain-text 500; every answer of this API is JSON. The traceback still
    # reaches the server log (ServerErrorMiddleware re-raises after answering).
    return JSONResponse({"detail": "internal server error; the server log has the details"}, status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or _settings_from_env_or_exit()
    _configure_logging()
    if settings.uses_example_token:
        log.warning(
            "!!! API_TOKEN is the example value from env_files/app.env: anyone who has read this template can "
            "call this API. Set your own: export API_TOKEN=$(python -c \"import secrets; print(secrets.token_urlsafe(32))\")"
        )
    metrics = Metrics(settings.metrics_dir)
    store = ModelStore(settings, metrics)
    prediction_log = PredictionLog(settings.prediction_log, metrics) if settings.prediction_log else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        blas = single_threaded_blas()
        # Python's full garbage collections walk every object the imports made (about 66,000 here, 40-50 ms
        # a time); under load they come every few ten thousand requests and stall every request in flight
        # (p99 at 64 connections: 38 ms, 8-10 ms frozen; bench/serve_bench.py). Frozen, they are skipped.
        # Frozen before the model loads, so a replaced model's objects can still be collected.
        gc.collect()
        gc.freeze()
        task = None
        if prediction_log is not None:
            prediction_log.start()  # its thread opens the sink: an unreachable one is logged, never fatal
        try:
            try:
                await store.refresh()
            except TandError as exc:
                log.error("no model loaded at start-up: %s", exc)
            if settings.refresh_interval > 0:
                task = asyncio.create_task(store.keep_converging(settings.refresh_interval))
            elif store.current is None:
                log.error("MODEL_REFRESH_INTERVAL is 0: call POST /update-model once the registry is ready")
            yield
        finally:
            if task is not None:
                task.cancel()
            if prediction_log is not None:
                await asyncio.to_thread(prediction_log.stop)  # writes what is waiting, then closes the sink
            blas.restore_original_limits()
            metrics.process_exits()
            gc.unfreeze()  # an app inside a longer-lived process (tests, notebooks) gives its heap back

    app = FastAPI(
        title="Prediction API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        docs_url=None,  # app.docs serves it without a CDN
        exception_handlers={Exception: _internal_error},
    )
    app.state.store = store
    app.state.settings = settings
    app.state.metrics = metrics  # count_log_drops() for the prediction log
    add_routes(app, store, settings.api_token, settings.max_body_bytes, prediction_log)
    install_metrics(app, metrics, settings.api_token, settings.metrics_public)
    install_openapi(app, store)
    install_docs(app)
    return app

