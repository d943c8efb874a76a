"""MLflow: experiments, logged models, the model registry and its aliases.

The registry is the source of truth: "production" is an alias on a registered model,
and every model version carries its feature schema in its MLmodel metadata.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from importlib.metadata import version as package_version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tand.tracking import logged_code, sql, stores
from tand.errors import NOT_FOUND_CODES, RegistryError
from tand.schema import FeatureSchema

MODEL_ARTIFACT = "model"
SCHEMA_METADATA_KEY = "feature_schema"
# What loading any model needs; not PyTorch (the MLP predicts with NumPy). A boosting model adds its library.
RUNTIME_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy")
# The compiled model is checked against the pipeline on at most this many complete test rows.
COMPILED_CHECK_ROWS = 10_000


# The part of a driver's or HTTP client's long message that says why (urllib3 buries it at the end).
_CAUSE = re.compile(
    r"Connection refused|Name or service not known|nodename nor servname|timed out|Temporary failure in name resolution"
    r"|could not connect to server|database \S+ does not exist|password authentication failed|unable to open database file"
    r"|HTTP \d{3}[^\n]*|status code \d{3}[^\n]*",
    re.IGNORECASE,
)


def _unreachable(uri: str, exc: BaseException) -> RegistryError:
    text = str(exc).strip()
    cause = _CAUSE.search(text)
    reason = cause.group(0) if cause else (text.splitlines()[0][:200] if text else type(exc).__name__)
    return sql.unreachable(uri, reason)


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


def check_reachable() -> None:
    """Fail fast, with one line, when the tracking store cannot be queried.

    One short attempt: MLflow retries a tracking server for minutes and a database for about
    a minute and a half, logging every attempt. Right mid-run, wrong before a run starts."""
    uri = tracking_uri()
    try:
        if uri.startswith(("http://", "https://")):
            with _quick_http_requests():
                MlflowClient().search_experiments(max_results=1)
            return
        if stores.is_database(uri):
            stores.probe_database(uri)
        MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any driver or HTTP failure means the same thing here
        raise _unreachable(uri, exc) from None


@contextmanager
def _quick_http_requests():
    # MLflow reads these at every request; a value the user set wins.
    quick = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    }
    added = [key for key in quick if key not in os.environ]
    os.environ.update({key: quick[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _relative_local_root() -> str | None:
    root = os.environ.get("MLFLOW_DEFAULT_ARTIFACT_ROOT", "./mlruns/")
    if "://" in root or Path(root).is_absolute():
        return None
    return root.strip().removeprefix("./").rstrip("/") or "mlruns"


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
        experiment_id = _create_experiment(name, None)
        sql.make_experiment_location_relative(uri, experiment_id, root)
        return experiment_id
    configured = os.environ.get("MLFLOW_DEFAULT_ARTIFACT_ROOT")
    remote_server = uri.startswith(("http://", "https://"))
    location = None if remote_server or not configured or root else f"{configured.rstrip('/')}/{name}"
    return _create_experiment(name, location)


def _create_experiment(name: str, location: str | None) -> str:
    """Create the experiment, marked as a model-training one (the MLflow UI then opens its runs, not its
    GenAI view). Another process creating it meanwhile is success: its id is returned."""
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException as exc:
        existing = mlflow.get_experiment_by_name(name)
        if existing is None or not _already_exists(exc):
            raise
        return existing.experiment_id


def pip_requirements(model: str | None = None) -> list[str]:
    """Pinned at the installed versions: what loading any pipeline needs, and the library of a boosting `model`."""
    from tand.models.catalog import serving_packages

    return [f"{name}=={package_version(name)}" for name in RUNTIME_PACKAGES] + serving_packages(model)[0]


@contextmanager
def _requirements_checked_without_package_scan():
    """log_model checks our pinned requirements against the installed packages. The first time in a
    process, MLflow first maps every installed module to its distribution
    (importlib.metadata.packages_distributions over the whole environment: 0.3 s here, over a second
    on a slow disk), only to know which module's __version__ to read should a distribution have no
    metadata. Ours all have it (pip_requirements reads their versions from it), so a map of just
    them gives the same check without the scan. A private detail of MLflow: where it differs,
    nothing is changed."""
    try:
        from mlflow.utils import requirements_utils
    except ImportError:
        yield
        return
    if getattr(requirements_utils, "_MODULES_TO_PACKAGES", False) is not None:  # scanned already, or another MLflow
        yield
        return
    known = {"sklearn": ["scikit-learn"], **{name: [name] for name in RUNTIME_PACKAGES if name != "scikit-learn"}}
    requirements_utils._MODULES_TO_PACKAGES = known
    try:
        yield
    finally:
        if requirements_utils._MODULES_TO_PACKAGES is known:  # later callers get MLflow's own full scan
            requirements_utils._MODULES_TO_PACKAGES = None
            requirements_utils._PACKAGES_TO_MODULES = None


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


@contextmanager
def without_known_mlflow_notices():
    """Hide two notices MLflow prints on every training run, both about choices made here on purpose:
    integer columns in the signature (the API validates requests itself, from the feature schema, and
    accepts integral floats and missing values the pipeline imputes) and the pickle format (chosen
    because skops refuses our own estimator; models load only from our registry, never from a path
    or bytes a client sends). Every other warning still shows."""
    pickle_notice = _DropMessage("Saving scikit-learn models in the pickle or cloudpickle format")
    logger = logging.getLogger("mlflow.sklearn")
    logger.addFilter(pickle_notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            yield
    finally:
        logger.removeFilter(pickle_notice)


def log_model(pipeline, schema: FeatureSchema, input_example, signature):
    """Log the pipeline to the active run; returns MLflow's ModelInfo (model_uri models:/m-..., model_id)."""
    # The template's classes in the pickle travel with it (tand.tracking.logged_code): it loads anywhere MLflow runs.
    with _requirements_checked_without_package_scan(), without_known_mlflow_notices(), logged_code.package_subset() as code:
        return mlflow.sklearn.log_model(
            pipeline,
            name=MODEL_ARTIFACT,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(schema.model),
            code_paths=[code],
            metadata={SCHEMA_METADATA_KEY: schema.to_dict()},
        )


