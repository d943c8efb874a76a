"""The real EB CLI against moto's server on 127.0.0.1: `eb init` and `eb list` run for real inside the chain.

moto cannot create environments (that needs platform, EC2 and load balancer APIs it lacks), so
`eb create` and `eb status` get canned results; everything before them is real: the bundle, `eb init`
creating the application, the artifact setting `eb` then reads, `eb list` finding no environment.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from invoke import MockContext, Result

from ship_support import TOKEN, aws_env, commit_all, find_eb, make_ship_project, must_have, start_moto
from tand.config import parse_config
from tand.shipping.eb import BUNDLE, PLATFORM, settings_from
from tand.shipping.eb_chain import EB_CONFIG, create_command, eb_command, init_command, list_command, preflight, q, run_chain

pytestmark = pytest.mark.slow


class RealEbContext(MockContext):
    """`eb init` and `eb list` run for real (against the emulator); the rest is canned. Records commands."""

    def __init__(self, project, env, real, results):
        super().__init__(run=results)
        # Plain attributes, not invoke config (a Context stores unknown attributes in its config).
        object.__setattr__(self, "commands", [])
        object.__setattr__(self, "outputs", {})
        mocked = self.run

        def run(command, **kwargs):
            self.commands.append(command)
            if command in real:
                done = subprocess.run(command, shell=True, cwd=project, env=env, capture_output=True, text=True,
                                      timeout=180, stdin=subprocess.DEVNULL)
                self.outputs[command] = done.stdout + done.stderr
                return Result(stdout=done.stdout, stderr=done.stderr, exited=done.returncode, command=command)
            return mocked(command, **kwargs)

        self.run = run


@pytest.fixture
def emulator(tmp_path):
    moto = start_moto(tmp_path / "moto.log")
    yield moto
    moto.stop()


def test_eb_init_creates_the_application_and_eb_reads_our_artifact(emulator, trained_model, tmp_path, monkeypatch):
    eb = find_eb()
    must_have(eb is not None, "the EB CLI is not installed (see .ci/run: python -m venv .venv/eb-cli && "
                              ".venv/eb-cli/bin/pip install -r requirements-eb.txt)")
    project = make_ship_project(tmp_path / "demo", trained_model.config)
    commit_all(project)
    env = aws_env(emulator.url, tmp_path / "home")
    env.update(API_TOKEN=TOKEN, MLFLOW_TRACKING_URI=trained_model.project.tracking_uri, EB_CLI=eb)
    monkeypatch.chdir(project)
    settings = settings_from(parse_config(json.loads((project / "config.json").read_text())), env, app="tand-demo")
    assert settings.region == "us-east-1"  # from AWS_DEFAULT_REGION
    plan = preflight(project, settings, init_git=False, run_tests=False, environ=env)

    real = {init_command(plan), list_command(plan)}
    create = create_command(plan, q(f"API_TOKEN={TOKEN}"))
    status = eb_command(plan, "status", q(settings.env))
    c = RealEbContext(project, env, real, {create: Result(), status: Result(f"  CNAME: {settings.env}.example.com\n")})
    url = run_chain(c, plan)

    assert c.commands == [init_command(plan), list_command(plan), create, status]
    assert init_command(plan).endswith(f"init tand-demo --platform {q(PLATFORM)} --region us-east-1")
    assert "Application tand-demo has been created." in c.outputs[init_command(plan)]
    assert c.outputs[list_command(plan)].strip() == ""  # no environment yet: the chain chose `eb create`
    assert url == f"{settings.env}.example.com"

    config = yaml.safe_load((project / EB_CONFIG).read_text())
    assert config["global"]["application_name"] == "tand-demo"
    assert config["global"]["default_platform"] == PLATFORM
    assert config["global"]["default_region"] == "us-east-1"
    assert config["deploy"]["artifact"] == BUNDLE.as_posix()

    import boto3

    client = boto3.client("elasticbeanstalk", endpoint_url=emulator.url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    assert [a["ApplicationName"] for a in client.describe_applications()["Applications"]] == ["tand-demo"]

    # eb still reads the folder once our artifact setting is in its config; a second deploy skips `eb init`.
    again = subprocess.run(list_command(plan), shell=True, cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    c = RealEbContext(project, env, real, {create: Result(), status: Result("")})
    run_chain(c, plan)
    assert c.commands == [list_command(plan), create, status]
    assert TOKEN not in (project / EB_CONFIG).read_text()
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert os.environ.get("AWS_ENDPOINT_URL") is None  # the emulator's endpoint stayed in the subprocesses
