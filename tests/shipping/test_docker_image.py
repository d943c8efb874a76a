"""The Docker image, built for real from a trained model with `invoke docker-build` and run with `invoke docker-run`.

One build per session (module fixture) and one rebuild; every image and container they create is removed
afterwards (vfs storage keeps every layer whole). Skipped where no engine answers, except under CI=true with
../shared/ present, where the engine is set up and a missing one is a failure.
"""

from __future__ import annotations

import json
import os
import re
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
EXPORTED_TOKEN = "exported-token-Vb8q"  # what a user exported in their shell: it must win over the file


def _dangling() -> set[str]:
    return set(docker("images", "--filter", "dangling=true", "--quiet", "--no-trunc").stdout.split())


@dataclass
class Image:
    tag: str
    project: Path
    env: dict
    build_output: str
    dangling_before: set = field(default_factory=set)
    containers: list = field(default_factory=list)

    def invoke(self, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args], cwd=self.project,
                              env=env or self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def run_detached(self, *flags: str, exported: dict | None = None) -> tuple[str, str]:
        """Start a container with `invoke docker-run`, as a user would: MLFLOW_* (set for the build, which stages
        the store) are not in the user's shell; `exported` is. Returns its name and the task's output."""
        name = f"tand-test-{uuid.uuid4().hex[:8]}"
        self.containers.append(name)
        env = {k: v for k, v in self.env.items() if not k.startswith("MLFLOW_")} | (exported or {})
        result = self.invoke("docker-run", "--tag", self.tag, "--detach", "--name", name, *flags, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return name, result.stdout


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
    built = Image(tag, project, env, "", dangling_before=_dangling())
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


def test_the_build_leaves_no_untagged_image(image):
    assert _dangling() <= image.dangling_before


def test_container_is_healthy_non_root_and_serves_the_registry_model(image, trained_model, monkeypatch):
    port = free_port()
    name, output = image.run_detached("--network", "host", "--port", str(port), exported={"API_TOKEN": EXPORTED_TOKEN})
    assert "from your environment (wins over env_files/docker_app.env): API_TOKEN" in output
    assert EXPORTED_TOKEN not in output  # docker takes the value from the environment, not the command line
    _wait_healthy(name)
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    assert docker("inspect", "--format", "{{.Config.User}}", name).stdout.strip() == "10001"
    url = f"http://127.0.0.1:{port}/predict"
    status, answer = _post(url, trained_model.request, EXPORTED_TOKEN)  # the exported token wins over the file's
    assert status == 200, answer
    label, probabilities = _registry_answer(trained_model, monkeypatch)
    assert answer["prediction"] == label and answer["model_version"] == trained_model.version
    assert np.allclose([answer["probabilities"][k] for k in probabilities], list(probabilities.values()), atol=1e-6)
    assert _post(url, trained_model.request, None)[0] == 401
    assert _post(url, trained_model.request, DOCKER_TOKEN)[0] == 401
    # With --network host it listens on 127.0.0.1 only (the default --host), under the limited protocol.
    environment = docker("exec", name, "sh", "-c", "echo $HOST; cat /proc/1/cmdline | tr '\\0' ' '").stdout
    assert environment.startswith("127.0.0.1\n") and "--http app.http_limits:LimitedHttpToolsProtocol" in environment
    # Only what serving needs is in the image: no tests, data, env files, training libraries.
    listing = set(docker("exec", name, "ls", "-A", "/app").stdout.split())
    assert listing == {"MODEL_STORE.txt", "app", "config.json", "database.db", "mlruns", "src"}
    probe = "import importlib.util as u; print([m for m in ('torch', 'matplotlib', 'pytest') if u.find_spec(m)])"
    assert docker("exec", name, "python", "-c", probe).stdout.strip() == "[]"


def test_the_baked_model_answers_with_no_network_and_two_workers_count_as_one(image, trained_model):
    """No network and two uvicorn workers (as Elastic Beanstalk runs it): the image gives the workers a shared
    PROMETHEUS_MULTIPROC_DIR, so every scrape of /metrics counts every worker's requests."""
    name, _ = image.run_detached("--network", "none", "--workers", "2")  # the token from env_files/docker_app.env
    _wait_healthy(name)
    query = (
        "import json, sys, urllib.request\n"
        f"headers = {{'TOKEN': {DOCKER_TOKEN!r}, 'Content-Type': 'application/json'}}\n"
        "body = sys.stdin.buffer.read()\n"
        "answers = [json.loads(urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8000/predict', data=body,\n"
        "    method='POST', headers=headers), timeout=60).read()) for _ in range(8)]\n"
        "scrapes = [urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8000/metrics', headers=headers),\n"
        "    timeout=60).read().decode() for _ in range(6)]\n"
        "print(json.dumps({'answers': answers, 'scrapes': scrapes}))\n"
    )
    result = subprocess.run(["docker", "exec", "-i", name, "python", "-c", query], input=json.dumps(trained_model.request),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {answer["model_version"] for answer in out["answers"]} == {trained_model.version}
    from prometheus_client.parser import text_string_to_metric_families

    for scrape in out["scrapes"]:  # whichever worker answers the scrape, it counts all 8
        samples = [s for family in text_string_to_metric_families(scrape) for s in family.samples
                   if s.name == "tand_http_requests_total" and s.labels.get("route") == "/predict"]
        assert sum(s.value for s in samples if s.labels.get("status") == "200") == 8, scrape[:2000]
    files = docker("exec", name, "sh", "-c", "ls $(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^PROMETHEUS_MULTIPROC_DIR=//p')").stdout.split()
    # prometheus_client names each file by the process that writes it (counter_<pid>.db, gauge_livemax_<pid>.db):
    # both workers share the folder, so the sums above are over both, even if one worker took every request
    pids = {re.search(r"_(\d+)\.db$", f).group(1) for f in files if re.search(r"_(\d+)\.db$", f)}
    assert len(pids) >= 2, f"expected the files of 2 workers in PROMETHEUS_MULTIPROC_DIR, found {files}"


def _step_cached(output: str, instruction: str) -> bool:
    """Whether the classic builder reused the layer of the step that starts with `instruction`."""
    lines = output.splitlines()
    step = next(i for i, line in enumerate(lines) if line.startswith("Step ") and f" : {instruction}" in line)
    return lines[step + 1].strip() == "---> Using cache"


def test_a_rebuild_reuses_the_dependency_layer_and_removes_the_image_it_replaces(image):
    """Last in this module: it replaces the image. A changed context (as after `invoke train`) with the same
    requirements: the dependency layer comes from the cache, and the image the tag named before is removed."""
    for name in image.containers:  # a container would keep the old image in use
        docker("rm", "--force", name, check=False)
    first = docker("image", "inspect", "--format", "{{.Id}}", image.tag).stdout.strip()
    config = image.project / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()), indent=4) + "\n")
    started = time.monotonic()
    result = image.invoke("docker-build", "--tag", image.tag, "--network", "host", timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    print(f"\nrebuild with the dependency layer cached: {time.monotonic() - started:.0f} s")
    assert _step_cached(output, "RUN apt-get update") and not _step_cached(output, "COPY . ./")
    assert f"removed the previous {image.tag} image ({first.removeprefix('sha256:')[:12]})" in output
    assert first not in image_ids() and _dangling() <= image.dangling_before
