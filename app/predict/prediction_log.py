"""The prediction log (opt-in, `app.prediction_log` or PREDICTION_LOG): one entry per answered /predict row.

Written off the request path's I/O. A request that is answered 200 appends one msgspec struct per row (made
from its validated rows and answers as they are: a few C calls, about 1 µs) to a list on the event loop;
every SEAL_ROWS entries, or FLUSH_SECONDS after the first, the loop seals that list: for a JSONL folder it
encodes it in one msgspec call (about 1 µs an entry) and queues the bytes; for Parquet and PostgreSQL it
queues the list. A thread wakes every FLUSH_SECONDS and writes what is queued in one call. So entries reach
the sink within about 2 x FLUSH_SECONDS, and the thread holds the GIL little more than to join bytes (about
1 µs an entry, the write included). A writer thread that built and encoded each entry itself in Python took
5.8 µs an entry, all of it, through the GIL, time the event loop waited (bench/serve_bench.py --log).
When the sink falls behind (a slow disk, a locked table, an unreachable server), the entries waiting reach
`queue_rows` and new requests' entries are dropped and counted (tand_prediction_log_dropped), so /predict
is never slower for it; a batch the sink refuses is dropped and counted too, and the sink is reopened later.

Each entry: request_id, row (0..n-1 within the request), time (UTC, when the answer was sent, within a
millisecond: see PredictionLog._clock), model_name,
model_version, features (feature -> value as validated, `exclude` left out; a single-row body that says the
same is copied as it is, see _raw_features), prediction, probabilities
(or null), latency_ms (the whole request). Headers are never read into it, so neither is the token.

The sinks (a folder of JSONL or Parquet files, or a PostgreSQL table) are in app/predict/log_sinks.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import msgspec

from app.predict.log_sinks import Entry, SinkError, open_sink

log = logging.getLogger("app")

FLUSH_SECONDS = 0.2  # how often the writer wakes, and the longest entries are gathered before they are sealed
SEAL_ROWS = 128  # entries gathered on the event loop before they are sealed (encoded in one call, for JSONL)
MAX_WRITE_ROWS = 20_000  # entries per write call
CLOCK_SECONDS = 0.001  # an entry's time is read at most this often (answers within it share one reading)
RETRY_SECONDS = 5.0  # a sink that failed is not reopened sooner
MAX_REQUEST_ID = 128


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is 1-128 printable ASCII characters, else a new uuid4 (hex)."""
    for name, value in headers:
        if name == b"x-request-id":
            if 0 < len(value) <= MAX_REQUEST_ID and value.isascii():
                text = value.decode("ascii")
                if text.isprintable():
                    return text
            break
    return new_request_id()


def new_request_id() -> str:
    """A uuid4 (hex), taken from ids made ID_BATCH at a time: uuid.uuid4() reads os.urandom, a system call per
    request (4-6 µs here under load); one made from Python's generator per request took 0.41 µs a call, this
    0.35 (the batch's making included). Ids need not be secret, only unique."""
    try:
        return _ids.pop()
    except IndexError:
        _ids.extend(_fresh_ids(ID_BATCH))
        return _ids.pop()


