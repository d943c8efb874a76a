"""Bake the served model into an image: a trimmed copy of the embedded MLflow store.

`invoke docker-build` and `invoke deploy-eb` call `stage_store` when the tracking URI is the
embedded SQLite store. The copy holds the whole registry database (metadata only, small) and the
artifacts of the one version the alias points to, at paths relative to the copy, so it loads
from /app in the image or from any folder it is copied to. Other runs' artifacts (plots, older
versions) stay out of the image. With a tracking server there is nothing to bake: the container
follows the registry alias at run time.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tand.errors import TandError
from tand.tracking import sql
from tand.tracking.stores import local_artifact_path, sqlite_path

STORE_DIR = Path("build") / "model-store"  # inside the project; the Dockerfile copies it to /app
MARKER = "MODEL_STORE.txt"
# What the served model needs beyond requirements-serve.txt (its boosting library): the Dockerfile installs it
# in the dependency layer. Comment lines `# apt: PKG` name Debian packages it needs too.
REQUIREMENTS = "requirements-model.txt"
DATABASE = "database.db"


class BakeError(TandError):
    """The store cannot be baked into an image; the message says why and what to do."""


@dataclass(frozen=True)
class BakedStore:
    model_name: str
    alias: str
    version: int
    run_id: str
    files: tuple[str, ...]  # paths relative to the staged folder


def stage_store(tracking_uri: str, model_name: str, alias: str, project_dir: Path, dest: Path) -> BakedStore | None:
    """Fill `dest` with what the image needs; returns None (only a marker file) when nothing is baked."""
    project_dir = Path(project_dir)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    database = sqlite_path(tracking_uri)
    if database is None:
        _write_marker(dest, "No store baked: the container loads the model from MLFLOW_TRACKING_URI at run time.\n")
        write_requirements(dest, served_model_kind(tracking_uri, model_name, alias))
        return None
    database = database if database.is_absolute() else project_dir / database
    if not database.is_file():
        raise BakeError(f"{database}: no MLflow store here; train a model first (invoke train)")
    copy = dest / DATABASE
    _snapshot(database, copy)
    connection = sqlite3.connect(copy)
    try:
        version, run_id, location = _alias_target(connection, model_name, alias, tracking_uri)
        write_requirements(dest, sql.run_param(connection, run_id, "train.model"))
        root = database.parent.resolve()
        files = _copy_version(project_dir, root, location, dest, model_name, version)
        files += _copy_example(project_dir, root, sql.run_artifact_uri(connection, run_id), dest)
        # Absolute locations under the store's folder become relative, so the copy can move.
        sql.relocate(connection, lambda location: _relative_to_root(location, root))
        # Only the baked alias is left: another alias would point at artifacts the image does not have.
        sql.keep_only_alias(connection, model_name, alias)
        connection.commit()
        connection.execute("VACUUM")
    finally:
        connection.close()
    baked = BakedStore(model_name, alias, version, run_id, (DATABASE, *files))
    _write_marker(
        dest,
        f"Model {model_name!r} version {version} (alias {alias!r}, run {run_id}), baked "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from an embedded MLflow store.\n",
    )
    return baked


def write_requirements(dest: Path, model: str | None) -> tuple[list[str], list[str]]:
    """The served model's extra requirements (tand.models.catalog.serving_packages) in dest/REQUIREMENTS."""
    from tand.models.catalog import serving_packages

    pip, apt = serving_packages(model)
    lines = [f"# What serving the {model or 'unknown'} model needs beyond requirements-serve.txt (written by invoke docker-build)"]
    lines += [f"# apt: {name}" for name in apt] + pip
    (dest / REQUIREMENTS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pip, apt


def served_model_kind(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """train.model of the version the alias points to on a tracking server; None if it cannot be asked
    (the image then carries no boosting library, and says so in its requirements file)."""
    import os

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    # One quick try (MLflow's default is minutes of retries): the image builds either way.
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(model_name, alias)
        return client.get_run(version.run_id).data.params.get("train.model")
    except (MlflowException, OSError):
        return None
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _snapshot(source: Path, target: Path) -> None:
    # SQLite's backup API: a consistent copy even while another process writes the store.
    origin = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        origin.backup(copy)
    finally:
        copy.close()
        origin.close()


def _alias_target(connection: sqlite3.Connection, name: str, alias: str, uri: str) -> tuple[int, str, str]:
    target = sql.baked_alias_target(connection, name, alias)
    if target is None:
        raise BakeError(
            f"model {name!r} has no alias {alias!r} in {uri}; train a model (invoke train) "
            f"or point the alias at a version (invoke promote)"
        )
    return target


def _relative_to_root(location: str, root: Path) -> str | None:
    path = local_artifact_path(location)
    if path is None or not path.is_absolute():
        return None
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def _source(project_dir: Path, root: Path, location: str) -> tuple[Path, str]:
    """Where a location's files are now, and the relative path they get in the copy."""
    path = local_artifact_path(location)
    if path is None:
        raise BakeError(
            f"artifacts at {location} are not on this machine, so they cannot be baked into the image; "
            f"serve from the tracking server instead (set MLFLOW_TRACKING_URI to it)"
        )
    if path.is_absolute():
        relative = _relative_to_root(location, root)
        if relative is None:
            raise BakeError(f"artifacts at {path} lie outside the store's folder {root}; they cannot be baked")
        return path, relative
    if ".." in path.parts:
        raise BakeError(f"artifact location {location!r} leaves the project folder; it cannot be baked")
    return project_dir / path, path.as_posix()


def _copy_version(project_dir: Path, root: Path, location: str, dest: Path, name: str, version: int) -> tuple[str, ...]:
    source, relative = _source(project_dir, root, location)
    if not source.is_dir():
        raise BakeError(
            f"model {name!r} version {version}: its files are missing at {source}; re-train or promote another version"
        )
    shutil.copytree(source, dest / relative)
    return tuple(p.relative_to(dest).as_posix() for p in sorted((dest / relative).rglob("*")) if p.is_file())


def _copy_example(project_dir: Path, root: Path, run_artifacts: str, dest: Path) -> tuple[str, ...]:
    """The run's request_model.json: the API shows it as the /docs example (optional)."""
    if not run_artifacts or local_artifact_path(run_artifacts) is None:
        return ()
    try:
        source, relative = _source(project_dir, root, run_artifacts)
    except BakeError:
        return ()
    example = source / "request_model.json"
    if not example.is_file():
        return ()
    target = dest / relative / "request_model.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(example, target)
    return (target.relative_to(dest).as_posix(),)


def _write_marker(dest: Path, text: str) -> None:
    (dest / MARKER).write_text(text, encoding="utf-8")
