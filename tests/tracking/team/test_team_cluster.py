"""Many API replicas on one registry: they converge on the alias without a failed request, and survive outages.

One cluster for the module: a fresh PostgreSQL database reached through a link the test can cut,
`invoke mlflow-server` on it with proxied artifacts, three single-process replicas and one with
--workers 2, all following the production alias every REFRESH seconds. The tests run in file
order; the last one stops the tracking server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import team_loadgen
from conftest import tiny_config, load_registered
from team_support import (
    INVOKE,
    TOKEN,
    CuttableLink,
    Process,
    base_env,
    count_rows,
    fresh_database,
    get_json,
    pg_uri,
    post_json,
    require_postgres,
    start_replica,
    start_tracking_server,
    tracking,
    wait_for,
    write_project,
)  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REFRESH = 2.0  # MODEL_REFRESH_INTERVAL of every replica
LOAD_SECONDS = 30  # the load generator's hard limit
# Detecting the move takes up to REFRESH; loading the version (download through the tracking server,
# unpickle, compile) comes on top, and on a busy 2-core machine can take several seconds.
CONVERGE_DEADLINE = REFRESH + 28


@dataclass
class Replica:
    process: Process
    port: int
    workers: int


@dataclass
class Cluster:
    work: Path
    project: Path
    config: dict
    name: str
    database: str
    uri: str
    link: CuttableLink
    server: Process
    replicas: list[Replica]
    request: dict


def _train_in_process(config: dict, project: Path, uri: str):
    from tand.config import parse_config
    from tand.training.run import train

    with tracking(uri):
        return train(parse_config(config), project_dir=project, progress=False)


def _serving_everywhere(replica: Replica, version: int | None = None) -> bool:
    """All of the replica's processes (as many as --workers) are ready, on `version` if given."""
    versions = team_loadgen.process_versions(replica.port, replica.process.pid)
    served = set(versions.values())
    return len(versions) >= replica.workers and None not in served and (version is None or served == {version})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_postgres()
    work = tmp_path_factory.mktemp("cluster")
    config = tiny_config(data_path=str(work / "project" / "data" / "data.csv"))  # write_project puts the example there
    project = write_project(work / "project", config)
    started: list[Process] = []
    with fresh_database() as database:
        link = CuttableLink()
        try:
            server, uri = start_tracking_server(work, pg_uri(database, port=link.port), str(work / "artifacts"))
            started.append(server)
            # The replicas start while version 1 trains: without a model they answer 503 and keep looking.
            replicas = []
            for index, workers in enumerate((1, 1, 1, 2)):
                process, port = start_replica(work, project, uri, f"api-{index}", workers=workers, refresh=REFRESH)
                started.append(process)
                replicas.append(Replica(process, port, workers))
            assert _train_in_process(config, project, uri).version == 1
            for replica in replicas:
                wait_for(
                    lambda replica=replica: _serving_everywhere(replica),
                    240,
                    f"replica {replica.process.name}",
                    interval=0.3,
                    alive=replica.process.check_alive,
                )
            request = json.loads((project / "request_model.json").read_text())
            yield Cluster(
                work, project, config, config["mlflow"]["model_name"], database, uri, link, server, replicas, request
            )
        finally:
            for process in reversed(started):
                process.stop()
            link.close()


# -- load and its analysis ------------------------------------------------------------------


class Load:
    """The load generator process and the records it streams."""

    def __init__(self, cluster: Cluster, folder: Path):
        self.out, self.stop_file, body = folder / "load.jsonl", folder / "load.stop", folder / "body.json"
        body.write_text(json.dumps(cluster.request))
        targets = [f"{r.port}:{r.process.pid}:{r.workers}" for r in cluster.replicas]
        command = [sys.executable, str(Path(team_loadgen.__file__)), "--out", str(self.out), "--stop", str(self.stop_file),
                   "--seconds", str(LOAD_SECONDS), "--body", str(body), "--token", TOKEN, *targets]  # fmt: skip
        self.keys = {
            (r.port, w) for r in cluster.replicas for w in team_loadgen.serving_processes(r.port, r.process.pid)
        }
        self.process = Process("loadgen", command, folder, folder, base_env())

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def everywhere(self, version: int, since: float) -> bool:
        seen = {(r["port"], r["worker"]) for r in self.records() if r["t0"] >= since and r.get("version") == version}
        if self.process.popen.poll() is not None:
            pytest.fail(f"the load generator stopped early (its {LOAD_SECONDS} s limit?):\n{self.process.log_tail()}")
        return self.keys <= seen

    def finish(self) -> list[dict]:
        self.stop_file.touch()
        try:
            self.process.popen.wait(30)
        finally:
            self.process.stop()
        return self.records()


