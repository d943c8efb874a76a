"""The Docker image, built for real from a trained model with `invoke docker-build` and run with `invoke docker-run`.

One build per session (module fixture); every image and container it creates is removed afterwards
(vfs storage keeps every layer whole). Skipped where no engine answers, except under CI=true with
../shared/ present, where the engine is set up and a missing one is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ship_support import REPO, docker, docker_answers, free_port, image_ids, make_ship_project, must_have, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]
DOCKER_TOKEN = "docker-test-token-Hk3v"  # what env_files/docker_app.env holds in the test's project


@dataclass
class Image:
    tag: str
    project: Path
    env: dict
    build_output: str
    containers: list = field(default_factory=list)

    def invoke(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args], cwd=self.project,
                              env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def run_detached(self, *flags: str) -> str:
        name = f"tand-test-{uuid.uuid4().hex[:8]}"
        self.containers.append(name)
        result = self.invoke("docker-run", "--tag", self.tag, "--detach", "--name", name, *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        return name


def _remove_new_images(before: set[str]) -> None:
    """Remove what the build added (the image and its cached intermediate layers), children first."""
    for _ in range(10):
        leftover = image_ids() - before
        if not leftover:
            return
        docker("rmi", "--force", *leftover, check=False)


@pytest.fixture(scope="module")
def image(trained_model, tmp_path_factory):
    must_have(docker_answers(), "no Docker engine answers (start Docker; on this project's machines: ../shared/tools/docker-engine)")
    project = make_ship_project(tmp_path_factory.mktemp("docker") / "fork", trained_model.config, env_token=DOCKER_TOKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "API_TOKEN", "MODEL_"))}
    env.update(MLFLOW_TRACKING_URI=trained_model.project.tracking_uri, MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]), DOCKER_BUILDKIT="0")
    tag = f"tand-test-{uuid.uuid4().hex[:8]}:latest"
    before = image_ids()
    built = Image(tag, project, env, "")
    try:
        started = time.monotonic()
        result = built.invoke("docker-build", "--tag", tag, "--network", "host", timeout=2400)
        built.build_output = result.stdout + result.stderr
        assert result.returncode == 0, built.build_output[-5000:]
        print(f"\n{[l for l in result.stdout.splitlines() if l.startswith('built ')]} (test build: {time.monotonic() - started:.0f} s)")
        yield built
    finally:
        for name in built.containers:
            docker("rm", "--force", name, check=False)
        docker("rmi", "--force", tag, check=False)
        _remove_new_images(before)


def _health(name: str) -> str:
    state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
    if state["Status"] not in ("running", "created"):
        raise AssertionError(f"container {name} is {state['Status']}: {docker('logs', name, check=False).stderr[-3000:]}")
    return state.get("Health", {}).get("Status", "")


def _wait_healthy(name: str) -> None:
    def healthy():
        status = _health(name)
        assert status != "unhealthy", docker("logs", name, check=False).stderr[-3000:]
        return status == "healthy"

    wait_for(healthy, 240, f"container {name} to be healthy", interval=1)


def _post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"TOKEN": token} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _registry_answer(trained_model, monkeypatch) -> tuple[str, dict]:
    from conftest import load_registered

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model.project.tracking_uri)
    pipeline = load_registered(trained_model.model_name, alias="production").pipeline
    frame = pd.DataFrame([trained_model.request])
    return pipeline.predict(frame)[0], dict(zip(pipeline.classes_, pipeline.predict_proba(frame)[0]))


def test_the_build_bakes_the_model_and_reports_its_size(image):
    assert "baking breast-cancer-classifier version 1 (production)" in image.build_output
    assert "warm start: the baked model loads" in image.build_output
    assert "MB over its base python:3.11-slim" in image.build_output


def test_container_is_healthy_non_root_and_serves_the_registry_model(image, trained_model, monkeypatch):
    port = free_port()
    name = image.run_detached("--network", "host", "--port", str(port))
    _wait_healthy(name)
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    assert docker("inspect", "--format", "{{.Config.User}}", name).stdout.strip() == "10001"
    url = f"http://127.0.0.1:{port}/predict"
    status, answer = _post(url, trained_model.request, DOCKER_TOKEN)  # the token from env_files/docker_app.env
    assert status == 200, answer
    label, probabilities = _registry_answer(trained_model, monkeypatch)
    assert answer["prediction"] == label and answer["model_version"] == trained_model.version
    assert np.allclose([answer["probabilities"][k] for k in probabilities], list(probabilities.values()), atol=1e-6)
    assert _post(url, trained_model.request, None)[0] == 401
    # Only what serving needs is in the image: no tests, data, env files, training libraries.
    listing = set(docker("exec", name, "ls", "-A", "/app").stdout.split())
    assert listing == {"MODEL_STORE.txt", "app", "config.json", "database.db", "mlruns", "src"}
    probe = "import importlib.util as u; print([m for m in ('torch', 'matplotlib', 'pytest') if u.find_spec(m)])"
    assert docker("exec", name, "python", "-c", probe).stdout.strip() == "[]"


def test_the_baked_model_answers_with_no_network(image, trained_model):
    name = image.run_detached("--network", "none")
    _wait_healthy(name)
    query = (
        "import json, sys, urllib.request\n"
        "request = urllib.request.Request('http://127.0.0.1:8000/predict', data=sys.stdin.buffer.read(), method='POST',\n"
        f"    headers={{'TOKEN': {DOCKER_TOKEN!r}, 'Content-Type': 'application/json'}})\n"
        "print(urllib.request.urlopen(request, timeout=60).read().decode())\n"
    )
    result = subprocess.run(["docker", "exec", "-i", name, "python", "-c", query], input=json.dumps(trained_model.request),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_version"] == trained_model.version
