"""The model-refresh script the timer runs on each instance, run here against a live API server.

An instance-style environment: the script finds `get-config` on PATH (on an instance, in
/opt/elasticbeanstalk/bin; here a small stand-in that answers like it) and calls the API it is
pointed at (on an instance, nginx on 127.0.0.1:80; here uvicorn on a free port).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ship_support import REPO, TOKEN, free_port, start_api
from tand.config import parse_config
from tand.shipping.eb import render, settings_from

pytestmark = pytest.mark.slow
SCRIPT = ".platform/tand/tand-model-refresh"


@pytest.fixture(scope="module")
def refresh_script(tmp_path_factory):
    settings = settings_from(parse_config({"train": {"labels_column": "y"}}), {"API_TOKEN": TOKEN})
    text = {f.path: f.text for f in render(REPO, settings)}[SCRIPT]
    path = tmp_path_factory.mktemp("instance") / "tand-model-refresh"
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def api(trained_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("api")
    config = workdir / "config.json"
    config.write_text(json.dumps(trained_model.config))
    server = start_api(workdir, trained_model.project.tracking_uri, config)
    yield server
    server.stop()


def _get_config(tmp_path, token: str | None):
    """A stand-in for /opt/elasticbeanstalk/bin/get-config: `get-config environment -k NAME` prints one property."""
    bin_dir = tmp_path / "eb-bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "get-config"
    answer = f'[ "$1 $2 $3" = "environment -k API_TOKEN" ] && printf %s {token!r} && exit 0\n' if token else ""
    fake.write_text(f'#!/bin/bash\n{answer}echo "key not found" >&2\nexit 1\n')
    fake.chmod(0o755)
    return bin_dir


def _run(script, bin_dir, url):
    return subprocess.run([str(script)], capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TAND_API_URL": url})


def test_refresh_triggers_update_model_and_logs_it(refresh_script, api, trained_model, tmp_path):
    result = _run(refresh_script, _get_config(tmp_path, TOKEN), api.url)
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.strip()
    assert line.startswith("tand-model-refresh: ok: ")
    assert json.loads(line.removeprefix("tand-model-refresh: ok: "))["version"] == trained_model.version
    assert "POST /update-model HTTP/1.1\" 200" in api.log_path.read_text()


def test_a_wrong_token_is_logged_as_a_failure(refresh_script, api, tmp_path):
    result = _run(refresh_script, _get_config(tmp_path, "not-the-token"), api.url)
    assert result.returncode == 1
    assert result.stdout.startswith(f"tand-model-refresh: failed: HTTP 401 from {api.url}/update-model: ")


def test_no_token_in_the_environment_properties(refresh_script, api, tmp_path):
    result = _run(refresh_script, _get_config(tmp_path, None), api.url)
    assert result.returncode == 1
    assert "API_TOKEN is not among the environment properties" in result.stdout


def test_an_api_that_does_not_answer(refresh_script, tmp_path):
    result = _run(refresh_script, _get_config(tmp_path, TOKEN), f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "tand-model-refresh: failed: no answer from http://127.0.0.1:" in result.stdout
