"""Helpers for the team set-up tests: PostgreSQL databases, servers started and stopped by PID, a TCP cut-off.

Every process is started in a session of its own (its PID is its process group), so stopping it
also stops what it spawned (`mlflow server` runs uvicorn as a child; uvicorn --workers forks).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import example_csv

REPO = Path(__file__).resolve().parents[3]
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
TOKEN = "team-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1, alive=None):
    """Poll `predicate` until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if alive is not None:
            alive()
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# -- PostgreSQL -------------------------------------------------------------------------


def pg_admin(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=3, autocommit=True)


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when PostgreSQL is not on 127.0.0.1:5432."""
    import psycopg

    try:
        with pg_admin() as conn:
            conn.execute("SELECT 1")
        return
    except psycopg.OperationalError as exc:
        problem = str(exc).strip().splitlines()[0]
    reason = (
        f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} as user {PG_USER} ({problem}); the team set-up tests "
        "need it (start it, e.g. pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_database():
    """A new, empty database; dropped afterwards (connections included)."""
    name = f"tand_test_{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_uri(dbname: str, port: int = PG_PORT) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{port}/{dbname}"


def count_rows(dbname: str, table: str) -> int:
    with pg_admin(dbname) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- processes ----------------------------------------------------------------------------


class Process:
    """A child process in its own session, its output in a log file; `stop()` ends its whole group."""

    def __init__(self, name: str, command: list[str], log_dir: Path, cwd: Path, env: dict):
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def stop(self, grace: float = 15) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever it spawned may outlive it (the group id stays ours until the last member exits).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "API_TOKEN", "MODEL_", "AWS_"))}
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    )
    env.update(extra)
    return env


def start_tracking_server(
    work: Path, backend: str, artifacts: str, env: dict | None = None, name: str = "mlflow"
) -> tuple[Process, str]:
    """`invoke mlflow-server` on a free port; returns the process and its http:// URI once /health answers."""
    port = free_port()
    command = [*INVOKE, "mlflow-server", "--backend-store-uri", backend, "--artifacts-destination", artifacts,
               "--port", str(port), "--workers", "1"]  # fmt: skip
    server = Process(name, command, work, work, env or base_env())
    uri = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(f"{uri}/health"), 180, f"{name} at {uri}", interval=0.25, alive=server.check_alive)
    return server, uri


def start_moto(work: Path) -> tuple[Process, str]:
    port = free_port()
    moto = Process(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], work, work, base_env()
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(f"{endpoint}/moto-api/"), 60, "moto", alive=moto.check_alive)
    return moto, endpoint


def start_replica(
    work: Path, project: Path, tracking_uri: str, name: str, workers: int = 1, refresh: float = 2
) -> tuple[Process, int]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]  # fmt: skip
    env = base_env(
        API_TOKEN=TOKEN,
        MLFLOW_TRACKING_URI=tracking_uri,
        MODEL_REFRESH_INTERVAL=str(refresh),
        MODEL_CACHE_DIR=str(work / "model-cache"),
        TAND_CONFIG=str(project / "config.json"),
    )
    return Process(name, command, work, project, env), port


def get_json(url: str, timeout: float = 10) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def post_json(url: str, body, timeout: float = 30) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"TOKEN": TOKEN, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}"), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


@contextlib.contextmanager
def tracking(uri: str):
    """This process's MLflow calls go to `uri` (other tests may have set the tracking URI globally)."""
    import mlflow

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_project(root: Path, config: dict) -> Path:
    """A project folder: the example data and a config whose data path is absolute."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    shutil.copy(example_csv(), root / "data" / "data.csv")
    config = json.loads(json.dumps(config))
    config["train"]["data_path"] = str(root / "data" / "data.csv")
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root


def invoke(project: Path, *args: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*INVOKE, *args],
        cwd=project,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# -- a TCP forwarder the test can cut -------------------------------------------------


class CuttableLink:
    """127.0.0.1:port → PostgreSQL. `cut()` drops every connection and refuses new ones, as a network
    partition between the tracking server and its database would; `mend()` lets them through again."""

    def __init__(self, target_port: int = PG_PORT):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._sockets.difference_update((source, sink))

    def cut(self) -> None:
        self.open = False
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
