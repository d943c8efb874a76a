"""Every SQL statement this template runs against MLflow's own tables, in one place.

MLflow's store has no API for these, or its API costs an MLflow import (seconds) where a query costs
milliseconds:
- reading which version an alias points to, and where a version's files are (the API's cold start
  and every refresh: app/store);
- storing an experiment's artifact location relative to the project, so database.db and mlruns/
  can be copied together (MLflow resolves it against the working directory);
- trimming a copy of the embedded store to the one served version (the Docker image's baked store);
- moving production and previous-production together, each only if it still points where it did
  (compare-and-set in one transaction: promotion).

The tables and columns named here are MLflow's (3.x). tests/tracking/test_sql.py runs every statement
against a store the installed MLflow created and compares the answers with MlflowClient's: a schema
change in MLflow fails there first. Reads use the standard library's sqlite3 for the embedded store
(read-only, no SQLAlchemy import) and SQLAlchemy for a database server (one bounded connection attempt).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from tand.errors import RegistryError
from tand.tracking.stores import redact, sqlite_path

CONNECT_TIMEOUT = 5

ALIAS_TARGET = (
    "SELECT a.version, v.run_id, v.source, v.status FROM registered_model_aliases a JOIN model_versions v "
    "ON v.name = a.name AND v.version = a.version AND v.workspace = a.workspace "
    "WHERE a.name = :name AND a.alias = :alias"
)
VERSION_LOCATION = "SELECT storage_location FROM model_versions WHERE name = :name AND version = :version"
RUN_ARTIFACTS = "SELECT artifact_uri FROM runs WHERE run_uuid = :run_id"
RUN_PARAM = "SELECT value FROM params WHERE run_uuid = :run_id AND key = :key"
RELATIVE_EXPERIMENT_LOCATION = "UPDATE experiments SET artifact_location = :location WHERE experiment_id = :id"
# Columns that hold artifact locations; a baked store rewrites absolute ones under its folder as relative.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location", "experiment_id"),
    ("runs", "artifact_uri", "run_uuid"),
    ("logged_models", "artifact_location", "model_id"),
    ("model_versions", "storage_location", "rowid"),
)
OTHER_ALIASES = "DELETE FROM registered_model_aliases WHERE NOT (name = :name AND alias = :alias)"
# Compare-and-set: an alias moves only if it still points at the version read before (or is created only
# if it still points nowhere). MLflow's own set_registered_model_alias is an unconditional upsert.
MOVE_ALIAS = "UPDATE registered_model_aliases SET version = :new WHERE name = :name AND alias = :alias AND version = :old"
ADD_ALIAS = (
    "INSERT INTO registered_model_aliases (workspace, name, alias, version) "
    "SELECT workspace, name, :alias, :new FROM registered_models WHERE name = :name"
)

_engines: dict = {}


class UnknownSchema(Exception):
    """The store's tables are not the ones these statements know (an older or newer MLflow): ask MLflow."""


def unreachable(uri: str, reason: str) -> RegistryError:
    return RegistryError(f"MLflow tracking store {redact(uri)} is unreachable ({reason[:200]}); check MLFLOW_TRACKING_URI")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def queried_directly(uri: str) -> bool:
    """A store these statements can run on: the embedded SQLite file, PostgreSQL, MySQL."""
    return sqlite_path(uri) is not None or uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql")


def engine(uri: str):
    """One cached SQLAlchemy engine per database URI, with a bounded connection attempt and no pool."""
    import sqlalchemy

    from tand.tracking.stores import backend_uri, scheme

    if uri not in _engines:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT} if scheme(uri) in ("postgresql", "mysql") else {}
        created = sqlalchemy.create_engine(backend_uri(uri), poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
        if sqlite_path(uri) is not None:
            _begin_immediately(created)
        _engines[uri] = created
    return _engines[uri]


def _begin_immediately(sqlite_engine) -> None:
    """Start SQLite write transactions with BEGIN IMMEDIATE (SQLAlchemy's documented recipe). The
    driver's deferred BEGIN takes a read lock first: two writers then each wait for the other, and
    SQLite fails one with "database is locked" at once instead of letting it wait its turn."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(sqlite_engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(sqlite_engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def query_rows(uri: str, query: str, params: dict) -> list[tuple]:
    """Rows of `query` (named :params) on a store that is queried_directly. RegistryError when the store
    cannot be reached; UnknownSchema when its tables are not MLflow 3's."""
    path = sqlite_path(uri)
    if path is not None:
        return _sqlite_rows(uri, path, query, params)
    import sqlalchemy

    try:
        with engine(uri).connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(query), params)]
    except sqlalchemy.exc.ProgrammingError:
        raise UnknownSchema from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise unreachable(uri, _first_line(exc)) from None