def test_replicas_converge_on_promote_and_rollback(cluster: Cluster, tmp_path: Path):
    from tand.tracking.promotion import promote, rollback

    load = Load(cluster, tmp_path)
    try:
        started = time.time()
        wait_for(lambda: load.everywhere(1, started), 20, "every process answering with version 1", interval=0.2)
        baseline_end = time.time()
        # A new version, trained and registered while the replicas are under load ('production' stays on 1).
        # (Another model family on the same features: a quick fit keeps the load within its 30 s.)
        candidate = {
            **cluster.config,
            "train": {**cluster.config["train"], "framework": "sklearn", "model": "logistic_regression"},
        }
        trained = _train_in_process(candidate, cluster.project, cluster.uri)
        trained_at = time.time()
        assert (trained.version, trained.alias_set) == (2, False)
        # Times are taken before each call: the alias moves somewhere inside it, so the convergence
        # figures are upper bounds, and no answer after the move can fall into the previous window.
        promoted = time.time()
        with tracking(cluster.uri):
            promote(cluster.name, version=2)
        wait_for(
            lambda: load.everywhere(2, promoted),
            CONVERGE_DEADLINE,
            "every process answering with version 2",
            interval=0.1,
        )
        rolled_back = time.time()
        with tracking(cluster.uri):
            rollback(cluster.name)
        wait_for(
            lambda: load.everywhere(1, rolled_back), CONVERGE_DEADLINE, "every process back on version 1", interval=0.1
        )
        settled = time.time()
        # A little more load: nobody flips back.
        wait_for(lambda: time.time() > settled + 1.0, 5, "one more second of load", interval=0.1)
    finally:
        records = load.finish()

    failed = [r for r in records if r.get("status") != 200 or str(r.get("version")) != r.get("header")]
    assert not failed, f"{len(failed)} of {len(records)} requests failed, e.g. {failed[:3]}"
    forward = team_loadgen.convergence(records, load.keys, 2, promoted, rolled_back)
    back = team_loadgen.convergence(records, load.keys, 1, rolled_back, float("inf"))
    report = {
        "requests": len(records),
        "failed": len(failed),
        "processes": len(load.keys),
        "load_seconds": round(records[-1]["t1"] - records[0]["t0"], 1),
        "train_seconds_under_load": round(trained_at - baseline_end, 1),
        "train_timings": {k: round(v, 1) for k, v in trained.timings.items()},
        "converge_s_promote": {"max": round(max(forward.values()), 2), "min": round(min(forward.values()), 2)},
        "converge_s_rollback": {"max": round(max(back.values()), 2), "min": round(min(back.values()), 2)},
        "latency_ms_before": team_loadgen.latency_ms(records, started, baseline_end),
        "latency_ms_promote_switch": team_loadgen.latency_ms(records, promoted, promoted + max(forward.values())),
        "latency_ms_rollback_switch": team_loadgen.latency_ms(records, rolled_back, rolled_back + max(back.values())),
    }
    print("\nconvergence:", json.dumps(report))
    (cluster.work / "convergence.json").write_text(json.dumps(report, indent=2))
    assert max(forward.values()) <= CONVERGE_DEADLINE and max(back.values()) <= CONVERGE_DEADLINE


