"""Loading a registered version through MLflow, and choosing the fastest predictor that answers as it does.

The slow path of a (re)load: it imports MLflow and scikit-learn and unpickles the pipeline.
Only from our registry, by model name and version: never a path or URI from a request.
The tracking URI is passed explicitly, never set globally, so a process (or a test session)
can hold several stores.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from app.predict.predictor import Predictor
from tand.tracking.sql import unreachable
from app.predict.parser import example_from_schema
from tand.errors import NOT_FOUND_CODES, RegistryError
from tand.schema import FeatureSchema

log = logging.getLogger("app")


@dataclass(frozen=True)
class LoadedVersion:
    run_id: str
    schema: FeatureSchema
    metrics: dict
    example: dict
    predictor: Predictor


def _quiet_mlflow_defaults() -> None:
    # MLflow's defaults retry a dead tracking server for minutes; a reload should fail in seconds.
    for key, value in {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        os.environ.setdefault(key, value)


def load_from_registry(tracking_uri: str, name: str, version: int) -> LoadedVersion:
    _quiet_mlflow_defaults()
    import mlflow.sklearn
    import sqlalchemy.exc
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tand.tracking.registry import read_schema

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    step = "registry"
    try:
        model_version = client.get_model_version(name, str(version))
        run_id = model_version.run_id or ""
        metrics = dict(client.get_run(run_id).data.metrics) if run_id else {}
        step = "files"
        # The version's own storage location, not models:/name/version: MLflow resolves that one
        # through the process-wide registry URI, whatever client asked.
        location = client.get_model_version_download_uri(name, str(version))
        local_dir = mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=tracking_uri)
        schema = read_schema(local_dir)
        pipeline = mlflow.sklearn.load_model(local_dir)
    except MlflowException as exc:
        if step == "files":
            raise RegistryError(f"model {name!r} version {version}: its files cannot be read ({_first_line(exc)})") from None
        if exc.error_code in NOT_FOUND_CODES:
            raise RegistryError(f"model {name!r} has no version {version} in the registry") from None
        raise unreachable(tracking_uri, _first_line(exc)) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise unreachable(tracking_uri, _first_line(exc)) from None
    except OSError as exc:
        raise RegistryError(f"model {name!r} version {version}: its files cannot be read ({exc})") from None
    except (ImportError, AttributeError, EOFError, pickle.UnpicklingError) as exc:
        raise RegistryError(f"model {name!r} version {version} cannot be loaded here ({type(exc).__name__}: {exc})") from None
    example = _logged_example(tracking_uri, run_id) or example_from_schema(schema)
    return LoadedVersion(run_id, schema, metrics, example, build_predictor(pipeline, schema, example))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _logged_example(tracking_uri: str, run_id: str) -> dict | None:
    """request_model.json as training logged it with the run: /docs shows it as the example."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="request_model.json", tracking_uri=tracking_uri)
        example = json.loads(Path(path).read_text(encoding="utf-8"))
    except (MlflowException, OSError, ValueError):
        return None
    return example if isinstance(example, dict) else None


def build_predictor(pipeline, schema: FeatureSchema, example: dict) -> Predictor:
    """The fastest predictor that answers as the pipeline does on the example; else the DataFrame path."""
    from sklearn.pipeline import Pipeline

    from tand.compiled.model import compile_estimator, compile_preprocessor

    fallback = Predictor(schema, pipeline=pipeline)
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return fallback
    preprocessor = compile_preprocessor(pipeline[0])
    if preprocessor is None:
        log.info("the preprocessor is not one this API compiles: predictions go through a DataFrame")
        return fallback
    # The MLP as NumPy, a boosting model as its library's own booster; any other estimator is called as it is.
    estimator = compile_estimator(pipeline[-1]) or pipeline[-1]
    fast = Predictor(schema, preprocessor=preprocessor, estimator=estimator)
    # A cheap guard at load time: the compiled path must answer as the pipeline does, on the example and,
    # where every feature may be missing, on a row of missing values (the imputers' fill).
    rows = schema.rows([example, *([{}] if all(f.nullable for f in schema.features) else [])])
    if not same_answers(fast.answers(rows), fallback.answers(rows)):
        log.warning("compiled predictions differ from the pipeline's on the example; using the DataFrame path")
        return fallback
    return fast


def same_answers(a: list[dict], b: list[dict], tolerance: float = 1e-6) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        px, py = x["prediction"], y["prediction"]
        if isinstance(px, float) and isinstance(py, float):
            if abs(px - py) > tolerance * max(1.0, abs(py)):
                return False
        elif px != py:
            return False
        qx, qy = x.get("probabilities", {}), y.get("probabilities", {})
        if qx.keys() != qy.keys() or any(abs(qx[k] - qy[k]) > tolerance for k in qx):
            return False
    return True