def _sqlite_rows(uri: str, path: Path, query: str, params: dict) -> list[tuple]:
    if not path.is_file():
        raise unreachable(uri, f"no database file at {path.absolute()}")
    try:
        connection = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise unreachable(uri, str(exc)) from None
    try:
        return connection.execute(query, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such" in str(exc):
            raise UnknownSchema from None
        raise unreachable(uri, str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise unreachable(uri, str(exc)) from None
    finally:
        connection.close()


def make_experiment_location_relative(uri: str, experiment_id: str, root: str) -> None:
    """Store `root/<id>` as the experiment's artifact location (MLflow stores it absolute)."""
    import sqlalchemy

    with engine(uri).begin() as connection:
        connection.execute(sqlalchemy.text(RELATIVE_EXPERIMENT_LOCATION), {"location": f"{root}/{experiment_id}", "id": int(experiment_id)})


class _LostRace(Exception):
    pass


def move_aliases(uri: str, name: str, moves: list[tuple[str, int | None, int]]) -> bool:
    """Apply every (alias, old, new) of `moves` in ONE transaction, each only if the alias still points at
    `old` (None: nowhere). Either all move or none does: False when another writer moved one of them
    meanwhile (a promote or rollback racing this one), True when all moved.

    Why this holds: each UPDATE compares and sets in one statement, and a second writer's UPDATE waits
    for the first writer's transaction (SQLite: the database write lock; PostgreSQL and MySQL: the row
    lock), then sees its committed version and matches nothing. A process killed mid-way leaves an
    uncommitted transaction, which the database discards."""
    import sqlalchemy

    try:
        with engine(uri).begin() as connection:
            for alias, old, new in sorted(moves, key=lambda move: move[0]):  # one lock order for every writer
                if old == new:
                    continue
                if old is None:
                    try:
                        done = connection.execute(sqlalchemy.text(ADD_ALIAS), {"name": name, "alias": alias, "new": new}).rowcount
                    except sqlalchemy.exc.IntegrityError:  # another writer created it first
                        raise _LostRace from None
                else:
                    done = connection.execute(
                        sqlalchemy.text(MOVE_ALIAS), {"name": name, "alias": alias, "old": old, "new": new}
                    ).rowcount
                if done != 1:
                    raise _LostRace  # leaving the block rolls back what this transaction changed
    except _LostRace:
        return False
    except sqlalchemy.exc.ProgrammingError:
        raise UnknownSchema from None
    except sqlalchemy.exc.OperationalError as exc:  # unreachable, or SQLite locked past its timeout by another writer
        raise RegistryError(f"moving aliases in {redact(uri)} failed: {_first_line(exc)[:200]}; nothing changed, retry") from None
    return True


# -- the baked store: a private sqlite3 copy, trimmed in place ---------------------------------------


def baked_alias_target(connection: sqlite3.Connection, name: str, alias: str) -> tuple[int, str, str] | None:
    """(version, run id, storage location) the alias points to in a store copy; None without the alias."""
    row = connection.execute(
        ALIAS_TARGET.replace("a.version, v.run_id, v.source, v.status", "v.version, v.run_id, v.storage_location"),
        {"name": name, "alias": alias},
    ).fetchone()
    return (int(row[0]), row[1] or "", row[2] or "") if row else None


def run_artifact_uri(connection: sqlite3.Connection, run_id: str) -> str:
    row = connection.execute(RUN_ARTIFACTS, {"run_id": run_id}).fetchone()
    return (row[0] or "") if row else ""


def run_param(connection: sqlite3.Connection, run_id: str, key: str) -> str | None:
    row = connection.execute(RUN_PARAM, {"run_id": run_id, "key": key}).fetchone()
    return row[0] if row else None


def relocate(connection: sqlite3.Connection, relative_to) -> None:
    """Rewrite every location for which `relative_to(location)` gives a relative path."""
    for table, column, key in LOCATION_COLUMNS:
        rows = connection.execute(f"SELECT {key}, {column} FROM {table}").fetchall()  # noqa: S608 - fixed names
        for row_key, location in rows:
            relative = relative_to(location or "")
            if relative is not None:
                connection.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (relative, row_key))  # noqa: S608


def keep_only_alias(connection: sqlite3.Connection, name: str, alias: str) -> None:
    connection.execute(OTHER_ALIASES, {"name": name, "alias": alias})
