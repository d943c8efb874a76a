"""The two extra servers bench/serve_bench.py starts (uvicorn --factory --app-dir bench bench_apps:...)."""

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
    import app.loading as loading
    from app.main import create_app
    from app.predictor import Predictor

    loading.build_predictor = lambda pipeline, schema, example: Predictor(schema, pipeline=pipeline)
    return create_app()
