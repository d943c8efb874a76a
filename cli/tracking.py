"""Tasks for the shared registry: the MLflow tracking server, promote, rollback, models."""

from __future__ import annotations

import os
import sys

from invoke import task
from invoke.exceptions import Exit

from tand.config import DEFAULT_TRACKING_URI
from tand.tracking import stores
from cli.common import known_errors, load_env, whole_number
from cli.training import HEADLINE

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_BACKEND = DEFAULT_TRACKING_URI
DEFAULT_ARTIFACTS = "./mlruns"
ORDER = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "log_loss", "r2", "rmse", "mae")


def server_command(
    backend: str, artifacts: str, host: str, port: int, workers: int | None, allowed_hosts: str | None
) -> list[str]:
    """`mlflow server` with proxied artifacts: clients upload and download through it, with no storage credentials."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", stores.backend_uri(backend),
        "--serve-artifacts", "--artifacts-destination", artifacts,
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    if workers:
        command += ["--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    return command


def _check_server_args(backend: str, artifacts: str, port: int, workers: int | None) -> None:
    if not 1 <= port <= 65535:
        raise Exit(f"error: --port {port} is not a TCP port (1-65535)", code=1)
    if workers is not None and workers < 1:
        raise Exit(f"error: --workers {workers} must be at least 1", code=1)
    if backend.startswith(("http://", "https://")):
        raise Exit(
            f"error: --backend-store-uri {backend} is a tracking server, not a database; give sqlite:///database.db "
            "or postgresql://USER:PASSWORD@HOST:5432/DB (clients use the http:// URI as MLFLOW_TRACKING_URI)",
            code=1,
        )
    if artifacts.startswith("s3://"):
        try:
            import boto3  # noqa: F401 - the server writes to S3 with it
        except ImportError:
            raise Exit(
                "error: an s3:// artifact destination needs boto3: pip install -r requirements.txt", code=1
            ) from None


def _check_backend_reachable(backend: str) -> None:
    """One quick connection attempt: MLflow would retry for a minute and a half, logging every try."""
    if not stores.is_database(backend):
        return
    import sqlalchemy.exc

    try:
        stores.probe_database(stores.backend_uri(backend))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise Exit(f"error: backend store {stores.redact(backend)} is unreachable ({first})", code=1) from None


@task(
    aliases=["mlflow_ui"],
    auto_shortflags=False,  # -h would read as --help
    help={
        "backend-store-uri": "Runs and registry: sqlite:///database.db (default, or MLFLOW_BACKEND_STORE_URI) "
        "or postgresql://USER:PASSWORD@HOST:5432/DB for a team.",
        "artifacts-destination": "Where the server keeps the artifacts it proxies: a folder (default ./mlruns, or "
        "MLFLOW_ARTIFACTS_DESTINATION) or s3://bucket/prefix.",
        "host": "Interface to bind (default 127.0.0.1; the server has no authentication of its own).",
        "port": "TCP port (default 5000).",
        "workers": "Server worker processes (default: MLflow's, 4).",
        "allowed-hosts": "Host names clients use to reach it, when bound beyond this machine (MLflow's --allowed-hosts).",
    },
)
def mlflow_server(
    c, backend_store_uri=None, artifacts_destination=None, host="127.0.0.1", port=5000, workers=None, allowed_hosts=None
):
    """Start the MLflow tracking server (UI + registry, artifacts proxied); point MLFLOW_TRACKING_URI at it."""
    load_env("tracking_server.env")
    # Its job runner (GenAI evaluation jobs) starts eight more Python processes; tabular models never use it.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    backend = backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI") or DEFAULT_BACKEND
    artifacts = artifacts_destination or os.environ.get("MLFLOW_ARTIFACTS_DESTINATION") or DEFAULT_ARTIFACTS
    port, workers = int(port), whole_number("--workers", workers)
    _check_server_args(backend, artifacts, port, workers)
    _check_backend_reachable(backend)
    # MLflow's CLI would read this as --default-artifact-root and bypass the proxy for new experiments.
    if os.environ.pop("MLFLOW_DEFAULT_ARTIFACT_ROOT", None):
        print(
            "note: MLFLOW_DEFAULT_ARTIFACT_ROOT is ignored here: artifacts go through the server to --artifacts-destination"
        )
    if host not in LOCAL_HOSTS:
        print(
            f"WARNING: binding {host}: this MLflow server has no authentication; anyone who reaches {host}:{port} can read, "
            "change and delete every run and model. Put it behind an authenticating proxy or a private network "
            "(README: 'team set-up').",
            file=sys.stderr,
        )
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    print(f"tracking server: backend {stores.redact(backend)}, artifacts {artifacts}")
    print(
        f"UI and registry at http://{shown}:{port}; train and serve against it with MLFLOW_TRACKING_URI=http://{shown}:{port}",
        flush=True,
    )
    command = server_command(backend, artifacts, host, port, workers, allowed_hosts)
    # Replace this process: Ctrl-C and a supervisor's SIGTERM reach MLflow directly.
    os.execv(command[0], command)


def _model_and_alias(config: str, alias: str | None) -> tuple[str, str]:
    load_env("train.env")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tand.config import load_config

    cfg = load_config(config)
    return cfg.mlflow.model_name, alias or cfg.mlflow.alias


def _headline_keys(metrics) -> list[str]:
    """The test metrics worth a glance, in the order people read them."""
    keys = [k for k in metrics if k.startswith("test_") and k[5:] in HEADLINE]
    return sorted(keys, key=lambda k: (ORDER.index(k[5:]) if k[5:] in ORDER else len(ORDER), k))


def _headline(metrics: dict) -> str:
    shown = [f"{k.removeprefix('test_')} {metrics[k]:.4f}" for k in _headline_keys(metrics)]
    return ", ".join(shown) or "no test metrics"


def _print_move(move, verb: str) -> None:
    from tand.tracking.promotion import previous_alias

    old = f"version {move.old.version}" if move.old else "no version"
    if not move.changed:
        print(f"'{move.alias}' of {move.model_name} is already on version {move.new.version}: nothing changed")
        return
    print(f"{verb} '{move.alias}' of {move.model_name}: {old} → version {move.new.version}")
    if move.old:
        print(f"  version {move.old.version}: {_headline(move.old.metrics)}")
    print(f"  version {move.new.version}: {_headline(move.new.metrics)}")
    if move.schema_note:
        print(
            f"WARNING: --force past the schema check ({move.schema_note}); running APIs keep the old version until restarted",
            file=sys.stderr,
        )
    if move.old:
        print(f"'{previous_alias(move.alias)}' → version {move.old.version} (`invoke rollback` goes back to it)")
    print("running APIs switch at their next refresh (MODEL_REFRESH_INTERVAL), or at once with POST /update-model")


@task(
    help={
        "version": "Version number to promote (default: the newest registered version).",
        "run-id": "Promote the version the run with this id registered.",
        "alias": "Alias to move (default: mlflow.alias in the config, production).",
        "force": "Promote even if the version's features differ from the current one's.",
        "config": "Config file naming the model (default: config.json).",
    }
)
def promote(c, version=None, run_id=None, alias=None, force=False, config="config.json"):
    """Point the production alias at a version (checks its features first); prints old → new with metrics."""
    number = whole_number("--version", version)
    with known_errors():
        name, alias = _model_and_alias(config, alias)
        from tand.tracking.promotion import promote as move_alias

        move = move_alias(name, alias, version=number, run_id=run_id, force=force)
    _print_move(move, "promoted")


@task(
    help={
        "alias": "Alias to move back (default: mlflow.alias in the config, production).",
        "config": "Config file naming the model (default: config.json).",
    }
)
def rollback(c, alias=None, config="config.json"):
    """Move the production alias back to the version that held it before the last promote."""
    with known_errors():
        name, alias = _model_and_alias(config, alias)
        from tand.tracking.promotion import rollback as move_back

        move = move_back(name, alias)
    _print_move(move, "rolled back")


@task(help={"config": "Config file naming the model (default: config.json)."})
def models(c, config="config.json"):
    """List the model's registered versions (aliases, framework and model, test metrics, date) and runs left RUNNING."""
    with known_errors():
        name, _ = _model_and_alias(config, None)
        from tand.config import load_config
        from tand.tracking.promotion import list_versions

        versions = list_versions(name)
        running = _running_runs(load_config(config).mlflow.experiment_name)
    print(format_versions(name, versions))
    if running:
        print(format_running(running))


