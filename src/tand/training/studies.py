"""Where an `invoke tune` study lives: its storage (a SQLite file, or PostgreSQL shared by many workers,
with heartbeats and retries), the lock one worker takes to register, and the leaderboard `--report` prints."""

from __future__ import annotations

import contextlib
import fcntl
import time
import warnings
import zlib
from pathlib import Path

from tand.errors import TandError

DEFAULT_STORAGE_FILE = "optuna.db"
HEARTBEAT_SECONDS = 30.0
MAX_RETRY = 2  # a trial killed twice more is given up (a trial that kills its worker should not kill them all)


def storage_url(url: str | None, project_dir: str | Path = ".") -> str:
    """SQLAlchemy URL: postgresql:// means psycopg 3 (installed); none: a SQLite file in the project."""
    if not url:
        return f"sqlite:///{Path(project_dir).resolve() / DEFAULT_STORAGE_FILE}"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def open_storage(url: str, heartbeat: float = HEARTBEAT_SECONDS):
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    for attempt in range(3):  # workers started together race to create the tables of a new database
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8; pinned here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=max(1, round(heartbeat)),
                    grace_period=max(2, round(2 * heartbeat)),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    engine_kwargs={"pool_pre_ping": True},
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.5 + attempt)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError, ModuleNotFoundError, ValueError) as exc:
            first = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
            raise TandError(f"tune --storage: cannot open {_safe(url)} ({first})") from None
        except optuna.exceptions.StorageInternalError as exc:
            raise TandError(f"tune --storage: cannot open {_safe(url)} ({exc})") from None
    raise TandError(f"tune --storage: {_safe(url)} could not be initialised; try again")


def _safe(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for the message
        return url.rpartition("@")[2]


@contextlib.contextmanager
def study_lock(rdb, name: str):
    """One worker at a time: a PostgreSQL advisory lock (any machine), a file lock beside a SQLite study."""
    url = rdb.engine.url
    if url.get_backend_name() == "postgresql":
        from sqlalchemy import text

        key = zlib.crc32(f"tand-tune:{name}".encode())
        with rdb.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    path = Path(url.database or DEFAULT_STORAGE_FILE).with_suffix(".lock") if url.database else None
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def leaderboard(study_name_: str, storage: str | None, project_dir: str | Path = ".") -> list[dict]:
    """The study's trials so far, best first: number, state, score, params, seconds, worker."""
    import optuna

    rdb = open_storage(storage_url(storage, project_dir))
    try:
        study = optuna.load_study(study_name=study_name_, storage=rdb)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
        raise TandError(f"tune --report: no study {study_name_!r}; studies: {', '.join(known) or 'none yet'}") from None
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"trial": t.number, "state": t.state.name, "score": t.value, "params": t.params, "seconds": seconds,
                     "worker": t.user_attrs.get("worker", "")})  # fmt: skip
    # Completed trials by score, then the rest (a pruned trial's score is its last running mean: not comparable).
    rows.sort(key=lambda r: (r["state"] != "COMPLETE", r["score"] is None, sign * (r["score"] or 0), r["trial"]))
    return rows
