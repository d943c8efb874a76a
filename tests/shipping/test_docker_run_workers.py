"""`invoke docker-run --workers`: WEB_CONCURRENCY on the command line; a bad value is one error line before anything
else is checked (no engine needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import tiny_config
from ship_support import REPO, make_ship_project
from tand.shipping import docker as container


def test_run_command_passes_the_workers_as_web_concurrency():
    assert container.run_command("t", 80, workers=2) == (
        "docker run --rm --env-file env_files/docker_app.env --env WEB_CONCURRENCY=2 --publish 127.0.0.1:80:8000 t"
    )


@pytest.mark.parametrize(("value", "message"), [("two", "error: --workers 'two' is not a whole number"),
                                                 ("0", "error: --workers must be 1 or more")])  # fmt: skip
def test_docker_run_refuses_a_bad_workers_count_in_one_line(tmp_path, value, message):
    project = make_ship_project(tmp_path / "p", tiny_config())
    env = {"PATH": str(tmp_path), "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "HOME": str(tmp_path)}  # no docker on PATH
    result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "docker-run", "--workers", value],
                            cwd=project, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1 and result.stderr.strip() == message, result
