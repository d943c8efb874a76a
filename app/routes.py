"""The endpoints. /predict, the hot path, is answered by app.predict.endpoint; it is declared here for /docs."""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from app.auth import token_checker
from app.store.serving import ModelStore, SchemaMismatch
from app.predict.endpoint import PredictEndpoint, unavailable_detail
from app.predict.prediction_log import PredictionLog
from tand.errors import RegistryError
from tand.monitoring.model_card import read_card


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
    # Binary classification: the label is positive_class where its probability is >= threshold (None: argmax).
    positive_class: str | None = None
    threshold: float | None = None


def _unavailable(store: ModelStore) -> JSONResponse:
    return JSONResponse(unavailable_detail(store), status_code=503)


UNAVAILABLE = {503: {"model": Detail, "description": "No model is loaded (yet): the reason."}}
UNAUTHORIZED = {401: {"model": Detail, "description": "Missing or wrong API token."}}


def json_errors(responses: dict) -> dict:
    """Error answers declared as JSON for a route whose own answer is another type (FastAPI would give
    a `model` the route's media type, text/html)."""
    return {
        code: {"description": spec["description"], "content": {"application/json": {"schema": Detail.model_json_schema()}}}
        for code, spec in responses.items()
    }


PREDICT_RESPONSES = {
    **UNAUTHORIZED,
    413: {"model": Detail, "description": "Body over MAX_BODY_BYTES."},
    422: {"model": ValidationDetail, "description": "Invalid body: each error names its field."},
    **UNAVAILABLE,
}


def add_routes(app: FastAPI, store: ModelStore, api_token: str, max_body_bytes: int, prediction_log: PredictionLog | None = None) -> None:
    """The endpoints, registered on the app itself (FastAPI 0.165 matches an included router's routes
    through an extra layer). /predict first: the router tries routes in order. `prediction_log`: where
    /predict's answers are logged (None: off)."""
    authorized = [Depends(token_checker(api_token))]
    # A plain Starlette route with an ASGI endpoint: inside the middleware stack, without a route
    # function's request and response objects.
    app.router.add_route("/predict", PredictEndpoint(store, api_token, max_body_bytes, prediction_log), methods=["POST"], include_in_schema=False)

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
            "positive_class": served.schema.positive_class,
            "threshold": served.schema.threshold,
        }

    @app.get(
        "/model/card",
        dependencies=authorized,
        response_class=HTMLResponse,
        responses=json_errors({**UNAUTHORIZED, 404: {"description": "The served version has no model card."}, **UNAVAILABLE}),
        summary="The served version's model card: one self-contained HTML page",
    )
    async def model_card():
        served = store.current
        if served is None:
            return _unavailable(store)
        try:  # read through MLflow, off the event loop (the first call imports it)
            page = await asyncio.to_thread(read_card, store.settings.tracking_uri, served.run_id, "html")
        except RegistryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        if page is None:
            return JSONResponse({"detail": f"version {served.version} has no model card (trained before cards existed)"}, status_code=404)
        return HTMLResponse(page)
