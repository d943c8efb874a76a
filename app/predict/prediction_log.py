"""The prediction log (opt-in, `app.prediction_log` or PREDICTION_LOG): one entry per answered /predict row.

Written off the request path. A request that is answered 200 only appends one tuple (its id, the served
model, its validated rows and its answers, as they already are) to a bounded deque; a thread wakes every
FLUSH_SECONDS, turns what is waiting into entries, encodes them and writes them in one batch. When the
sink falls behind (a slow disk, a locked table, an unreachable server), the deque reaches `queue_rows`
entries and new requests' entries are dropped and counted (tand_prediction_log_dropped), so /predict is
never slower for it; a batch the sink refuses is dropped and counted too, and the sink is reopened later.

Each entry: request_id, row (0..n-1 within the request), time (UTC, when the answer was sent), model_name,
model_version, features (feature -> value as validated, `exclude` left out), prediction, probabilities
(or null), latency_ms (the whole request). Headers are never read into it, so neither is the token.

The sinks (a folder of JSONL or Parquet files, or a PostgreSQL table) are in app/predict/log_sinks.py.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import deque
from typing import Any

import msgspec

from app.predict.log_sinks import CREATE_TABLE, TABLE, Entry, SinkError, open_sink  # noqa: F401 - the table's DDL re-exported (tests create it)

log = logging.getLogger("app")

FLUSH_SECONDS = 0.2  # how often the writer wakes; also the longest an entry waits before it is written
MAX_WRITE_ROWS = 20_000  # entries per write call
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
    """A uuid4 (hex) from Python's generator: uuid.uuid4() reads os.urandom, a system call per request (4-6 µs
    here under load, as much as the rest of the log's work on the event loop). Ids need not be secret."""
    return "%016x%016x" % (_bits(64) & _NOT_VERSION | _VERSION_4, _bits(62) | _VARIANT_RFC4122)


_bits = random.getrandbits
_NOT_VERSION, _VERSION_4, _VARIANT_RFC4122 = ~0xF000 & (2**64 - 1), 0x4000, 2**63


# -- entries ---------------------------------------------------------------------------------------

class _Pending(msgspec.Struct, gc=False):
    """One answered request waiting for the writer, held so that the garbage collector tracks nothing of it:
    thousands wait at a time, and tracked they lengthen every collection on the event loop. So not the answer
    dicts (a dict holding a dict stays tracked for good): predictions and probabilities as tuples of plain
    values, which the collector untracks at its first look."""

    request_id: str
    answered: float  # epoch seconds
    served: Any  # app.store.serving.ServedModel
    rows: tuple  # of row tuples, in the schema's order
    predictions: tuple
    probabilities: tuple | None  # per row, the probabilities in predictor.class_names order
    latency_ms: float


def _waiting(rid: str, served, rows: list[tuple], answers: list[dict], latency_ms: float) -> _Pending:
    if len(answers) == 1:
        answer = answers[0]
        proba = answer.get("probabilities")
        return _Pending(rid, time.time(), served, (rows[0],), (answer["prediction"],), None if proba is None else (tuple(proba.values()),), latency_ms)
    proba = [tuple(a["probabilities"].values()) for a in answers] if "probabilities" in answers[0] else None
    return _Pending(rid, time.time(), served, tuple(rows), tuple([a["prediction"] for a in answers]), proba and tuple(proba), latency_ms)


class _Columns:
    """The struct types an entry's features and probabilities are encoded from (made once per served model)."""

    def __init__(self, exclude: frozenset[str]):
        self._exclude = exclude
        self._by_model: dict[int, tuple[object, type, list[int] | None, type | None]] = {}

    def of(self, served) -> tuple[type, list[int] | None, type | None]:
        known = self._by_model.get(id(served))
        if known is None or known[0] is not served:
            names = served.schema.names
            keep = [i for i, n in enumerate(names) if n not in self._exclude]
            features = msgspec.defstruct(
                "Features", [(f"f{i}", Any) for i in range(len(keep))], rename={f"f{i}": names[j] for i, j in enumerate(keep)}, gc=False
            )
            classes = served.predictor.class_names
            probabilities = None if classes is None else msgspec.defstruct(
                "Probabilities", [(f"c{i}", Any) for i in range(len(classes))], rename={f"c{i}": c for i, c in enumerate(classes)}, gc=False
            )  # fmt: skip
            if len(self._by_model) > 8:  # a few model versions at most are ever in flight
                self._by_model.clear()
            known = self._by_model[id(served)] = (served, features, None if len(keep) == len(names) else keep, probabilities)
        return known[1], known[2], known[3]


