"""Where the prediction log's entries go (app/predict/prediction_log.py turns answered requests into them).

A folder of JSONL files (complete lines, flushed each batch) or Parquet files (`*.parquet.part` while written,
renamed `*.parquet` when rotated or closed), named predictions-<UTC start>-<pid>-<seq>, rotated after
ROTATE_ROWS entries (JSONL: at the end of the batch that reached it) or ROTATE_SECONDS; or the PostgreSQL table `prediction_log` (created if missing, in the
first schema of the connection's search_path), written with COPY. Each sink raises SinkError, with a message
that holds no password, when it cannot take entries.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any
import msgspec

from tand.monitoring.log_format import COLUMNS, CREATE_TABLE, TABLE
from tand.tracking.stores import libpq_url, redact

ROTATE_ROWS = 100_000
ROTATE_SECONDS = 3600.0
PARQUET_GROUP_ROWS = 10_000  # Parquet: entries held for one row group (few large groups read fast) ...
PARQUET_GROUP_SECONDS = 60.0  # ... or this long, whichever comes first


class SinkError(Exception):
    """The sink cannot take entries now (the message says why, without credentials)."""


# Made on the event loop as msgspec structs, not dicts: cheaper to make, and a batch encodes in one call.


class Entry(msgspec.Struct, gc=False):  # no cycles: not tracked by the garbage collector
    request_id: str
    row: int
    time: datetime  # UTC (tz-aware): JSON encodes it as ISO 8601 ending in "Z"
    model_name: str
    model_version: int
    features: Any  # a per-schema struct that encodes as {feature: value}
    prediction: Any
    probabilities: Any
    latency_ms: float


class FolderSink:
    """Rotating files in one folder; this process's files carry its pid, so workers never share one."""

    def __init__(self, folder: Path, fmt: str = "jsonl", rotate_rows: int = ROTATE_ROWS, rotate_seconds: float = ROTATE_SECONDS):
        self.folder, self.format = Path(folder), fmt
        self._rotate_rows, self._rotate_seconds = rotate_rows, rotate_seconds
        self._seq, self._file, self._path, self._opened, self._rows = 0, None, None, 0.0, 0
        self._encoder = msgspec.json.Encoder()
        self._held: list[Entry] = []  # Parquet: entries for the next row group
        self._held_since = 0.0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the folder {self.folder}: {exc.strerror or exc}") from None

    def describe(self) -> str:
        return f"the folder {self.folder} ({self.format})"

    def write(self, batch: list[Entry] | bytes, rows: int | None = None) -> None:
        """Parquet: entries; JSONL: `rows` entries already encoded as lines (the prediction log encodes them on
        the event loop, in one call)."""
        try:
            if self.format == "parquet":
                self._hold(batch)
            else:
                self._write_lines(batch, rows)
        except OSError as exc:
            raise SinkError(f"cannot write to {self._path or self.folder}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            self._write_group()
            self._close_file()
        except OSError as exc:
            raise SinkError(f"cannot close {self._path}: {exc.strerror or exc}") from None

    def _next_file(self) -> None:
        self._close_file()
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        suffix = ".parquet.part" if self.format == "parquet" else ".jsonl"
        self._path = self.folder / f"predictions-{stamp}-{os.getpid()}-{self._seq}{suffix}"
        self._opened, self._rows = time.monotonic(), 0
        if self.format != "parquet":
            self._file = open(self._path, "ab")  # noqa: SIM115 - kept open across batches, closed by _close_file

    def _due(self) -> bool:
        return self._path is None or self._rows >= self._rotate_rows or time.monotonic() - self._opened >= self._rotate_seconds

    def _write_lines(self, lines: bytes, rows: int) -> None:
        """Whole lines, in one write; a file is rotated between writes (so it may hold a batch more than rotate_rows)."""
        if self._due():
            self._next_file()
        self._file.write(lines)
        self._file.flush()
        self._rows += rows

    def _hold(self, batch: list[Entry]) -> None:
        if not self._held:
            self._held_since = time.monotonic()
        self._held += batch
        if len(self._held) >= PARQUET_GROUP_ROWS or time.monotonic() - self._held_since >= PARQUET_GROUP_SECONDS:
            self._write_group()

    def _write_group(self) -> None:
        if not self._held:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        held, self._held = self._held, []
        # Text labels and numbers in one group (a version of another task; the API refuses to hot-swap one
        # today, a restart starts new files): a table per run of one kind.
        for _, run in itertools.groupby(held, key=lambda e: isinstance(e.prediction, str)):
            self._write_table(list(run), pa, pq)

    def _write_table(self, held: list[Entry], pa, pq) -> None:
        if self._due():
            self._next_file()
        encode = self._encoder.encode
        prediction_type = pa.string() if isinstance(held[0].prediction, str) else pa.float64()
        table = pa.table(
            {
                "request_id": pa.array([e.request_id for e in held], pa.string()),
                "row": pa.array([e.row for e in held], pa.int32()),
                "time": pa.array([e.time for e in held], pa.timestamp("us", tz="UTC")),
                "model_name": pa.array([e.model_name for e in held], pa.string()),
                "model_version": pa.array([e.model_version for e in held], pa.int32()),
                "features": pa.array([encode(e.features).decode() for e in held], pa.string()),
                "prediction": pa.array([e.prediction for e in held], prediction_type),
                "probabilities": pa.array([None if e.probabilities is None else encode(e.probabilities).decode() for e in held], pa.string()),
                "latency_ms": pa.array([e.latency_ms for e in held], pa.float64()),
            }
        )
        if self._file is not None and self._file.schema != table.schema:  # a new version of another task: a new file
            self._next_file()
        if self._file is None:
            self._file = pq.ParquetWriter(self._path, table.schema)
        self._file.write_table(table)
        self._rows += len(held)

    def _close_file(self) -> None:
        if self._file is None:  # Parquet: nothing was written to this name yet
            self._path = None
            return
        self._file.close()
        self._file = None
        if self.format == "parquet":
            self._path.rename(self._path.with_name(self._path.name.removesuffix(".part")))
        self._path = None


class PostgresSink:
    """The table `prediction_log` (in the first schema of the search_path, e.g. ?options=-csearch_path%3Dlogs)."""

    def __init__(self, url: str, connect_timeout: float = 5):
        import psycopg

        self._url, self._shown = libpq_url(url), redact(url)
        self._encoder = msgspec.json.Encoder()
        try:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=int(connect_timeout))
            self._conn.execute(CREATE_TABLE)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def describe(self) -> str:
        return f"the table {TABLE} at {self._shown}"

    def _error(self, exc: Exception) -> SinkError:
        said = str(exc).strip()
        return SinkError(f"PostgreSQL at {self._shown}: {said.splitlines()[0] if said else type(exc).__name__}")

    def write(self, batch: list[Entry]) -> None:
        import psycopg

        encode = self._encoder.encode
        try:
            with self._conn.cursor() as cursor, cursor.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for e in batch:
                    copy.write_row((
                        e.request_id, e.row, e.time, e.model_name, e.model_version, encode(e.features).decode(),
                        encode(e.prediction).decode(), None if e.probabilities is None else encode(e.probabilities).decode(), e.latency_ms,
                    ))  # fmt: skip
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        self._conn.close()


def open_sink(settings) -> FolderSink | PostgresSink:
    """The sink the settings name (app.settings.PredictionLogSettings); SinkError if it cannot be opened."""
    if settings.url:
        return PostgresSink(settings.url)
    return FolderSink(settings.path, settings.format)