def _fresh_ids(n: int) -> list[str]:
    """n uuid4s as hex: 16 random bytes each (Python's generator), the version nibble set to 4 and the
    variant's two bits to RFC 4122's, every id's bytes at once (bytes.translate on a strided slice)."""
    raw = bytearray(random.randbytes(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC)
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


ID_BATCH = 1024
_ids: list[str] = []
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT_RFC = bytes(b & 0x3F | 0x80 for b in range(256))
os.register_at_fork(after_in_child=_ids.clear)  # a forked worker makes its own (random reseeds there too)
_now = datetime.now
_monotonic = time.monotonic
_Raw = msgspec.Raw


# -- entries ---------------------------------------------------------------------------------------


class _Columns:
    """The struct type an entry's features are made from (made once per served model)."""

    def __init__(self, exclude: frozenset[str]):
        self._exclude = exclude
        self.excludes = bool(exclude)
        self._by_model: dict[int, tuple[object, type, Callable | None]] = {}

    def of(self, served) -> tuple[type, Callable | None]:
        """(Features struct, the row → kept values picker or None when nothing is excluded)."""
        known = self._by_model.get(id(served))
        if known is None or known[0] is not served:
            names = served.schema.names
            keep = [i for i, n in enumerate(names) if n not in self._exclude]
            features = msgspec.defstruct(
                "Features", [(f"f{i}", Any) for i in range(len(keep))], rename={f"f{i}": names[j] for i, j in enumerate(keep)}, gc=False
            )
            if len(keep) == len(names):
                pick = None
            elif len(keep) == 1:
                only = keep[0]
                pick = lambda row: (row[only],)  # noqa: E731 - itemgetter of one index gives the value, not a tuple
            else:
                pick = itemgetter(*keep) if keep else (lambda row: ())
            if len(self._by_model) > 8:  # a few model versions at most are ever in flight
                self._by_model.clear()
            known = self._by_model[id(served)] = (served, features, pick)
        return known[1], known[2]


def log_body(body: bytes, batch: bool) -> bytes | None:
    """The body PredictionLog.add may copy as an entry's features: a single row's, on one line (an entry is a
    line). Checked right after parsing, while the body is in the CPU's cache: on the 64-connection benchmark,
    the same check after the answer was sent cost 0.9 µs a request, a body's cache lines read again.
    `10 in body` looks for b"\n" by its value: `b"\n" in body` first tries its argument as an int and makes
    and drops a TypeError, 0.22 µs a request against 0.04."""
    return None if batch or body[:1] != b"{" or 10 in body else body


def _raw_features(served, columns: _Columns) -> bool:
    """Whether a valid single-row body can be an entry's features as it is (msgspec.Raw: no float is formatted
    again; the example's 30 numbers took 1.6 µs an entry to encode on the event loop, their copy 0.5). It says what the validated
    row says when nothing is excluded and no feature is an integer (which the parser takes written 3.0, and
    makes 3): extra fields, strings for numbers, NaN are refused; a nullable feature left out reads as missing,
    as null does; any other number reads as the same float."""
    return not columns.excludes and all(f.dtype != "integer" for f in served.schema.features)


def entries(rid: str, served, rows: list[tuple], answers: list[dict], latency_ms: float, columns: _Columns, answered: datetime) -> list[Entry]:
    """One answered request → one Entry per row: structs of the values as they are (a C call each, no encoding),
    the answer's probabilities as the dict it holds. PredictionLog.add makes a single-row request's entry
    inline, the same way, without this call."""
    features, pick = columns.of(served)
    name, version = served.name, served.version
    if pick is not None:
        rows = [pick(row) for row in rows]
    return [
        Entry(rid, i, answered, name, version, features(*row), a["prediction"], a.get("probabilities"), latency_ms)
        for i, (row, a) in enumerate(zip(rows, answers))
    ]  # fmt: skip


# -- the log ----------------------------------------------------------------------------------------


class PredictionLog:
    """The bounded queue the endpoint appends to, and the thread that writes it to the sink."""

    def __init__(self, settings, metrics, open_sink=open_sink, flush_seconds: float | None = None):
        """`flush_seconds`: FLUSH_SECONDS when None (read now: bench/log_instructions.py scales it)."""
        self.settings = settings
        self._metrics = metrics
        self._open = open_sink
        self._flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self._queue: deque = deque()
        self._limit = settings.queue_rows
        self._added = 0  # rows appended: written by the event loop only
        self._taken = 0  # rows written or dropped by the writer: written by its thread only (no lock needed)
        self._refused = 0  # rows dropped at the queue (event loop) ...
        self._lost = 0  # ... and by the writer (its thread), counted apart for the same reason
        self._written = 0
        self._writer_cpu = 0.0  # seconds of CPU the writer thread used: what it takes from the requests
        self._encode_cpu = 0.0  # ... and the event loop's encoding of JSON lines
        sample = settings.sample
        self._threshold = None if sample >= 1 else int(sample * 2**32)  # crc32 of the request id below it: logged
        self._columns = _Columns(frozenset(settings.exclude))
        # The event loop gathers entries and seals them, SEAL_ROWS at a time or after flush_seconds: for a
        # JSONL folder it encodes them (one C call), so the writer thread only writes bytes; for Parquet and
        # PostgreSQL the sealed list is the batch.
        self._gathered: list[Entry] = []
        self._served, self._structs, self._raw = None, None, False  # the last request's model, its _Columns.of, _raw_features
        self._timer_set = False
        self._clock_reading, self._clock_until = None, 0.0  # _clock(): its last reading, and until when it stands
        self._encode_lines = msgspec.json.Encoder().encode_lines if settings.url is None and settings.format == "jsonl" else None
        self._sink = None
        self._failing = False
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The event loop's side: no I/O, no lock.
    def add(self, rid: str, served, rows: list[tuple], answers: list[dict], latency_ms: float, body: bytes | None = None) -> None:
        """`body`: a single-row request's body on one line (log_body), which its entry's features are when it
        says the same as the validated row (_raw_features)."""
        if self._threshold is not None and zlib.crc32(rid.encode()) >= self._threshold:
            return
        n = len(rows)
        if self._added - self._taken + n > self._limit:
            self._refused += n
            self._metrics.count_log_drops(n)
            return
        self._added += n
        gathered = self._gathered
        if n == 1:  # the common case inline, as entries() makes it: a function call is a sizeable part of it
            if served is not self._served:
                self._served, self._structs = served, self._columns.of(served)
                self._raw = _raw_features(served, self._columns)
            if self._raw and body is not None:
                values = _Raw(body)
            else:
                features, pick = self._structs
                values = features(*(rows[0] if pick is None else pick(rows[0])))
            answer = answers[0]
            gathered.append(Entry(
                rid, 0, self._clock(), served.name, served.version, values, answer["prediction"], answer.get("probabilities"), latency_ms,
            ))  # fmt: skip
        else:
            gathered += entries(rid, served, rows, answers, latency_ms, self._columns, self._clock())
        if len(gathered) >= SEAL_ROWS:
            self._seal()
        elif not self._timer_set:  # at most one timer: the entries of a quiet minute are not held back
            self._timer_set = True
            asyncio.get_running_loop().call_later(self._flush_seconds, self._timed_seal)

    def _clock(self) -> datetime:
        """Now (UTC), read at most once a millisecond: answers sent within one share its reading (the clock
        read and made a datetime took 0.5 µs a request; the monotonic clock alone, 0.08). The millisecond is
        the monotonic clock's, which stands still while a machine sleeps: the first answers after it wakes may
        take the reading from before (still in order)."""
        now = _monotonic()
        if now >= self._clock_until:
            self._clock_reading, self._clock_until = _now(UTC), now + CLOCK_SECONDS
        return self._clock_reading

    def _timed_seal(self) -> None:
        self._timer_set = False
        self._seal()

    def _seal(self) -> None:
        """The gathered entries → one item of the writer's queue: (JSON lines or the entries, how many)."""
        gathered, self._gathered = self._gathered, []
        if not gathered:
            return
        if self._encode_lines is None:
            self._queue.append((gathered, len(gathered)))
            return
        started = time.thread_time()
        self._queue.append((self._encode_lines(gathered), len(gathered)))
        self._encode_cpu += time.thread_time() - started

    @property
    def waiting(self) -> int:
        return self._added - self._taken

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is waiting, close the sink; a stalled sink is given `timeout` seconds."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("prediction log: %s did not take the last entries within %.0f s; %d are lost", self._describe(), timeout, self.waiting)
        self._thread = None
        log.info(
            "prediction log: %d entries written, %d dropped; the writer thread used %.3f s of CPU, encoding on the event loop %.3f s",
            self._written, self._refused + self._lost, self._writer_cpu, self._encode_cpu,
        )  # fmt: skip

    # The writer thread's side.
    def _run(self) -> None:
        self._reopen()  # at start-up: an unreachable sink says so now, not at the first request
        while True:
            stopping = self._stop.wait(self._flush_seconds)
            if stopping:
                self._seal()  # the server answers no more requests: what is still gathered goes too
            self._drain()
            if stopping:
                break
        if self._sink is not None:
            try:
                self._sink.close()
            except Exception as exc:  # noqa: BLE001 - said in the server's log, as every sink failure
                log.error("prediction log: %s", self._as_sink_error(exc))

    def _drain(self) -> None:
        if not self._queue:
            return
        started = time.thread_time()
        try:
            self._drain_queue()
        finally:
            self._writer_cpu += time.thread_time() - started

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            pending, rows = [], 0
            while queue and rows < MAX_WRITE_ROWS:
                chunk, n = queue.popleft()
                pending.append(chunk)
                rows += n
            try:
                if self._sink is None and not self._reopen():
                    raise SinkError("not open")
                if self._encode_lines is not None:
                    self._sink.write(b"".join(pending), rows)
                else:
                    self._sink.write([e for chunk in pending for e in chunk])
                self._written += rows
                if self._failing:
                    log.info("prediction log: writing to %s again", self._sink.describe())
                    self._failing = False
            except Exception as exc:  # noqa: BLE001 - the thread lives on: a sink's bug loses a batch (counted), not the log
                self._lost += rows
                self._metrics.count_log_drops(rows)
                self._fail(self._as_sink_error(exc))
            finally:
                self._taken += rows  # only now: the bound covers the entries the sink is holding up too

    def _reopen(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RETRY_SECONDS
        try:
            self._sink = self._open(self.settings)
        except SinkError as exc:
            self._fail(exc)
            return False
        log.info("prediction log: writing to %s", self._sink.describe())
        return True

    def _fail(self, exc: SinkError) -> None:
        if self._sink is not None:
            try:
                self._sink.close()
            except Exception:  # noqa: BLE001, S110 - the failure is reported below
                pass
            self._sink = None
        if not self._failing and str(exc) != "not open":
            log.error("prediction log: %s; entries are dropped (counted in tand_prediction_log_dropped) until it works again", exc)
        self._failing = True

    def _as_sink_error(self, exc: Exception) -> SinkError:
        """A failure the sink did not expect (a bug, not a SinkError), said as one: what failed, and how."""
        return exc if isinstance(exc, SinkError) else SinkError(f"{self._describe()} failed: {type(exc).__name__}: {exc}")

    def _describe(self) -> str:
        return self._sink.describe() if self._sink is not None else "the sink"
