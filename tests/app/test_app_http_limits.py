"""HTTP limits on the wire (app/http_limits.py): one real uvicorn on 127.0.0.1, started with `invoke serve`'s
command line, raw sockets for the clients that misbehave. Every client is bounded in bytes, count and time."""

from __future__ import annotations

import select
import socket
import threading
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from app.http_limits import redact_query
from app_support import model_cache  # noqa: F401 - a fixture
from app_support import TOKEN, free_port, server_env, start_server, wait_until, write_config
from cli.serving import uvicorn_command

pytestmark = pytest.mark.slow
HEADER_TIMEOUT, BODY_TIMEOUT = 1, 2  # seconds; small so the tests are short (defaults: 10 and 30)
STEP = 0.2  # seconds a slow client waits for the server between its bytes
MAX_STEPS = 150  # 30 s: far beyond either timeout, so a client still going after them was not cut off


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("http-limits")
    config = write_config(root / "config.json", trained_model.model_name)
    env = server_env(trained_model.project.tracking_uri, config, model_cache,
                     HEADER_TIMEOUT=str(HEADER_TIMEOUT), BODY_TIMEOUT=str(BODY_TIMEOUT))
    port = free_port()
    live = start_server(root, env, command=uvicorn_command("127.0.0.1", port, 1, False), port=port)
    yield live
    live.stop()


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes (b"" when it closes without a word)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _trickle(sock: socket.socket, first: bytes, piece: bytes) -> tuple[int, bytes]:
    """Send `first`, then `piece` every STEP seconds until the server closes the connection; returns how many
    steps that took (MAX_STEPS: it never did) and everything the server sent."""
    sock.sendall(first)
    received = b""
    for step in range(MAX_STEPS):
        readable, _, _ = select.select([sock], [], [], STEP)
        try:
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return step, received
                received += chunk
            else:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return step, received
    return MAX_STEPS, received


def _rss_peak(pid: int) -> int:
    """Peak resident memory (VmHWM, kB) since the last reset."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _reset_rss_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak to the current RSS
    except OSError:
        pass  # an older kernel: the peak since start is then the baseline, which only makes the check looser


def _oversized_header(server, total: int, outcome: list) -> None:
    """Send one request whose header grows to `total` bytes; record how much went out before the server stopped it."""
    piece = b"a" * 65536
    sent = 0
    with closing(_connect(server)) as sock:
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
            outcome.append((sent, _answer(sock)))
        except (BrokenPipeError, ConnectionResetError):
            outcome.append((sent, b""))


def test_oversized_headers_are_refused_and_memory_stays_bounded(server):
    # A complete request whose headers are over the limit: a 431 with the reason, the app never runs.
    with closing(_connect(server)) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 80_000 + b"\r\n\r\n")
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"detail": "request headers over 65536 bytes (MAX_HEADER_BYTES)"' in answer
    # Twenty clients at once, each trying to send a 50 MB header: each is cut off after a few MB at most (what
    # the sockets' buffers hold), and the server's peak memory barely moves (before the limit: +590 MB).
    pid = server.process.pid
    _reset_rss_peak(pid)
    before = _rss_peak(pid)
    outcomes: list = []
    clients = [threading.Thread(target=_oversized_header, args=(server, 50 * 2**20, outcomes)) for _ in range(20)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=120)
    assert len(outcomes) == 20 and all(sent < 20 * 2**20 for sent, _ in outcomes), [sent for sent, _ in outcomes]
    assert all(answer == b"" or answer.startswith(b"HTTP/1.1 431 ") for _, answer in outcomes)
    grown = (_rss_peak(pid) - before) / 1024
    print(f"\n20 clients sending 50 MB headers: peak RSS +{grown:.0f} MB, cut off after {max(s for s, _ in outcomes) / 2**20:.1f} MB at most")
    assert grown < 64, f"peak RSS grew by {grown:.0f} MB"
    assert httpx.get(f"{server.url}/health/ready", timeout=30).status_code == 200


def test_slow_headers_are_cut_off_while_others_are_served(server, trained_model):
    silent = [_connect(server) for _ in range(20)]  # slowloris: connect, send nothing
    try:
        # Meanwhile a normal client is served.
        for _ in range(5):
            assert httpx.get(f"{server.url}/health/ready", timeout=30).status_code == 200
        answer = httpx.post(f"{server.url}/predict", json=trained_model.request, headers={"TOKEN": TOKEN}, timeout=30)
        assert answer.status_code == 200, answer.text
        # A client that keeps sending header lines is cut off too: the deadline runs from the connection,
        # not from its last byte.
        with closing(_connect(server)) as sock:
            steps, answer = _trickle(sock, b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Slow: 1\r\n")
        assert steps < MAX_STEPS, "a client trickling header lines was never cut off"
        assert answer.startswith(b"HTTP/1.1 408 ") and b"request headers not received within 1 s" in answer, answer[:300]
        for sock in silent:
            assert _answer(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in silent:
            sock.close()
    assert "closed the connection: request headers not received within 1 s" in server.log()


def test_kept_alive_and_pipelined_requests_are_served_and_each_request_has_its_own_header_deadline(server):
    request = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with closing(_connect(server)) as sock:
        sock.sendall(request * 2)  # pipelined: both answered, in order, on the same connection
        received = b""
        while received.count(b"HTTP/1.1 200 ") < 2:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
        # A third request on the kept-alive connection that never completes its headers gets its own 408.
        steps, answer = _trickle(sock, b"GET /health/live HTTP/1.1\r\n", b"X-Slow: 1\r\n")
    # (what came first may be the rest of the second 200's body)
    assert steps < MAX_STEPS and b"HTTP/1.1 408 " in answer and answer.endswith(b"not received within 1 s\"}"), answer[:300]


@pytest.mark.parametrize("token", [TOKEN, None], ids=["read-by-predict", "answered-401-before-the-body"])
def test_a_chunked_body_that_never_ends_is_cut_off(server, token):
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n" + (b"TOKEN: %s\r\n" % token.encode() if token else b"") + b"\r\n1\r\n[\r\n")
    with closing(_connect(server)) as sock:
        steps, answer = _trickle(sock, head, b"1\r\n \r\n")
    assert steps < MAX_STEPS, "a never-ending chunked body was never cut off"
    if token:  # the app was still reading the body: it is told why
        assert answer.startswith(b"HTTP/1.1 408 ") and b"request body not received within 2 s" in answer, answer[:300]
    else:  # the app answered at once; the body kept coming until the deadline, with nothing after the 401
        assert answer.startswith(b"HTTP/1.1 401 ") and answer.count(b"HTTP/1.1") == 1, answer[:300]
    assert httpx.get(f"{server.url}/health/ready", timeout=30).status_code == 200


def test_query_values_never_reach_the_access_log(server):
    secret = "query-secret-9Zr4"
    answer = httpx.get(f"{server.url}/health/live", params={"token": secret, "api_key": secret}, timeout=30)
    assert answer.status_code == 200
    line = wait_until(lambda: next((l for l in server.log().splitlines() if "/health/live?" in l), None), 30,
                      "the access log line")
    assert "/health/live?token=***&api_key=***" in line
    assert secret not in server.log()


def test_query_redaction_keeps_names_only():
    assert redact_query("/predict") == "/predict"
    assert redact_query("/predict?token=abc&x=1") == "/predict?token=***&x=***"
    assert redact_query("/p?abc123&flag=") == "/p?***&flag=***"