class _Clock:
    """Epoch seconds → ISO 8601 UTC text; the part up to the second is reused while it is the same."""

    def __init__(self):
        self._second, self._prefix = None, ""

    def iso(self, seconds: float) -> str:
        whole = int(seconds)
        if whole != self._second:
            self._second, self._prefix = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._prefix}.{int((seconds - whole) * 1e6):06d}Z"


def entries(waiting: list[_Pending], columns: _Columns, clock: _Clock) -> list[Entry]:
    """Waiting requests → one Entry per row."""
    out = []
    append = out.append
    for p in waiting:
        features, keep, probabilities = columns.of(p.served)
        rid, name, version, stamp, latency_ms = p.request_id, p.served.name, p.served.version, clock.iso(p.answered), p.latency_ms
        probas = p.probabilities
        for i, (row, prediction) in enumerate(zip(p.rows, p.predictions)):
            values = features(*row) if keep is None else features(*[row[j] for j in keep])
            proba = None if probas is None else probabilities(*probas[i])
            append(Entry(rid, i, stamp, name, version, values, prediction, proba, latency_ms))
    return out


# -- the log ----------------------------------------------------------------------------------------


class PredictionLog:
    """The bounded queue the endpoint appends to, and the thread that writes it to the sink."""

    def __init__(self, settings, metrics, open_sink=open_sink, flush_seconds: float = FLUSH_SECONDS):
        self.settings = settings
        self._metrics = metrics
        self._open = open_sink
        self._flush_seconds = flush_seconds
        self._queue: deque = deque()
        self._limit = settings.queue_rows
        self._added = 0  # rows appended: written by the event loop only
        self._taken = 0  # rows written or dropped by the writer: written by its thread only (no lock needed)
        self._refused = 0  # rows dropped at the queue (event loop) ...
        self._lost = 0  # ... and by the writer (its thread), counted apart for the same reason
        self._written = 0
        self._writer_cpu = 0.0  # seconds of CPU the writer thread used: what it takes from the requests
        sample = settings.sample
        self._threshold = None if sample >= 1 else int(sample * 2**32)  # crc32 of the request id below it: logged
        self._columns = _Columns(frozenset(settings.exclude))
        self._clock = _Clock()
        self._sink = None
        self._failing = False
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The event loop's side: no encoding, no I/O, no lock.
    def add(self, rid: str, served, rows: list[tuple], answers: list[dict], latency_ms: float) -> None:
        if self._threshold is not None and zlib.crc32(rid.encode()) >= self._threshold:
            return
        n = len(rows)
        if self._added - self._taken + n > self._limit:
            self._refused += n
            self._metrics.count_log_drops(n)
            return
        self._added += n
        self._queue.append(_waiting(rid, served, rows, answers, latency_ms))

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
            "prediction log: %d entries written, %d dropped; the writer thread used %.3f s of CPU",
            self._written, self._refused + self._lost, self._writer_cpu,
        )  # fmt: skip

    # The writer thread's side.
    def _run(self) -> None:
        self._reopen()  # at start-up: an unreachable sink says so now, not at the first request
        while True:
            stopping = self._stop.wait(self._flush_seconds)
            self._drain()
            if stopping:
                break
        if self._sink is not None:
            try:
                self._sink.close()
            except SinkError as exc:
                log.error("prediction log: %s", exc)

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
                item = queue.popleft()
                pending.append(item)
                rows += len(item.rows)
            try:
                if self._sink is None and not self._reopen():
                    raise SinkError("not open")
                self._sink.write(entries(pending, self._columns, self._clock))
                self._written += rows
                if self._failing:
                    log.info("prediction log: writing to %s again", self._sink.describe())
                    self._failing = False
            except SinkError as exc:
                self._lost += rows
                self._metrics.count_log_drops(rows)
                self._fail(exc)
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
            except SinkError:
                pass  # the failure is reported below
            self._sink = None
        if not self._failing and str(exc) != "not open":
            log.error("prediction log: %s; entries are dropped (counted in tand_prediction_log_dropped) until it works again", exc)
        self._failing = True

    def _describe(self) -> str:
        return self._sink.describe() if self._sink is not None else "the sink"
