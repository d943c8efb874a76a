"""HTTP limits uvicorn 0.54 lacks, and an access log without query values.

uvicorn's httptools protocol bounds neither the size of a request's headers (httptools gathers a 100 MB
header in memory, concatenating as it goes) nor the time a client takes to send them or its body: its only
timer is the keep-alive one, armed after a response, so a client that connects and trickles bytes, or sends
a chunked body that never ends, holds its connection for ever. uvicorn's h11 protocol
(`--h11-max-incomplete-event-size`) bounds the headers' size but has no such timers either and parses in
pure Python; `--limit-concurrency` answers 503 to everyone once slow clients hold the connections. So this
small subclass of uvicorn's own protocol adds the three limits (`HttpLimits` in app/settings.py, from the
environment) and otherwise leaves uvicorn's parsing, flow control and pipelining as they are.
`invoke serve` and the Dockerfile select it: `uvicorn --http app.http_limits:LimitedHttpToolsProtocol`.
"""

from __future__ import annotations

import json
import logging
from asyncio import TimerHandle
from functools import cache

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.settings import HttpLimits

PROTOCOL = "app.http_limits:LimitedHttpToolsProtocol"  # uvicorn's --http value
REDACTED = "***"


@cache
def _limits() -> HttpLimits:
    # Once per process, at its first connection (uvicorn builds a protocol per connection); the app's
    # start-up has already refused bad values with one line (Settings.from_env reads them too).
    return HttpLimits.from_env()


def redact_query(target: str) -> str:
    """`/path?token=abc&x=1` -> `/path?token=***&x=***`: parameter names stay, no value reaches a log."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = (name + "=" + REDACTED if sep else REDACTED for name, sep, _ in (p.partition("=") for p in query.split("&")))
    return f"{path}?{'&'.join(parts)}"


class RedactQueryValues(logging.Filter):
    """On uvicorn's access logger: its records carry (client, method, path with query, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def install_access_log_redaction(logger: logging.Logger) -> None:
    if not any(isinstance(f, RedactQueryValues) for f in logger.filters):
        logger.addFilter(RedactQueryValues())


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header bytes and deadlines for headers and body."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits()
        install_access_log_redaction(self.access_logger)
        self._awaiting_headers = True  # bytes read now belong to a request line or headers
        self._header_bytes = 0
        self._deadline: TimerHandle | None = None
        self._refused = False

    # --- connection events -------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, "request headers")

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Checked after parsing, so a read that completes the headers (and carries body bytes) is not
        # counted against them; the parser holds at most the limit plus one read (256 KiB) of headers.
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse_headers()

    # --- parser callbacks (from inside super().data_received) ---------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a further request on a kept-alive connection: its own header deadline
            self._arm(self.limits.header_timeout, "request headers")

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        # The complete headers are measured exactly (a read may have carried them whole).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_headers()
            return
        self._awaiting_headers, self._header_bytes = False, 0
        self._disarm()
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, "request body")

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._awaiting_headers = True
        super().on_message_complete()

    # --- limits ---------------------------------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refuse(408, f"{what} not received within {seconds:g} s")

    def _refuse_headers(self) -> None:
        self._refuse(431, f"request headers over {self.limits.max_header_bytes} bytes (MAX_HEADER_BYTES)")

    def _refuse(self, status: int, detail: str) -> None:
        """Close the connection, first answering `status` with a JSON detail where no answer is owed or begun."""
        self._refused = True
        self._disarm()
        cycle = self.cycle
        in_progress = cycle is not None and not cycle.response_complete
        if in_progress:
            # The app may be waiting for the body: it now reads a disconnect, and whatever it sends is
            # dropped (as after a client hang-up) instead of following this answer on the wire.
            cycle.disconnected = True
            cycle.message_event.set()
        if self._awaiting_headers:  # a request the app never saw; an earlier one may still be answering
            answer = not in_progress
        else:  # the body of the request the app is handling (or has already answered, e.g. 401)
            answer = in_progress and not cycle.response_started
        if answer:
            body = json.dumps({"detail": detail}).encode()
            head = [STATUS_LINE[status]]
            head += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
            head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
        client = "%s:%d - " % self.client if self.client else ""
        self.logger.warning("%sclosed the connection: %s", client, detail)
        self.transport.close()
