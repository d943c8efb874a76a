"""Runs left RUNNING by a process that is gone (tand.tracking.runs), on a real SQLite store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from tand.tracking import registry, runs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process start times come from /proc")


def _dead_pid() -> int:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(ended.stdout)


def _left_running(experiment_id: str, **tags: str) -> str:
    """A run that nobody ended, as a SIGKILLed training leaves it."""
    return MlflowClient().create_run(experiment_id, tags=tags).info.run_id


def test_only_runs_of_gone_processes_on_this_host_are_failed(project):
    experiment = registry.ensure_experiment("stale")
    here, mine = socket.gethostname(), runs.owner_tags()
    assert mine[runs.PID_TAG] == str(os.getpid()) and mine[runs.PID_STARTED_TAG].isdigit()
    dead = _left_running(experiment, **{runs.HOST_TAG: here, runs.PID_TAG: str(_dead_pid())})
    reused = _left_running(experiment, **{**mine, runs.PID_STARTED_TAG: "1"})  # this pid, but started at another time
    alive = _left_running(experiment, **mine)
    elsewhere = _left_running(experiment, **{runs.HOST_TAG: "another-host", runs.PID_TAG: "1"})
    untagged = _left_running(experiment)

    listed = {run.run_id: run.gone for run in runs.running_runs(experiment)}
    assert listed == {dead: True, reused: True, alive: False, elsewhere: None, untagged: None}
    assert sorted(runs.fail_stale_runs(experiment)) == sorted([dead, reused])
    status = {run_id: MlflowClient().get_run(run_id).info.status for run_id in listed}
    assert status == {dead: "FAILED", reused: "FAILED", alive: "RUNNING", elsewhere: "RUNNING", untagged: "RUNNING"}
    assert runs.fail_stale_runs(experiment) == []


def test_a_run_started_by_train_names_its_process(project):
    experiment = registry.ensure_experiment("tagged")
    with mlflow.start_run(experiment_id=experiment, tags=runs.owner_tags()) as run:
        pass
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert (tags[runs.HOST_TAG], tags[runs.PID_TAG]) == (socket.gethostname(), str(os.getpid()))


def test_stale_runs_are_shown_with_what_can_be_known(project):
    from cli.tracking import format_running

    experiment = registry.ensure_experiment("shown")
    pid = _dead_pid()
    dead = _left_running(experiment, **{runs.HOST_TAG: socket.gethostname(), runs.PID_TAG: str(pid)})
    _left_running(experiment, **{runs.HOST_TAG: "another-host", runs.PID_TAG: "7"})
    lines = format_running(runs.running_runs(experiment)).splitlines()
    assert lines[0] == "runs still RUNNING in the experiment: 2"
    [stale] = [line for line in lines if dead in line]
    assert f"pid {pid} on {socket.gethostname()}" in stale and "stale: that process is gone" in stale
    assert any("pid 7 on another-host: cannot tell from this host" in line for line in lines[1:])
