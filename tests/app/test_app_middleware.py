"""A user's middleware and exception handlers apply to POST /predict as to every route (the hot path is
mounted inside FastAPI's stack, not ahead of it)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware

from app.main import create_app
from app_support import auth, settings


def test_user_middleware_runs_on_predict_for_every_answer(trained_model, tmp_path):
    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path))
    seen: list[tuple[str, str, int]] = []

    class Tagging(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            response = await call_next(request)
            seen.append(("class", request.url.path, response.status_code))
            response.headers["X-Class-Middleware"] = "yes"
            return response

    app.add_middleware(Tagging)

    @app.middleware("http")
    async def decorated(request, call_next):
        response = await call_next(request)
        seen.append(("decorator", request.url.path, response.status_code))
        response.headers["X-Decorated"] = "yes"
        return response

    with TestClient(app) as client:
        ok = client.post("/predict", json=trained_model.request, headers=auth())
        unauthorized = client.post("/predict", json=trained_model.request, headers=auth("wrong"))
        invalid = client.post("/predict", json={"nope": 1}, headers=auth())
    assert [ok.status_code, unauthorized.status_code, invalid.status_code] == [200, 401, 422]
    for answer in (ok, unauthorized, invalid):
        assert answer.headers["X-Class-Middleware"] == "yes" and answer.headers["X-Decorated"] == "yes"
    statuses = [200, 401, 422]
    assert [s for kind, path, s in seen if kind == "decorator" and path == "/predict"] == statuses
    assert [s for kind, path, s in seen if kind == "class" and path == "/predict"] == statuses


class Broken:
    """A predictor that fails with `error`, as a bug in a user's model code would."""

    batch_invariant = False

    def __init__(self, error: Exception):
        self.error = error

    def answers(self, rows):
        raise self.error


def post_to_broken(app, error: Exception, request: dict):
    import dataclasses

    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.store.current = dataclasses.replace(app.state.store.current, predictor=Broken(error))
        return client.post("/predict", json=request, headers=auth())


def test_an_error_inside_the_endpoint_answers_json_500_through_the_apps_handlers(trained_model, tmp_path):
    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path))
    answer = post_to_broken(app, RuntimeError("a bug in a predictor"), trained_model.request)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json" and "internal server error" in answer.json()["detail"]


def test_a_users_exception_handler_applies_to_predict(trained_model, tmp_path):
    from fastapi.responses import JSONResponse

    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path))

    @app.exception_handler(LookupError)
    async def lookup_error(request, exc):
        return JSONResponse({"detail": f"handled: {exc}"}, status_code=409)

    answer = post_to_broken(app, LookupError("from the user's own code"), trained_model.request)
    assert (answer.status_code, answer.json()) == (409, {"detail": "handled: from the user's own code"})
