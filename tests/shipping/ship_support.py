"""Helpers for the shipping tests: a project folder as a fork has it, the EB CLI, the AWS emulator, Docker.

Not a conftest.py: a second conftest module would clash with tests/conftest.py under pytest's
default import mode, so tests import what they use from here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import stop_process_group

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
TOKEN = "ship-test-token-7Qx2"  # a made-up token: the tests check it never reaches a bundle
# What `invoke docker-build` and the bundle need from a project (tests, data and the env files are not among them).
SHIPPED = ("Dockerfile", ".dockerignore", "requirements-serve.txt", "app", "src", "deploy")
MOTO_EB = Path(__file__).with_name("moto_eb_platforms.py")


def must_have(condition: bool, reason: str) -> None:
    """Skip with `reason`; under CI with ../shared/ present (where the tools are set up), fail instead."""
    if condition:
        return
    if os.environ.get("CI") == "true" and SHARED.is_dir():
        pytest.fail(f"{reason} (CI=true with ../shared/ present: this must work here)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_ship_project(path: Path, config: dict, env_token: str = "change-me-example-token") -> Path:
    """A project folder with what shipping reads: the repo's shippable files, a config, env files
    (with the template's example token unless `env_token` is given, as a fork has them in git)."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "eb-cli")
    for name in SHIPPED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=ignore)
        else:
            shutil.copy2(source, path / name)
    config = {k: v for k, v in config.items() if k != "$schema"}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    env_dir = path / "env_files"
    env_dir.mkdir(exist_ok=True)
    (env_dir / "docker_app.env").write_text(
        "MLFLOW_TRACKING_URI=sqlite:///database.db\nMLFLOW_DISABLE_TELEMETRY=true\n"
        f"MODEL_ALIAS=production\nAPI_TOKEN={env_token}\n"
    )
    (env_dir / "app.env").write_text(f"API_TOKEN={env_token}\n")
    (path / ".gitignore").write_text("build/\n.elasticbeanstalk/*\n__pycache__/\nmlruns/\ndatabase.db\n")
    return path


def git(path: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True, text=True).stdout


def commit_all(path: Path) -> None:
    if not (path / ".git").exists():
        git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "project")


# --- the EB CLI and the AWS emulator ---------------------------------------------------------------


def find_eb() -> str | None:
    """`eb` from EB_CLI, PATH, or the venv .ci/run installs it in (it pins packages that clash with ours)."""
    candidates = [os.environ.get("EB_CLI"), shutil.which("eb"), str(REPO / ".venv" / "eb-cli" / "bin" / "eb")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@dataclass
class Moto:
    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _wait_until_answering(started, url: str, log_path: Path, timeout: float, what: str) -> None:
    """Poll `url` until it answers 200; stop `started` (its .process, .stop()) and fail with its log if it exits or never does."""
    import urllib.request

    def answering():
        if started.process.poll() is not None:
            raise AssertionError(f"{what}: the process exited: {log_path.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(url, timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(answering, timeout, what)
    except AssertionError:
        started.stop()
        raise


def start_moto(log_path: Path) -> Moto:
    """moto's server on 127.0.0.1 with the Beanstalk platform calls `eb init` needs (see moto_eb_platforms.py)."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(MOTO_EB), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    moto = Moto(process, f"http://127.0.0.1:{port}")
    _wait_until_answering(moto, f"{moto.url}/moto-api/", log_path, 60, "moto's server")
    return moto


def aws_env(endpoint: str, home: Path) -> dict:
    """Fake credentials and the emulator's endpoint for every AWS client (botocore reads AWS_ENDPOINT_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1", HOME=str(home),
    )
    return env


# --- a live API server ---------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        stop_process_group(self.process)


def start_api(cwd: Path, tracking_uri: str, config_path: Path, token: str = TOKEN) -> Server:
    """The real app under uvicorn on 127.0.0.1, as an instance runs it; returns once it is ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "API_TOKEN", "MODEL_"))}
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", API_TOKEN=token,
        TAND_CONFIG=str(config_path), MODEL_CACHE_DIR="", MODEL_REFRESH_INTERVAL="0",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    )
    log_path = cwd / f"api-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    _wait_until_answering(server, f"{server.url}/health/ready", log_path, 180, "the API to be ready")
    return server


# --- Docker ----------------------------------------------------------------------------------------


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout, stdin=subprocess.DEVNULL)


def image_ids() -> set[str]:
    return set(docker("images", "--all", "--quiet", "--no-trunc").stdout.split())
