"""MLflow: experiments, logged models, the model registry and its aliases.

The registry is the source of truth: "production" is an alias on a registered model,
and every model version carries its feature schema in its MLmodel metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tand.errors import RegistryError
from tand.schema import FeatureSchema

MODEL_ARTIFACT = "model"
SCHEMA_METADATA_KEY = "feature_schema"
# What loading a model needs; PyTorch is not among them (the MLP predicts with NumPy).
RUNTIME_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    alias: str | None
    run_id: str
    pipeline: object
    schema: FeatureSchema
    metrics: dict


def _unreachable(uri: str, exc: BaseException) -> RegistryError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RegistryError(f"MLflow tracking store {redact(uri)} is unreachable ({first_line[:200]}); check MLFLOW_TRACKING_URI")


def redact(uri: str) -> str:
    """A tracking URI without its password, fit for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


def check_reachable() -> None:
    """Fail fast, with one line, when the tracking store cannot be queried."""
    uri = tracking_uri()
    try:
        MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any driver or HTTP failure means the same thing here
        raise _unreachable(uri, exc) from None


def _relative_local_root() -> str | None:
    root = os.environ.get("MLFLOW_DEFAULT_ARTIFACT_ROOT", "./mlruns/")
    if "://" in root or Path(root).is_absolute():
        return None
    return root.strip().removeprefix("./").rstrip("/") or "mlruns"


def _make_artifact_location_relative(experiment_id: str, root: str) -> None:
    # MLflow resolves a relative artifact location against the current directory when it
    # creates an experiment. We store it relative instead, so database.db and mlruns/
    # can be copied together (into the Docker image) and still load there.
    import sqlalchemy

    engine = sqlalchemy.create_engine(tracking_uri())
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("UPDATE experiments SET artifact_location = :loc WHERE experiment_id = :id"),
                {"loc": f"{root}/{experiment_id}", "id": int(experiment_id)},
            )
    finally:
        engine.dispose()


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it (with a relocatable artifact location for SQLite) if needed."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise RegistryError(f"mlflow.experiment_name: experiment {name!r} is deleted; restore it or pick another name")
        return experiment.experiment_id
    uri = tracking_uri()
    root = _relative_local_root()
    if uri.startswith("sqlite:") and root:
        experiment_id = mlflow.create_experiment(name)
        _make_artifact_location_relative(experiment_id, root)
        return experiment_id
    configured = os.environ.get("MLFLOW_DEFAULT_ARTIFACT_ROOT")
    remote_server = uri.startswith(("http://", "https://"))
    location = None if remote_server or not configured or root else f"{configured.rstrip('/')}/{name}"
    return mlflow.create_experiment(name, artifact_location=location)


def pip_requirements() -> list[str]:
    return [f"{name}=={package_version(name)}" for name in RUNTIME_PACKAGES]


def log_model(pipeline, schema: FeatureSchema, input_example, signature) -> str:
    """Log the pipeline to the active run; returns the model URI (models:/m-...)."""
    info = mlflow.sklearn.log_model(
        pipeline,
        name=MODEL_ARTIFACT,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements(),
        metadata={SCHEMA_METADATA_KEY: schema.to_dict()},
    )
    return info.model_uri


def register(model_uri: str, name: str) -> int:
    version = mlflow.register_model(model_uri, name)
    return int(version.version)


def alias_version(name: str, alias: str) -> int | None:
    try:
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def ensure_alias(name: str, version: int, alias: str) -> bool:
    """Give `version` the alias if no version holds it yet; later versions leave it alone."""
    if alias_version(name, alias) is not None:
        return False
    MlflowClient().set_registered_model_alias(name, alias, str(version))
    return True


def read_schema(model_dir: str | Path) -> FeatureSchema:
    from mlflow.models import Model

    metadata = Model.load(str(model_dir)).metadata or {}
    if SCHEMA_METADATA_KEY not in metadata:
        raise RegistryError(f"model at {model_dir} has no feature schema; it was not trained by this template")
    return FeatureSchema.from_dict(metadata[SCHEMA_METADATA_KEY])


def load_version(name: str, alias: str | None = None, version: int | None = None) -> LoadedModel:
    """Load a registered version by alias or number: only from our registry, never a path from outside."""
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
        local_dir = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}")
        schema = read_schema(local_dir)
        pipeline = mlflow.sklearn.load_model(local_dir)
        metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            target = f"alias {alias!r}" if alias else f"version {version}"
            raise RegistryError(f"model {name!r} has no {target} in the registry") from None
        raise _unreachable(tracking_uri(), exc) from None
    except OSError as exc:
        raise RegistryError(f"model {name!r} version files cannot be read: {exc}") from None
    return LoadedModel(name, int(mv.version), alias, mv.run_id or "", pipeline, schema, dict(metrics))


def write_json(path: str | Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
