"""POST /predict as a plain ASGI application, mounted as a Starlette `Route` inside FastAPI's stack.

A FastAPI route function costs about 55 µs a call in request objects, dependency solving and response
models; a single-row prediction here costs about 45 µs (validating from bytes, NumPy forward pass, one
JSON write). So /predict is an ASGI endpoint (about 5 µs of its own) mounted in the app's router as a
plain Starlette `Route` (about 15 µs more): it runs inside FastAPI's middleware stack, so a user's
middleware (`app.add_middleware`, `@app.middleware("http")`) and exception handlers apply to it as to
every route. The OpenAPI document describes it
(app.openapi), since FastAPI documents only its own route functions.

Every answer is the one FastAPI would give: 401 (with WWW-Authenticate), 413, 422 naming
each field, 503 while no model is loaded, all as JSON {"detail": ...}. Each is counted and timed
for /metrics (app/metrics.py) after it is sent.

With the prediction log on (`log`, from app.routes.add_routes), a 200 answer carries X-Request-ID (the client's, or a
new one) and, after it is sent, its rows and answers are appended to the log's bounded queue as entries;
they are encoded a batch at a time and written by a thread, so no I/O is on the event loop
(app/predict/prediction_log.py). With it off, the path is unchanged.
"""

from __future__ import annotations

import json
import secrets
from time import perf_counter

from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from app.auth import UNAUTHORIZED, presented_token
from app.predict.coalesce import MAX_COALESCED_ROWS, Coalescer
from app.predict.explain import NotExplainable, explained_answers, wants_explanation
from app.store.serving import ModelStore
from app.predict.predictor import OutOfRange
from app.predict.parser import MAX_ERRORS, RequestError
from app.predict.prediction_log import PredictionLog, log_body, request_id

# Larger batches are predicted in a thread so the event loop keeps answering health checks.
THREAD_ROWS = 256
JSON = (b"content-type", b"application/json")


class BodyTooLarge(Exception):
    pass


def too_large_detail(max_bytes: int) -> str:
    return f"request body too large: the limit is {max_bytes} bytes (MAX_BODY_BYTES); split the batch"


class ClientGone(Exception):
    pass


async def read_body(scope, receive, max_bytes: int) -> bytes:
    """The whole body, refused past `max_bytes`: by its Content-Length before reading, and chunked
    bodies as they arrive, so a client cannot make a worker buffer gigabytes.

    Not FastAPI's own `max_body_size`: for a body whose Content-Length is over the limit, its
    middleware replaces whatever the app answers with a plain-text "Content Too Large", and every
    answer of this API is JSON naming the limit."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > max_bytes:
                raise BodyTooLarge
            break
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send, status: int, content: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON, (b"content-length", str(len(content)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": content})


def unavailable_detail(store: ModelStore) -> dict:
    return {"detail": f"no model is loaded yet: {store.last_error}"}


def out_of_range_errors(exc: OutOfRange, batch: bool) -> list[dict]:
    errors = []
    for row, feature in exc.problems[:MAX_ERRORS]:
        loc = ["body", *([row] if batch else []), *([feature] if feature else [])]
        what = "this value is" if feature else "these values are"
        errors.append({"loc": loc, "msg": f"{what} too far out of range for the model to compute with", "type": "value_out_of_range"})
    return errors


class PredictEndpoint:
    """token → model → body → rows → answers → JSON, for one /predict request."""

    def __init__(self, store: ModelStore, api_token: str, max_body_bytes: int, log: PredictionLog | None = None):
        self.store = store
        self._token = api_token.encode("utf-8")
        self._max_body = max_body_bytes
        self._coalescer = Coalescer()
        self._metrics = store.metrics  # app/metrics.py: requests, latency, rows and predictions
        self._log = log  # None: the prediction log is off

    async def __call__(self, scope, receive, send) -> None:
        started = perf_counter()
        status = await self._respond(scope, receive, send, started)
        if status:
            self._metrics.predict_answered(status, perf_counter() - started)

    async def _respond(self, scope, receive, send, started: float) -> int | None:
        """Answers the request; returns the status sent (None: the client left before the body arrived)."""
        token = presented_token(scope["headers"])
        if token is None or not secrets.compare_digest(token, self._token):
            content = json.dumps({"detail": UNAUTHORIZED}).encode()
            await send_json(send, 401, content, [(b"www-authenticate", b"Bearer")])
            return 401
        served = self.store.current  # one reference for the whole request, even if a reload swaps it meanwhile
        if served is None:
            await send_json(send, 503, to_json(unavailable_detail(self.store)))
            return 503
        try:
            body = await read_body(scope, receive, self._max_body)
        except BodyTooLarge:
            # Connection: close, so the server does not read (or wait for) the rest of the body.
            content = to_json({"detail": too_large_detail(self._max_body)})
            await send_json(send, 413, content, [(b"connection", b"close")])
            return 413
        except ClientGone:
            return None
        try:
            rows, batch = served.parser.parse(body)
            logged_body = None if self._log is None else log_body(body, batch)
            if scope.get("query_string") and wants_explanation(scope):  # app/predict/explain.py
                # answers and explanations from one model input matrix, in a thread
                answers = await run_in_threadpool(explained_answers, served.predictor, rows)
            elif len(rows) > THREAD_ROWS:
                answers = await run_in_threadpool(served.predictor.answers, rows)
            elif len(rows) <= MAX_COALESCED_ROWS and served.predictor.batch_invariant:
                answers = await self._coalescer.answers(served, rows)
            else:
                answers = served.predictor.answers(rows)
        except NotExplainable as exc:
            await send_json(send, 422, to_json({"detail": str(exc)}))
            return 422
        except RequestError as exc:
            await send_json(send, 422, to_json({"detail": exc.errors}))
            return 422
        except OutOfRange as exc:
            await send_json(send, 422, to_json({"detail": out_of_range_errors(exc, batch)}))
            return 422
        version = served.version
        payload = {"predictions": answers, "model_version": version} if batch else {**answers[0], "model_version": version}
        content = to_json(payload)
        # Server-Timing: reading, validating, predicting and encoding, in milliseconds (the benchmark reads it).
        timing = f"app;dur={(perf_counter() - started) * 1000:.3f}".encode()
        headers = [(b"x-model-version", str(version).encode()), (b"server-timing", timing)]
        log = self._log
        if log is None:
            await send_json(send, 200, content, headers)
        else:
            rid = request_id(scope["headers"])
            headers.append((b"x-request-id", rid.encode()))
            await send_json(send, 200, content, headers)
            log.add(rid, served, rows, answers, (perf_counter() - started) * 1000, logged_body)
        self._metrics.predicted(answers, served.schema.task == "classification")
        return 200
