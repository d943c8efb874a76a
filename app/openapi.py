"""The OpenAPI document, completed with what FastAPI cannot know from the code.

/predict is an ASGI endpoint that validates its body from raw bytes (faster than a FastAPI route
function), and its shape comes from the model loaded at run time, so its whole operation (fields,
types, categories, the example, the error answers) is written here, as are the token schemes.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pydantic.json_schema import models_json_schema

from app.auth import SECURITY, SECURITY_SCHEMES
from app.predict.predictor import OutOfRange
from app.routes import PREDICT_RESPONSES
from app.store.serving import ModelStore
from app.predict.parser import response_json_schemas

PROTECTED = (("/update-model", "post"), ("/model", "get"))
REF_TEMPLATE = "#/components/schemas/{model}"
FEATURES_REF = "#/components/schemas/Features"


def _predict_body(store: ModelStore) -> tuple[dict, dict, dict]:
    """(request body, 200 response, component schemas) for the served model; generic while none is loaded."""
    served = store.current
    if served is None:
        body = {"required": True, "content": {"application/json": {"schema": {"anyOf": [{"type": "object"}, {"type": "array"}]}}}}
        ok = {"description": "Predictions.", "content": {"application/json": {"schema": {"type": "object"}}}}
        return body, ok, {}
    parser, predictor = served.parser, served.predictor
    components = {"Features": parser.row_json_schema()}
    components.update(response_json_schemas(served.schema, predictor.has_probabilities, predictor.class_names))
    body = {
        "required": True,
        "content": {"application/json": {"schema": parser.body_json_schema(FEATURES_REF), "example": served.example}},
    }
    ok = {
        "description": "A prediction (object in) or a list of them (array in), with the version that answered.",
        "headers": {"X-Model-Version": {"description": "The model version that answered.", "schema": {"type": "integer"}}},
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/PredictionResponse"},
                        {"$ref": "#/components/schemas/BatchPredictionResponse"},
                    ]
                },
                "example": _example_answer(served),
            }
        },
    }
    return body, ok, components


def _example_answer(served) -> dict:
    """What the served version really answers to the documented example (not values made up from the schema)."""
    rows = served.schema.rows([served.example])
    try:
        answer = served.predictor.answers(rows)[0]
    except OutOfRange:  # documentation only: a model that cannot compute its example still serves
        return {"model_version": served.version}
    return {**answer, "model_version": served.version}


def _predict_operation(body: dict, ok: dict, components: dict) -> dict:
    """/predict's operation: an ASGI endpoint, so FastAPI cannot describe it from a route function."""
    _, definitions = models_json_schema(
        [(model["model"], "validation") for model in PREDICT_RESPONSES.values()], ref_template=REF_TEMPLATE
    )
    components.setdefault("schemas", {}).update(definitions.get("$defs", {}))
    responses = {"200": ok}
    for status, about in PREDICT_RESPONSES.items():
        schema = {"$ref": REF_TEMPLATE.format(model=about["model"].__name__)}
        responses[str(status)] = {"description": about["description"], "content": {"application/json": {"schema": schema}}}
    return {
        "summary": "Predict one row (a JSON object) or a batch (a JSON array)",
        "operationId": "predict",
        "requestBody": body,
        "responses": responses,
        "security": SECURITY,
    }


def install_openapi(app: FastAPI, store: ModelStore) -> None:
    cache: dict = {}

    def openapi() -> dict:
        served = store.current
        # The version too: the documented 200 example is that version's answer.
        key = (served.version, served.schema.features, served.schema.task, served.schema.classes) if served else None
        if key in cache:
            return cache[key]
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = document.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        for path, method in PROTECTED:
            document["paths"][path][method]["security"] = SECURITY
        body, ok, schemas = _predict_body(store)
        components.setdefault("schemas", {}).update(schemas)
        document["paths"] = {"/predict": {"post": _predict_operation(body, ok, components)}, **document["paths"]}
        if served is not None:  # one document per served version
            cache[key] = document
        return document

    app.openapi = openapi