def _running_runs(experiment_name: str):
    import mlflow

    from tand.tracking.runs import running_runs

    experiment = mlflow.get_experiment_by_name(experiment_name)
    return running_runs(experiment.experiment_id) if experiment is not None else []


def format_running(running) -> str:
    """The experiment's RUNNING runs, saying which ones no process will ever end."""
    lines = [f"runs still RUNNING in the experiment: {len(running)}"]
    for run in running:
        started = run.started.strftime("%Y-%m-%d %H:%M:%S")
        who = f"pid {run.pid} on {run.host}" if run.pid is not None else run.host
        if run.gone:
            state = "stale: that process is gone (the next `invoke train` here marks it FAILED)"
        elif run.gone is None:
            state = "cannot tell from this host whether it is still training"
        else:
            state = "still training"
        lines.append(f"  run {run.run_id} started {started} UTC by {who}: {state}")
    return "\n".join(lines)


def format_versions(name: str, versions) -> str:
    """A plain-text table, newest version first."""
    keys = _headline_keys({k for v in versions for k in v.metrics})
    header = ["version", "aliases", "framework", "model", "created (UTC)", "status", *(k.removeprefix("test_") for k in keys)]
    rows = [
        [str(v.version), ",".join(v.aliases) or "-", v.framework or "-", v.model or "-",
         v.created.strftime("%Y-%m-%d %H:%M:%S"), v.status,
         *(f"{v.metrics[k]:.4f}" if k in v.metrics else "-" for k in keys)]
        for v in reversed(versions)
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"model {name}: {len(versions)} version{'s' if len(versions) != 1 else ''}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)
