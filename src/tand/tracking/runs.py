"""Who started a run, and runs left RUNNING by a process that is gone.

A training process killed outright (SIGKILL, the OOM killer, a closed laptop) cannot end its run:
MLflow keeps it RUNNING with no end time, forever. Each run is therefore tagged with the host and
process that started it (and that process's start time, so a reused process id is not mistaken for
it). The next training on the same host marks such runs FAILED; `invoke models` lists them. A run
started on another host is only listed: whether its process lives cannot be seen from here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlflow import MlflowClient

HOST_TAG, PID_TAG, PID_STARTED_TAG = "tand.host", "tand.pid", "tand.pid_started"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), '' where there is no /proc,
    None when no such process runs (a zombie counts as gone: it will never end its run)."""
    stat = Path(f"/proc/{pid}/stat")
    if not Path("/proc/self/stat").exists():
        return ""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def owner_tags() -> dict[str, str]:
    """Tags naming this process, for the run it starts."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PID_STARTED_TAG: _started(os.getpid()) or ""}


def _process_gone(pid: int, started: str) -> bool:
    now = _started(pid)
    if now is None:
        return True
    if now == "":  # no /proc: ask the kernel whether the id is in use
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return bool(started) and now != started


@dataclass(frozen=True)
class RunningRun:
    run_id: str
    started: datetime
    host: str
    pid: int | None
    gone: bool | None  # None: started elsewhere (or before runs were tagged), cannot be checked from here


def running_runs(experiment_id: str) -> list[RunningRun]:
    """Every RUNNING run of the experiment, oldest first, with whether its process is gone."""
    found = MlflowClient().search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", order_by=["start_time ASC"])
    here = socket.gethostname()
    listed = []
    for run in found:
        tags = run.data.tags
        host, pid = tags.get(HOST_TAG, ""), tags.get(PID_TAG, "")
        checkable = host == here and pid.isdigit()
        gone = _process_gone(int(pid), tags.get(PID_STARTED_TAG, "")) if checkable else None
        started = datetime.fromtimestamp((run.info.start_time or 0) / 1000, tz=timezone.utc)
        listed.append(RunningRun(run.info.run_id, started, host or "unknown host", int(pid) if pid.isdigit() else None, gone))
    return listed


def fail_stale_runs(experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs started on this host by a process that is gone; their ids."""
    client = MlflowClient()
    stale = [run.run_id for run in running_runs(experiment_id) if run.gone]
    for run_id in stale:
        client.set_terminated(run_id, "FAILED")
    return stale


def read_run_text(run_id: str, path: str, tracking_uri: str | None = None, what: str | None = None) -> str | None:
    """The text of artifact `path` of a run, None when the run has no such file; RegistryError naming `what`
    (default: the path) when the store cannot be read."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import tempfile

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tand.errors import RegistryError

    folder, _, name = path.rpartition("/")
    try:
        listed = {Path(f.path).name for f in MlflowClient(tracking_uri=tracking_uri).list_artifacts(run_id, folder or None)}
        if name not in listed:
            return None
        with tempfile.TemporaryDirectory() as local_dir:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=local_dir, tracking_uri=tracking_uri)
            return Path(local).read_text(encoding="utf-8")
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot read {what or path} of run {run_id}: {str(exc).splitlines()[0][:200]}") from None
