"""Which version does the alias point to? Asked at start-up and at every refresh, so it must be cheap.

Importing MLflow costs seconds (it pulls in pandas, SQLAlchemy and its GenAI modules), which
would dominate a cold start and stall the event loop's thread on the first refresh. The two
stores this template sets up are read directly:
- the embedded SQLite store with the standard library's sqlite3, read-only (the tables MLflow
  keeps its aliases in; a test checks the answer against MlflowClient's);
- a database store (PostgreSQL, MySQL) with the same query through SQLAlchemy, one connection
  attempt bounded by a timeout (MLflow's engine retries for about a minute and a half);
- a tracking server over its REST API (`/api/2.0/mlflow/registered-models/alias`), with a short
  timeout, so a stopped server answers 503 at once instead of after MLflow's retry back-off.
Any other store (Databricks, a file store, a schema this query does not know) goes through MlflowClient.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from tand.errors import NOT_FOUND_CODES, RegistryError
from tand.tracking.sql import ALIAS_TARGET, UnknownSchema, queried_directly, query_rows, unreachable

HTTP_TIMEOUT = 5.0


@dataclass(frozen=True)
class AliasTarget:
    version: int
    run_id: str
    source: str = ""  # where the version's model comes from (models:/m-<id> in MLflow 3): immutable


def _no_alias(name: str, alias: str) -> RegistryError:
    return RegistryError(f"model {name!r} has no alias {alias!r} in the registry; train a model or move the alias")


def lookup_alias(tracking_uri: str, name: str, alias: str) -> AliasTarget:
    """The version `alias` points to, or RegistryError (store unreachable, alias pointing nowhere)."""
    if tracking_uri.startswith(("http://", "https://")):
        return _from_rest(tracking_uri, name, alias)
    if queried_directly(tracking_uri):
        try:
            target = _target(query_rows(tracking_uri, ALIAS_TARGET, {"name": name, "alias": alias}), name, alias)
        except UnknownSchema:
            target = None
        if target is not None:
            return target
    return _from_mlflow(tracking_uri, name, alias)


def _target(rows: list, name: str, alias: str) -> AliasTarget | None:
    if not rows:
        raise _no_alias(name, alias)
    if len(rows) > 1:
        return None  # the name exists in several MLflow workspaces: let MLflow pick
    version, run_id, source, status = rows[0]
    if status not in (None, "READY"):
        raise RegistryError(f"model {name!r} version {version} is {status}, not READY; retry when it is")
    return AliasTarget(int(version), run_id or "", source or "")


def _rest_request(uri: str, name: str, alias: str) -> urllib.request.Request:
    query = urllib.parse.urlencode({"name": name, "alias": alias})
    return authorize(urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}"))


def authorize(request: urllib.request.Request) -> urllib.request.Request:
    """The same credentials MlflowClient would send."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        request.add_header("Authorization", f"Basic {base64.b64encode(pair.encode()).decode()}")
    return request


def ssl_context() -> ssl.SSLContext | None:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # noqa: S323 - the user asked for it, as MLflow honours it
    cafile = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cafile) if cafile else None


def _from_rest(uri: str, name: str, alias: str) -> AliasTarget:
    try:
        with urllib.request.urlopen(_rest_request(uri, name, alias), timeout=HTTP_TIMEOUT, context=ssl_context()) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            code = json.loads(exc.read() or b"{}").get("error_code", "")
        except ValueError:
            code = ""
        if code in NOT_FOUND_CODES or exc.code == 404:
            raise _no_alias(name, alias) from None
        raise unreachable(uri, f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise unreachable(uri, str(getattr(exc, "reason", exc))) from None
    version = body.get("model_version") or {}
    if "version" not in version:
        raise unreachable(uri, "unexpected answer to the alias lookup")
    return AliasTarget(int(version["version"]), version.get("run_id") or "", version.get("source") or "")


def _from_mlflow(uri: str, name: str, alias: str) -> AliasTarget:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import sqlalchemy.exc
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = MlflowClient(tracking_uri=uri).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
            raise _no_alias(name, alias) from None
        raise unreachable(uri, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise unreachable(uri, str(exc).strip().splitlines()[0]) from None
    return AliasTarget(int(version.version), version.run_id or "", version.source or "")
