"""The prediction log read back (what app/predict/prediction_log.py writes): one entry per answered row.

Fields: request_id, row, time (UTC), model_name, model_version, features (feature → value), prediction
(a label or a number), probabilities (class → probability, or null), latency_ms. Sources: a folder of
`predictions-*.jsonl` files (complete lines; a last line cut short by a writer that stopped is skipped)
or `*.parquet` files (features and probabilities as JSON text; `*.part` files are still being written),
or a PostgreSQL URL (table `prediction_log`). `read` returns one pandas DataFrame, filtered by time and
version, for tand.monitoring.drift and live evaluation.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tand.errors import ConfigError, DataError
from tand.monitoring.log_format import COLUMNS, ENV_VAR, REQUIRED, TABLE
from tand.tracking.stores import libpq_url, redact, scheme

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def is_url(source: str) -> bool:
    return scheme(source) in ("postgresql", "postgres")


def source_from(flag: str | None, log_config) -> str:
    """Where the log is: `--log`, else PREDICTION_LOG (as the API reads it), else config's app.prediction_log (path or url)."""
    for candidate in (flag, os.environ.get(ENV_VAR, "").strip(), log_config and (log_config.url or log_config.path)):
        if candidate:
            return str(candidate)
    raise ConfigError(
        "no prediction log to read: pass --log PATH (a folder or a postgresql:// URL), set PREDICTION_LOG, "
        "or set app.prediction_log.path or .url in config.json"
    )


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`--since`: an ISO 8601 time (UTC unless it says otherwise) or a span back from now: 30m, 24h, 7d, 2w."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    found = _DURATION.match(text.strip())
    if found:
        return now - timedelta(**{_UNITS[found.group(2)]: float(found.group(1))})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: give an ISO time (2026-12-01 or 2026-12-01T08:00Z) or a span (30m, 24h, 7d)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def read(source: str, since: datetime | None = None, version: int | None = None, model_name: str | None = None) -> pd.DataFrame:
    """The log's entries (COLUMNS) at or after `since`, of `version` and `model_name` when given, oldest first."""
    if is_url(source):
        frame = _read_postgres(source, since, version, model_name)
    else:
        frame = _read_folder(Path(source))
    if frame.empty:
        return _empty()
    for column in REQUIRED:  # a hand-edited or foreign log: one line naming the field, not a traceback later
        lacking = int(frame[column].isna().sum()) if column in frame else len(frame)
        if lacking:
            raise DataError(
                f"prediction log {redact(source)}: {lacking} of {len(frame)} entries have no {column!r}; "
                f"every entry needs {', '.join(REQUIRED)} (the API's log writes them)"
            )
    frame["time"] = _times(frame["time"], source)
    frame["model_version"] = pd.to_numeric(frame["model_version"]).astype(int)
    frame["row"] = pd.to_numeric(frame["row"]).astype(int)
    frame["request_id"] = frame["request_id"].astype(str)
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= frame["time"] >= pd.Timestamp(since)
    if version is not None:
        keep &= frame["model_version"] == version
    if model_name is not None:
        keep &= frame["model_name"].astype(str) == model_name
    return frame[keep].sort_values("time", kind="stable").reset_index(drop=True)


def _times(values: pd.Series, source: str) -> pd.Series:
    """ISO 8601 times as UTC timestamps, whatever their precision (a JSONL file's text beside a Parquet file's timestamps)."""
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
        bad = values[parsed.isna() & values.notna()]
        first = bad.iloc[0] if len(bad) else None
        raise DataError(f"prediction log {redact(source)}: an entry's time {first!r} is not an ISO 8601 time") from None


def feature_frame(entries: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The logged features as columns (`names`, in order); a feature an entry lacks is missing (NaN)."""
    records = [f if isinstance(f, dict) else {} for f in entries["features"]]
    return pd.DataFrame.from_records(records, index=entries.index, columns=names)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})


def _read_folder(folder: Path) -> pd.DataFrame:
    if not folder.is_dir():
        raise ConfigError(f"prediction log {folder}: no such folder; give the folder the API logs to (PREDICTION_LOG) or a postgresql:// URL")
    frames = [_read_jsonl(path) for path in sorted(folder.glob("predictions-*.jsonl"))]
    frames += [_read_parquet(path) for path in sorted(folder.glob("*.parquet"))]  # *.part: still being written
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else _empty()


def _read_jsonl(path: Path) -> pd.DataFrame:
    import msgspec

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"prediction log {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    end = data.rfind(b"\n") + 1  # the last line may still be being written: only complete lines count
    complete, rest = data[:end], data[end:]
    try:
        entries = msgspec.json.Decoder().decode_lines(complete)  # ~8x json.loads per line
    except msgspec.DecodeError:
        entries = _lines_one_by_one(path, complete.split(b"\n"))
    if rest.strip():  # a cut last line is skipped; a whole one without its newline is read
        try:
            entries.append(msgspec.json.decode(rest))
        except msgspec.DecodeError:
            pass
    return pd.DataFrame.from_records(entries, columns=list(COLUMNS)) if entries else _empty()


def _lines_one_by_one(path: Path, lines: list[bytes]) -> list:
    import msgspec

    entries, last = [], max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entries.append(msgspec.json.decode(line))
        except msgspec.DecodeError:
            if number == last:  # a writer killed mid-line, then restarted on a new file
                continue
            raise DataError(f"prediction log {path}, line {number + 1}: not a JSON entry; remove that line") from None
    return entries


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    try:
        table = pq.read_table(path)
    except (ArrowException, OSError) as exc:
        raise DataError(f"prediction log {path}: cannot read it as Parquet ({str(exc).splitlines()[0][:160]})") from None
    frame = table.to_pandas()
    for name in ("features", "probabilities"):
        if name in frame:
            frame[name] = [json.loads(v) if isinstance(v, str) else v for v in frame[name]]
    return frame.reindex(columns=list(COLUMNS))


def _read_postgres(url: str, since: datetime | None, version: int | None, model_name: str | None = None) -> pd.DataFrame:
    """The table's rows, filtered in the query (a shared table holds every model's and version's entries)."""
    import psycopg

    where, params = [], []
    if model_name is not None:
        where.append("model_name = %s")
        params.append(model_name)
    if since is not None:
        where.append("time >= %s")
        params.append(since)
    if version is not None:
        where.append("model_version = %s")
        params.append(version)
    query = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY time"
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=10) as connection:
            rows = connection.execute(query, params).fetchall()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"prediction log {redact(url)}: cannot read table {TABLE} ({first})") from None
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS)) if rows else _empty()
