"""Helpers for the API tests: copies of the session's store, a real uvicorn on 127.0.0.1, polling."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import EXAMPLE_CONFIG, example_frame, stop_process_group

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-3f9a"


@dataclass
class Store:
    """A private copy of an MLflow store (database.db; new runs write to its own mlruns/)."""

    path: Path

    @property
    def db(self) -> Path:
        return self.path / "database.db"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db}"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client().set_registered_model_alias(name, alias, str(version))

    def register_again(self, name: str, version: int) -> int:
        """A new version holding the same logged model: a cheap 'new version' (no training)."""
        source = self.client().get_model_version(name, str(version)).source
        # MLflow resolves the logged model through the process-wide tracking URI, not the client's.
        saved = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        try:
            return int(self.client().create_model_version(name, source).version)
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI") if saved is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", saved)


def copy_store(source_db: Path, dest: Path) -> Store:
    """Copy a store's database; existing versions keep loading from the source's artifact folders
    (absolute paths), new runs go to dest/mlruns/, so the source store is never touched."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source_db, dest / "database.db")
    with sqlite3.connect(dest / "database.db") as connection:
        for (experiment_id,) in connection.execute("SELECT experiment_id FROM experiments").fetchall():
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (str(dest / "mlruns" / str(experiment_id)), experiment_id),
            )
    return Store(dest)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One snapshot folder for the session: servers on copies of the session store start from it."""
    return tmp_path_factory.mktemp("model-cache")


def settings(uri: str, model_name: str, cache_dir: Path | None = None, **overrides) -> Settings:
    return Settings(api_token=TOKEN, model_name=model_name, tracking_uri=uri, cache_dir=cache_dir, **overrides)


def auth(token: str = TOKEN) -> dict:
    return {"TOKEN": token}


def mixed_dataset(path: Path) -> Path:
    """The example data plus a string and an integer categorical column: a model with other inputs."""
    frame = example_frame()
    rng = np.random.default_rng(0)
    frame.insert(0, "clinic", rng.choice(["north", "south", "east"], len(frame)))
    frame.insert(1, "grade", rng.integers(1, 4, len(frame)))
    frame.to_csv(path, index=False)
    return path


def train_version(store: Store, config: dict, workdir: Path) -> int:
    """Train one version in this process into `store`, as `invoke train` would; returns its number."""
    from tand.config import parse_config
    from tand.training.run import train

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_DEFAULT_ARTIFACT_ROOT")}
    os.environ["MLFLOW_TRACKING_URI"] = store.uri
    os.environ["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = str(store.path / "mlruns")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return train(parse_config(config), project_dir=workdir, progress=False).version
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        # invoke serve and uvicorn run in their own process group: stop the workers too.
        stop_process_group(self.process)


def server_env(store_uri: str, config_path: Path, cache_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "API_TOKEN", "MODEL_"))}
    env.update(
        MLFLOW_TRACKING_URI=store_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        API_TOKEN=TOKEN,
        TAND_CONFIG=str(config_path),
        MODEL_CACHE_DIR=str(cache_dir),
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")]),
    )
    env.update(extra)
    return env


def start_server(cwd: Path, env: dict, command: list[str] | None = None, port: int | None = None, ready_timeout: float = 120) -> LiveServer:
    """uvicorn (or `invoke serve`) on 127.0.0.1 in its own process group; returns once /health/ready is 200."""
    port = port or free_port()
    command = command or [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1"]
    command = [*command, "--port", str(port)]
    log_path = cwd / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveServer(process, port, log_path)

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
        return httpx.get(f"{server.url}/health/ready", timeout=5).status_code == 200

    try:
        wait_until(ready, ready_timeout, f"the server on port {port} to be ready")
    except AssertionError:
        server.stop()
        raise
    return server


def write_config(path: Path, model_name: str, **app) -> Path:
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["mlflow"]["model_name"] = model_name
    config.pop("$schema", None)
    config["app"].update(app)
    path.write_text(json.dumps(config))
    return path
