"""The endpoints. /predict is the hot path: raw body bytes → pydantic-core → NumPy → one JSON write."""

from __future__ import annotations

from time import perf_counter

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.routing import Route

from app.limits import BodyTooLarge, read_body, too_large
from app.model_store import ModelStore, SchemaMismatch
from app.predictor import OutOfRange
from app.schemas import MAX_ERRORS, RequestError
from tand.errors import RegistryError

# Larger batches are predicted in a thread so the event loop keeps answering health checks.
THREAD_ROWS = 256


class Detail(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationDetail(BaseModel):
    detail: list[FieldError]


class ModelRef(BaseModel):
    name: str
    version: int
    alias: str


class Status(BaseModel):
    status: str
    model: ModelRef


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model_version: int


class UpdateResult(BaseModel):
    version: int
    previous: int | None


class ModelInfo(BaseModel):
    name: str
    version: int
    alias: str
    run_id: str
    metrics: dict[str, float]
    feature_schema: dict
    loaded_from: str
    inference: str


def _unavailable(store: ModelStore) -> JSONResponse:
    return JSONResponse({"detail": f"no model is loaded yet: {store.last_error}"}, status_code=503)


def _out_of_range(exc: OutOfRange, batch: bool) -> list[dict]:
    errors = []
    for row, feature in exc.problems[:MAX_ERRORS]:
        loc = ["body", *([row] if batch else []), *([feature] if feature else [])]
        what = "this value is" if feature else "these values are"
        errors.append({"loc": loc, "msg": f"{what} too far out of range for the model to compute with", "type": "value_out_of_range"})
    return errors


UNAVAILABLE = {503: {"model": Detail, "description": "No model is loaded (yet): the reason."}}
UNAUTHORIZED = {401: {"model": Detail, "description": "Missing or wrong API token."}}


def add_routes(app: FastAPI, store: ModelStore, require_token, max_body_bytes: int) -> None:
    """The endpoints, registered on the app itself (FastAPI 0.165 matches an included router's routes
    through an extra layer)."""
    authorized = [Depends(require_token)]

    @app.get("/", response_model=Status, responses=UNAVAILABLE, summary="Health and the model being served")
    async def root():
        served = store.current
        if served is None:
            return _unavailable(store)
        return {"status": "ok", "model": {"name": served.name, "version": served.version, "alias": served.alias}}

    @app.get("/health/live", response_model=Liveness, summary="The process is up (always 200)")
    async def live():
        return {"status": "alive"}

    @app.get("/health/ready", response_model=Readiness, responses=UNAVAILABLE, summary="A model is loaded")
    async def ready():
        served = store.current
        if served is None:
            return _unavailable(store)
        return {"status": "ready", "model_version": served.version}

    async def predict(request: Request) -> Response:
        await require_token(request)
        served = store.current  # one reference for the whole request, even if a reload swaps it meanwhile
        if served is None:
            return _unavailable(store)
        started = perf_counter()
        try:
            body = await read_body(request, max_body_bytes)
        except BodyTooLarge:
            return too_large(max_body_bytes)
        try:
            rows, batch = served.parser.parse(body)
            if len(rows) > THREAD_ROWS:
                answers = await run_in_threadpool(served.predictor.answers, rows)
            else:
                answers = served.predictor.answers(rows)
        except RequestError as exc:
            return JSONResponse({"detail": exc.errors}, status_code=422)
        except OutOfRange as exc:
            return JSONResponse({"detail": _out_of_range(exc, batch)}, status_code=422)
        version = served.version
        payload = {"predictions": answers, "model_version": version} if batch else {**answers[0], "model_version": version}
        content = to_json(payload)
        # Server-Timing: reading, validating, predicting and encoding, in milliseconds (the benchmark reads it).
        headers = {"X-Model-Version": str(version), "Server-Timing": f"app;dur={(perf_counter() - started) * 1000:.3f}"}
        return Response(content, media_type="application/json", headers=headers)

    # /predict is documented as a FastAPI route (OpenAPI, /docs) but served by a plain Starlette route
    # tried first: FastAPI's per-request dependency solving and response handling cost about 50 µs, a
    # quarter of a single-row prediction (measured in-process). Same function, same exception handlers.
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        summary="Predict one row (a JSON object) or a batch (a JSON array)",
        responses={
            **UNAUTHORIZED,
            413: {"model": Detail, "description": "Body over MAX_BODY_BYTES."},
            422: {"model": ValidationDetail, "description": "Invalid body: each error names its field."},
            **UNAVAILABLE,
        },
    )
    app.router.routes.insert(0, Route("/predict", predict, methods=["POST"]))

    @app.post(
        "/update-model",
        dependencies=authorized,
        response_model=UpdateResult,
        summary="Load the version the alias points to now; the current one serves until it is ready",
        responses={
            **UNAUTHORIZED,
            422: {"model": Detail, "description": "The new version takes other inputs; the current one keeps serving."},
            503: {"model": Detail, "description": "Registry unreachable or alias pointing nowhere; the current one keeps serving."},
        },
    )
    async def update_model():
        try:
            previous, version = await store.refresh()
        except RegistryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        except SchemaMismatch as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return {"version": version, "previous": previous}

    @app.get(
        "/model",
        dependencies=authorized,
        response_model=ModelInfo,
        responses={**UNAUTHORIZED, **UNAVAILABLE},
        summary="The served version: run, training metrics, feature schema",
    )
    async def model_info():
        served = store.current
        if served is None:
            return _unavailable(store)
        return {
            "name": served.name,
            "version": served.version,
            "alias": served.alias,
            "run_id": served.run_id,
            "metrics": served.metrics,
            "feature_schema": served.schema.to_dict(),
            "loaded_from": served.loaded_from,
            "inference": served.predictor.inference,
        }
