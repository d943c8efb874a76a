"""The deploy-eb chain, replayed with invoke's MockContext: the exact commands, in order, and the checks before them.

`eb` commands get canned results (creating an environment needs AWS); git commands run for real in
the test's own project, so the bundle is built from a real HEAD.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml
from invoke import MockContext, Result

from ship_support import REPO, TOKEN, commit_all, git, make_ship_project
from tand.config import parse_config
from tand.shipping.eb import BUNDLE, DeployError, settings_from
from tand.shipping.eb_chain import EB_CONFIG, preflight, run_chain

PY = shlex.quote(sys.executable)
PLATFORM = "'Docker running on 64bit Amazon Linux 2023'"
STATUS = "Environment details for: {env}\n  Application name: demo\n  CNAME: {env}.abc123.eu-west-1.elasticbeanstalk.com\n  Status: Ready\n"


class ChainContext(MockContext):
    """MockContext for `eb` and the tests; git runs for real in the project. Records every command."""

    def __init__(self, project, results):
        super().__init__(run=results)
        object.__setattr__(self, "commands", [])  # a plain attribute, not invoke config
        mocked = self.run

        def run(command, **kwargs):
            self.commands.append(command)
            if command.startswith("git "):
                done = subprocess.run(command, shell=True, cwd=project, capture_output=True, text=True, env=_git_env())
                return Result(stdout=done.stdout, stderr=done.stderr, exited=done.returncode, command=command)
            return mocked(command, **kwargs)

        self.run = run


def _git_env():
    return {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


@pytest.fixture
def setup(trained_model, tmp_path, monkeypatch):
    """A committed fork with a trained model, a fake `eb` and fake AWS credentials."""
    project = make_ship_project(tmp_path / "demo", trained_model.config)
    eb = tmp_path / "bin" / "eb"
    eb.parent.mkdir()
    eb.write_text("#!/bin/sh\nexit 99\n")  # never run: MockContext answers for it
    eb.chmod(0o755)
    environ = {
        "API_TOKEN": TOKEN, "EB_CLI": str(eb), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "MLFLOW_TRACKING_URI": trained_model.project.tracking_uri, "PATH": os.environ["PATH"], "HOME": str(tmp_path),
    }
    monkeypatch.chdir(project)
    return project, str(eb), environ


def _plan(project, environ, init_git=False, **flags):
    config = json.loads((project / "config.json").read_text())
    settings = settings_from(parse_config(config), environ, app="demo", region="eu-west-1", **flags)
    return preflight(project, settings, init_git=init_git, run_tests=True, environ=environ)


def _expected_eb(eb, *commands):
    return [f"{eb} {command} --region eu-west-1" for command in commands]


def test_fresh_environment(setup, capsys):
    project, eb, environ = setup
    commit_all(project)
    plan = _plan(project, environ)
    tests = f"{PY} -m pytest -q -m 'not slow' tests"
    create = f"create demo-api --elb-type application --instance-types t3.micro,t3.small --min-instances 2 --max-instances 10 --envvars API_TOKEN={TOKEN}"
    expected = [tests, *_expected_eb(eb, f"init demo --platform {PLATFORM}", "list", create, "status demo-api")]
    results = {cmd: Result() for cmd in expected}
    results[expected[4]] = Result(STATUS.format(env="demo-api"))
    c = ChainContext(project, results)
    url = run_chain(c, plan)
    assert c.commands == expected
    assert url == "demo-api.abc123.eu-west-1.elasticbeanstalk.com"
    assert yaml.safe_load((project / EB_CONFIG).read_text())["deploy"]["artifact"] == BUNDLE.as_posix()
    assert (project / BUNDLE).is_file()
    shown = capsys.readouterr().out
    assert TOKEN not in shown and "--envvars API_TOKEN=***" in shown


def test_existing_environment_deploys_then_sets_the_secret(setup):
    project, eb, environ = setup
    (project / EB_CONFIG).parent.mkdir()
    (project / EB_CONFIG).write_text(yaml.safe_dump({"global": {"application_name": "demo", "default_region": "eu-west-1"}}))
    commit_all(project)
    plan = _plan(project, environ, single=True)
    expected = [
        f"{PY} -m pytest -q -m 'not slow' tests",
        *_expected_eb(eb, "list", "deploy demo-api", f"setenv API_TOKEN={TOKEN} -e demo-api", "status demo-api"),
    ]
    results = {cmd: Result() for cmd in expected}
    results[expected[1]] = Result("  other-env\n* demo-api\n")
    results[expected[4]] = Result(STATUS.format(env="demo-api"))
    c = ChainContext(project, results)
    run_chain(c, plan)
    assert c.commands == expected


def test_init_git_starts_a_repository_and_commits_before_the_bundle(setup):
    project, eb, environ = setup
    plan = _plan(project, environ, init_git=True, single=True)
    create = f"create demo-api --single --instance-types t3.micro,t3.small --envvars API_TOKEN={TOKEN}"
    expected = [
        "git init", "git add -A", "git diff --cached --quiet || git commit -m 'preparing to deploy on aws-eb'",
        f"{PY} -m pytest -q -m 'not slow' tests",
        *_expected_eb(eb, f"init demo --platform {PLATFORM}", "list", create, "status demo-api"),
    ]
    results = {cmd: Result() for cmd in expected[3:]}
    results[expected[-1]] = Result(STATUS.format(env="demo-api"))
    c = ChainContext(project, results)
    run_chain(c, plan)
    assert c.commands == expected
    assert git(project, "log", "--format=%s").strip() == "preparing to deploy on aws-eb"


def test_init_git_in_an_existing_repository_commits_the_changes(setup):
    project, eb, environ = setup
    commit_all(project)
    (project / "app" / "extra.py").write_text("X = 1\n")  # a change the bundle would otherwise miss
    plan = _plan(project, environ, init_git=True)
    results = {f"{PY} -m pytest -q -m 'not slow' tests": Result()}
    for command in _expected_eb(eb, f"init demo --platform {PLATFORM}", "list"):
        results[command] = Result()
    results[_expected_eb(eb, "list")[0]] = Result("* demo-api\n")
    for command in _expected_eb(eb, "deploy demo-api", f"setenv API_TOKEN={TOKEN} -e demo-api", "status demo-api"):
        results[command] = Result()
    c = ChainContext(project, results)
    run_chain(c, plan)
    assert c.commands[:3] == ["git add -A", "git diff --cached --quiet || git commit -m 'preparing to deploy on aws-eb'",
                              f"{PY} -m pytest -q -m 'not slow' tests"]
    assert c.commands[-3:] == _expected_eb(eb, "deploy demo-api", f"setenv API_TOKEN={TOKEN} -e demo-api", "status demo-api")
    assert "app/extra.py" in git(project, "show", "--name-only", "--format=", "HEAD")


def test_init_git_never_commits_a_secret(setup):
    project, eb, environ = setup
    commit_all(project)
    (project / "notes.txt").write_text(f"my token is {TOKEN}\n")
    plan = _plan(project, environ, init_git=True)
    c = ChainContext(project, {})
    with pytest.raises(DeployError, match="not committing: a secret's value is in notes.txt"):
        run_chain(c, plan)
    assert c.commands == ["git add -A", "git reset -q"]
    assert "notes.txt" not in git(project, "ls-files")


def test_init_git_never_commits_data_files(setup):
    """Even with no .gitignore rule for them: data/ and data files elsewhere stay out of the commit."""
    project, eb, environ = setup
    commit_all(project)
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "customers.csv").write_text("id,churn\n1,Yes\n")
    (project / "export.parquet").write_bytes(b"PAR1")
    (project / "app" / "extra.py").write_text("X = 1\n")
    plan = _plan(project, environ, init_git=True)
    results = {f"{PY} -m pytest -q -m 'not slow' tests": Result()}
    for command in _expected_eb(eb, f"init demo --platform {PLATFORM}", "list", "deploy demo-api",
                                f"setenv API_TOKEN={TOKEN} -e demo-api", "status demo-api"):
        results[command] = Result()
    results[_expected_eb(eb, "list")[0]] = Result("* demo-api\n")
    c = ChainContext(project, results)
    run_chain(c, plan)
    assert c.commands[1] == "git reset -q -- data/customers.csv export.parquet"
    committed = git(project, "ls-files")
    assert "app/extra.py" in committed and "customers.csv" not in committed and "export.parquet" not in committed


def test_a_failing_step_stops_the_chain_with_one_line(setup):
    project, eb, environ = setup
    commit_all(project)
    plan = _plan(project, environ)
    tests = f"{PY} -m pytest -q -m 'not slow' tests"
    c = ChainContext(project, {tests: Result(stdout="1 failed", exited=1)})
    with pytest.raises(DeployError, match="failed \\(exit 1\\): 1 failed"):
        run_chain(c, plan)
    assert c.commands == [tests] and not (project / BUNDLE).exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"EB_CLI": "/nonexistent/eb", "PATH": "/nonexistent"}, "the EB CLI \\(`eb`\\) is not installed"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "no AWS credentials found"),
        ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, "points at this machine"),
    ],
)
def test_preflight_refuses_with_one_line(setup, change, message):
    project, eb, environ = setup
    commit_all(project)
    with pytest.raises(DeployError, match=message):
        _plan(project, {**environ, **change})


def test_preflight_refuses_a_tree_the_bundle_would_miss(setup):
    project, eb, environ = setup
    commit_all(project)
    (project / "src" / "tand" / "new_module.py").write_text("X = 1\n")
    (project / "config.json").write_text((project / "config.json").read_text() + " ")
    with pytest.raises(DeployError, match="uncommitted changes the bundle would miss .*config.json, src/tand/new_module.py"):
        _plan(project, environ)
    (project / "src" / "tand" / "new_module.py").unlink()
    git(project, "checkout", "config.json")
    (project / "notes.md").write_text("not part of the bundle\n")  # outside the bundle's sources: fine
    _plan(project, environ)


def test_the_task_fails_in_one_line_and_deploys_nothing(trained_model, tmp_path):
    """The real `invoke deploy-eb`: no credentials → exit 1, one line on stderr, no bundle, no eb files."""
    project = make_ship_project(tmp_path / "demo", trained_model.config)
    commit_all(project)
    eb = tmp_path / "eb"
    eb.write_text("#!/bin/sh\nexit 99\n")
    eb.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "API_TOKEN"))}
    env.update(HOME=str(tmp_path), EB_CLI=str(eb), API_TOKEN=TOKEN, MLFLOW_TRACKING_URI=trained_model.project.tracking_uri,
               PYTHONPATH=f"{REPO / 'src'}:{REPO}")
    result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "deploy-eb", "--region", "eu-west-1"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: no AWS credentials found") and "\n" not in result.stderr.strip()
    assert not (project / "build" / "eb").exists() and not (project / ".elasticbeanstalk").exists()
