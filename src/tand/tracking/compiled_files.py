"""The compiled model file training logged with a version, read without MLflow: a first load in about a second.

Training logs `compiled_model.npz` beside the pickled pipeline when the model compiles (tand.compiled.model:
the template's MLP, to NumPy alone; LightGBM, XGBoost and CatBoost, to NumPy preprocessing and the library's
own model bytes). Reading it needs neither MLflow nor scikit-learn's pipeline, whose imports are most of a
cold start (a boosting file needs its library; where that is missing the file is refused and MLflow loads). Where the version's files live is read the way
tand.tracking.lookup reads the alias (its query_rows):
- the embedded SQLite store and a database store: `model_versions.storage_location`, a local
  folder (relative to the project folder, as training stores it, or absolute);
- a tracking server: its download URI for the version, then the file through the server's
  artifact proxy (`mlflow-artifacts:` locations, the team set-up's).
Anything else (S3 read directly, a version without the file, another schema) returns None and
the caller loads through MLflow, as for any model that does not compile.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from tand.compiled import model as compiled
from tand.compiled.model import MODEL_FILE
from tand.errors import RegistryError
from tand.tracking.lookup import HTTP_TIMEOUT, AliasTarget, authorize, ssl_context
from tand.tracking.sql import VERSION_LOCATION, UnknownSchema, queried_directly, query_rows
from tand.tracking.stores import local_artifact_path

log = logging.getLogger("app")


def read_compiled(tracking_uri: str, name: str, target: AliasTarget) -> tuple | None:
    """The version's compiled model as tand.compiled.model.load returns it (meta, preprocessor, estimator: a
    NumpyMLP or a NativeBooster), or None when it has none or it cannot be read this way."""
    try:
        data = _compiled_bytes(tracking_uri, name, target.version)
        if data is None:
            return None
        return compiled.load(io.BytesIO(data))
    except (RegistryError, OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        log.info("no compiled model file for version %d (%s); loading through MLflow", target.version, exc)
        return None


def _compiled_bytes(uri: str, name: str, version: int) -> bytes | None:
    if uri.startswith(("http://", "https://")):
        return _from_server(uri, name, version)
    if not queried_directly(uri):
        return None
    try:
        rows = query_rows(uri, VERSION_LOCATION, {"name": name, "version": version})
    except UnknownSchema:
        return None
    path = local_artifact_path(rows[0][0]) if len(rows) == 1 and rows[0][0] else None
    if path is None or not (path / MODEL_FILE).is_file():
        return None
    return (path / MODEL_FILE).read_bytes()


def _get(url: str) -> bytes:
    request = authorize(urllib.request.Request(url))
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=ssl_context()) as answer:
        return answer.read()


def _from_server(uri: str, name: str, version: int) -> bytes | None:
    base = uri.rstrip("/")
    query = urllib.parse.urlencode({"name": name, "version": str(version)})
    location = json.loads(_get(f"{base}/api/2.0/mlflow/model-versions/get-download-uri?{query}")).get("artifact_uri", "")
    if not location.startswith("mlflow-artifacts:"):
        return None  # an artifact store the server does not proxy: MLflow's own client knows how to read it
    path = urllib.parse.urlsplit(location).path.lstrip("/")
    try:
        return _get(f"{base}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(path)}/{MODEL_FILE}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
