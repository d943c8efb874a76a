"""The extra servers bench/serve_bench.py starts (uvicorn --factory --app-dir bench bench_apps:...)."""

from __future__ import annotations


def bare_app():
    """The HTTP ceiling: a FastAPI endpoint that returns a constant JSON, reading nothing."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/predict")
    async def predict():
        return {"prediction": "benign", "probabilities": {"malignant": 0.01, "benign": 0.99}, "model_version": 1}

    return app


def dataframe_app():
    """This API forced onto the pipeline's DataFrame path: the before, for the compiled path's after."""
    import app.store.loading as loading
    import app.store.serving as model_store
    from app.main import create_app
    from app.predict.predictor import Predictor

    # Through MLflow and the unpickled pipeline, never the compiled file training logged.
    model_store.read_compiled = lambda tracking_uri, name, target: None
    loading.build_predictor = lambda pipeline, schema, example: Predictor(schema, pipeline=pipeline)
    return create_app()


def uncoalesced_app():
    """This API with every request predicted on its own (no dynamic batching): what app/coalesce.py buys."""
    import app.predict.endpoint as endpoint
    from app.main import create_app

    endpoint.MAX_COALESCED_ROWS = 0
    return create_app()


def unfrozen_app():
    """This API without freezing its start-up heap: what the frozen heap buys (app/main.py, lifespan)."""
    import gc

    from app.main import create_app

    gc.freeze = lambda: None  # this server process only
    return create_app()


def bare_asgi():
    """Below the ceiling's framework: a plain ASGI callable under the same uvicorn (what the transport allows)."""
    body = b'{"prediction":"benign","probabilities":{"malignant":0.01,"benign":0.99},"model_version":1}'
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    return app