def log_compiled(model_id: str, pipeline, check: pd.DataFrame, meta: dict) -> bool:
    """Log the pipeline compiled to NumPy (tand.compiled.model) beside the logged model, when it compiles and
    answers as the pipeline does on `check`: the API then loads it without MLflow or scikit-learn."""
    import numpy as np

    from tand.compiled import model as compiled

    preprocessor, mlp = compiled.compile_preprocessor(pipeline[0]), compiled.compile_estimator(pipeline[-1])
    if preprocessor is None or mlp is None:
        return False
    check = check.dropna()
    if check.empty:
        return False
    if len(check) > COMPILED_CHECK_ROWS:  # row by row in Python: a seeded sample, not a 200k-row test split
        check = check.sample(COMPILED_CHECK_ROWS, random_state=0)
    X = preprocessor.transform(check.to_dict("records"))
    if mlp.classes is not None:
        expected, actual = pipeline.predict_proba(check), mlp.predict_with_proba(X)[1]
    else:
        expected, actual = pipeline.predict(check), mlp.predict(X)
    if not np.allclose(actual, expected, rtol=0, atol=1e-6):
        return False
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / compiled.MODEL_FILE
        compiled.save(str(path), preprocessor, mlp, meta)
        MlflowClient().log_model_artifact(model_id, str(path))
    return True


def _already_exists(exc: MlflowException) -> bool:
    text = str(exc).lower()
    return exc.error_code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS") or "already exists" in text or "unique" in text


def register(model_uri: str, name: str) -> int:
    """Register a logged model (models:/m-...) as the next version of `name`, creating the registered
    model if needed (another process creating it meanwhile is fine). MlflowClient rather than
    mlflow.register_model, which prints two lines to stderr that the task's own line already says."""
    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if not _already_exists(exc):
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    return int(client.create_model_version(name, source=model_uri, model_id=model_id).version)


def check_model_name(name: str, schema: FeatureSchema) -> None:
    """Refuse to add a version to a registered model trained on other data: a user's first training
    would otherwise become version N of the example's model (and be compared, promoted and served as
    such). Other data means another label column, or fewer than half of this dataset's features among
    the columns the latest version knew (its features and dropped columns): adding or dropping a few
    columns stays the same model."""
    from tand.tracking.promotion import version_schema

    found = MlflowClient().search_model_versions(
        f"name = '{name.replace(chr(39), chr(39) * 2)}'", max_results=1, order_by=["version_number DESC"]
    )
    if not found:
        return
    latest = version_schema(name, int(found[0].version))
    known = set(latest.names) | set(latest.dropped)
    shared = sum(feature in known for feature in schema.names)
    if latest.label == schema.label and 2 * shared >= len(schema.names):
        return
    what = f"predicts {latest.label!r}, not {schema.label!r}" if latest.label != schema.label else f"shares {shared} of your {len(schema.names)} features"
    raise RegistryError(
        f"mlflow.model_name: the registered model {name!r} was trained on other data (its version {found[0].version} "
        f"{what}); set mlflow.model_name in config.json to a name for your model"
    )


def alias_version(name: str, alias: str) -> int | None:
    try:
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
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


def write_json(path: str | Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
