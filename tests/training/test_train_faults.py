"""`invoke train` as a process, under faults: raced on a fresh store, killed, out of disk; and what it prints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import INVOKE, make_project, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and fork (Linux)")]

def _quick() -> dict:
    """The example config with a quick scikit-learn model (and none of the MLP's keys, which would warn)."""
    config = tiny_config(framework="sklearn", model="logistic_regression")
    config["train"] = {k: v for k, v in config["train"].items() if k not in ("epochs", "batch_size", "hidden_dim", "patience")}
    return config


def _start_train(project, *args: str) -> subprocess.Popen:
    """`invoke train` in a session of its own: its pid is its process group, its children's too."""
    return subprocess.Popen(
        [*INVOKE, "train", "--quiet", *args], cwd=project.path, env=project.env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        found.append((int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])))
    return found


def _alive_in_group(group: int) -> list[int]:
    return [pid for pid, state, _, pgrp in _processes() if pgrp == group and state not in ("Z", "X")]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _runs(project, experiment_name: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment is not None else []


def test_two_trainings_at_once_on_a_fresh_store_both_succeed(tmp_path):
    """Both create the store, the experiment and the registered model at the same moment."""
    for attempt in range(3):
        project = make_project(tmp_path / f"attempt{attempt}")
        project.write_config(_quick())
        trainings = [_start_train(project) for _ in range(2)]
        outputs = [process.communicate(timeout=300) for process in trainings]
        for process, (out, err) in zip(trainings, outputs, strict=True):
            assert process.returncode == 0, f"attempt {attempt}: {err[-3000:]}"
            assert "Traceback" not in err
        assert project.versions(tiny_config()["mlflow"]["model_name"]) == [1, 2]
        assert [run.info.status for run in _runs(project, tiny_config()["mlflow"]["experiment_name"])] == ["FINISHED"] * 2


def test_a_killed_training_leaves_no_process_and_its_run_is_failed_by_the_next(tmp_path):
    project = make_project(tmp_path / "project")
    experiment = tiny_config()["mlflow"]["experiment_name"]
    project.write_config(_quick())
    first = project.invoke("train", "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]
    project.write_config(tiny_config(epochs=100_000))  # the PyTorch MLP: training outlasts the test's patience
    training = _start_train(project)
    try:
        _wait_for(lambda: [r for r in _runs(project, experiment) if r.info.status == "RUNNING"], 180, "the MLflow run to start")
        children = _wait_for(lambda: [pid for pid, _, parent, _ in _processes() if parent == training.pid], 60, "the fit processes")
        training.kill()  # SIGKILL: no handler, no finally, no end_run
        training.communicate(timeout=30)
        left = _wait_for(lambda: not _alive_in_group(training.pid) or None, 30, f"children {children} to die with their parent")
        assert left
    finally:
        if _alive_in_group(training.pid):
            os.killpg(training.pid, signal.SIGKILL)
    [killed] = [run for run in _runs(project, experiment) if run.info.status != "FINISHED"]
    assert killed.info.status == "RUNNING" and killed.info.end_time is None, "nothing could end the run"

    listed = project.invoke("models")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if killed.info.run_id in line)
    assert f"pid {training.pid} on" in line and "stale: that process is gone" in line, listed.stdout
    project.write_config(_quick())
    done = project.invoke("train", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    marked = [line for line in done.stdout.splitlines() if line.startswith("marked 1 run(s) FAILED")]
    assert len(marked) == 1 and killed.info.run_id in marked[0], done.stdout
    statuses = {run.info.run_id: run.info.status for run in _runs(project, experiment)}
    assert statuses[killed.info.run_id] == "FAILED" and list(statuses.values()).count("FINISHED") == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs mounted where the project keeps its artifacts (mlruns/); skipped where mounting is not allowed."""
    project = make_project(tmp_path / "project")
    mount_point = project.path / "mlruns"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a disk-full test needs a small tmpfs, and mounting one is not permitted here: {mounted.stderr.strip()}")
    try:
        yield project
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _fill(folder: Path, leave: int) -> None:
    """Write one file that leaves about `leave` bytes free on the file system holding `folder`."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(folder / "filler", "wb") as filler:
        filler.write(b"\0" * max(free - leave, 0))


@pytest.mark.parametrize("leave_kb", [0, 40, 160], ids=["full", "room-for-the-small-files", "room-for-the-model"])
def test_a_full_disk_is_one_line_the_run_failed_and_production_kept(small_disk, leave_kb):
    from mlflow import MlflowClient

    project = small_disk
    name, experiment = tiny_config()["mlflow"]["model_name"], tiny_config()["mlflow"]["experiment_name"]
    project.write_config(_quick())
    first = project.invoke("train", "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]
    _fill(project.path / "mlruns", leave_kb * 1024)

    done = project.invoke("train", "--quiet")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full while writing "), done.stderr[-3000:]
    statuses = sorted(run.info.status for run in _runs(project, experiment))
    assert statuses == ["FAILED", "FINISHED"], "the database is on another disk: the run is marked FAILED, none RUNNING"
    client = MlflowClient(tracking_uri=project.tracking_uri)
    assert project.versions(name) == [1]
    assert int(client.get_model_version_by_alias(name, "production").version) == 1
    (project.path / "mlruns" / "filler").unlink()
    again = project.invoke("train", "--quiet")
    assert again.returncode == 0 and project.versions(name) == [1, 2], again.stderr[-3000:]