def test_promotion_racing_a_training_run(cluster: Cluster):
    """While `invoke train` runs, promote the newest version again and again: the alias is always on a complete one."""
    import pandas as pd
    from mlflow import MlflowClient

    from tand.errors import RegistryError
    from tand.tracking.promotion import promote

    # A quick model family: the race needs a run in progress, not a long one.
    racer = {
        **cluster.config,
        "train": {**cluster.config["train"], "framework": "sklearn", "model": "logistic_regression"},
    }
    (cluster.project / "racer.json").write_text(json.dumps(racer))
    training = subprocess.Popen(
        [*INVOKE, "train", "--quiet", "--config", "racer.json"], cwd=cluster.project, env=base_env(MLFLOW_TRACKING_URI=cluster.uri),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    raced = 0
    try:
        with tracking(cluster.uri):
            client = MlflowClient()
            experiment = client.get_experiment_by_name(cluster.config["mlflow"]["experiment_name"]).experiment_id
            while training.poll() is None:
                promote(cluster.name)
                held = client.get_model_version_by_alias(cluster.name, "production")
                assert held.status == "READY" and client.get_run(held.run_id).info.status == "FINISHED"
                for run in client.search_runs([experiment], "attributes.status = 'RUNNING'"):
                    with pytest.raises(RegistryError, match="registered no version") as refused:
                        promote(cluster.name, run_id=run.info.run_id)
                    if "still running" in str(refused.value):
                        raced += 1
                    else:  # the run ended between the search and the promotion; it registers right after
                        assert client.get_run(run.info.run_id).info.status != "RUNNING"
            output = training.communicate()[0]
            assert training.returncode == 0, output
            newest = max(int(v.version) for v in client.search_model_versions(f"name = '{cluster.name}'"))
            move = promote(cluster.name)
            loaded = load_registered(cluster.name, alias="production")
    finally:
        if training.poll() is None:
            training.kill()
            training.wait()
    assert raced >= 1, "the training run finished before a promotion could race it"
    assert move.new.version == newest == loaded.version
    assert loaded.pipeline.predict(pd.DataFrame([cluster.request]))[0] in ("malignant", "benign")


def _settle(cluster: Cluster) -> int:
    """Wait until every process serves the version 'production' points to; returns it."""
    from tand.tracking import registry

    with tracking(cluster.uri):
        version = registry.alias_version(cluster.name, "production")
    for replica in cluster.replicas:
        wait_for(
            lambda replica=replica: _serving_everywhere(replica, version),
            CONVERGE_DEADLINE,
            f"{replica.process.name} on version {version}",
            interval=0.2,
        )
    return version


def _served_versions(cluster: Cluster) -> dict[int, int]:
    versions = {}
    for replica in cluster.replicas:
        status, body, headers = post_json(f"http://127.0.0.1:{replica.port}/predict", cluster.request)
        assert status == 200, body
        versions[replica.port] = body["model_version"]
    return versions


def _assert_replicas_keep_serving(cluster: Cluster, versions: dict[int, int]) -> None:
    """Predictions, readiness and /update-model while the registry is gone (past a few refresh intervals)."""
    until = time.time() + 2 * REFRESH + 0.5
    while time.time() < until:
        assert _served_versions(cluster) == versions
    for replica in cluster.replicas:
        base = f"http://127.0.0.1:{replica.port}"
        assert get_json(f"{base}/health/ready")[0] == 200
        clock = time.monotonic()
        status, body, _ = post_json(f"{base}/update-model", None)
        assert status == 503 and "unreachable" in body["detail"], body
        assert time.monotonic() - clock < 20, (
            "a dead registry must be reported in seconds, not after minutes of retries"
        )
    assert _served_versions(cluster) == versions


def _train_failures(project: Path, tracking_uris: list[str]) -> list[float]:
    """`invoke train` against each URI (at once): exit 1, one line on stderr, no traceback; returns the seconds each took."""
    clock = time.monotonic()
    runs = [
        subprocess.Popen(
            [*INVOKE, "train", "--quiet"], cwd=project, env=base_env(MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        for uri in tracking_uris
    ]  # fmt: skip
    seconds = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=180)
        seconds.append(time.monotonic() - clock)
        lines = stderr.strip().splitlines()
        assert run.returncode == 1, stdout + stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and "unreachable" in lines[0], stderr
        assert "Traceback" not in stdout
    return seconds


def test_database_unreachable(cluster: Cluster, tmp_path: Path):
    """PostgreSQL cut off: `invoke train` exits 1 with one line and writes nothing; replicas keep serving."""
    tables = ("experiments", "runs", "metrics", "params", "model_versions", "registered_model_aliases", "logged_models")
    before = {table: count_rows(cluster.database, table) for table in tables}
    _settle(cluster)
    versions = _served_versions(cluster)
    project = write_project(tmp_path / "member", cluster.config)
    cluster.link.cut()
    try:
        through_server, direct = _train_failures(
            project, [cluster.uri, pg_uri(cluster.database, port=cluster.link.port)]
        )
        print(f"\ninvoke train, PostgreSQL unreachable: exit 1 after {through_server:.1f} s via the server, {direct:.1f} s direct")
        assert sorted(p.name for p in project.iterdir()) == [
            "config.json",
            "data",
        ]  # no request_model.json, mlruns/, database.db
        _assert_replicas_keep_serving(cluster, versions)
    finally:
        cluster.link.mend()
    assert {table: count_rows(cluster.database, table) for table in tables} == before


def test_tracking_server_stopped(cluster: Cluster):
    """The tracking server goes away: every replica keeps serving its version, stays ready, and /update-model says 503."""
    _settle(cluster)
    versions = _served_versions(cluster)
    cluster.server.stop()
    _assert_replicas_keep_serving(cluster, versions)
