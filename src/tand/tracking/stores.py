"""Tracking-store URIs, without importing MLflow: the PostgreSQL driver, redaction, a one-shot probe.

`invoke mlflow-server` uses these before it replaces itself with `mlflow server`; importing
MLflow there would only add seconds to every start.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql")


def scheme(uri: str) -> str:
    """postgresql+psycopg://... → postgresql"""
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def is_database(uri: str) -> bool:
    """A database server (not SQLite, not a file store, not a tracking server)."""
    return scheme(uri) in DATABASE_SCHEMES


def backend_uri(uri: str) -> str:
    """The URI with the driver this template pins: postgresql:// and postgres:// mean psycopg 3.

    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, older ones as psycopg2 (not installed),
    and none accepts postgres://; naming the driver works with any SQLAlchemy 2."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri.removeprefix(prefix)
    return uri


def libpq_url(uri: str) -> str:
    """postgresql+psycopg://... or postgres://... → postgresql://... (what psycopg.connect takes)."""
    return "postgresql://" + uri.split("://", 1)[1]


def redact(uri: str) -> str:
    """The URI without its password, fit for messages and logs."""
    parts = urlsplit(uri)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return uri


def probe_database(uri: str, timeout: int = 10) -> None:
    """One connection attempt, bounded in time; raises the driver's error (MLflow's own engine retries ~10 times)."""
    import sqlalchemy

    connect_args = {"connect_timeout": timeout} if scheme(uri) in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def local_artifact_path(location: str) -> Path | None:
    """A local artifact location as a path (relative ones are relative to the project folder);
    None for remote schemes (s3://, mlflow-artifacts:, ...)."""
    if location.startswith("file://"):
        location = location.removeprefix("file://")
    elif "://" in location or location.startswith("mlflow-artifacts:"):
        return None
    return Path(location)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an embedded SQLite store (sqlite:///path, relative to the working
    directory unless absolute), or None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
