"""Tasks for the training half: example data, the config schema, train, test."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from cli.common import REPO_ROOT, known_errors, load_env, quote


@task(
    help={
        "config": "Path of the config file (default: config.json).",
        "quiet": "No progress bar.",
        "verbose": "Also print the seconds each phase took (bench/train_bench.py reads them).",
        "inline": "Everything in this one process (to step through your preprocess hook in a debugger, or to "
        "profile); by default the fit runs in processes of its own beside MLflow's set-up (faster).",
        "dask": "Train on the Dask cluster whose scheduler is at this address (tcp://host:8786; default: "
        "DASK_SCHEDULER_ADDRESS when set): lightgbm or xgboost; data_path may be a glob of CSV/Parquet parts.",
    }
)
def train(c, config="config.json", quiet=False, inline=False, verbose=False, dask=None):
    """Train the model config.json describes, log it to MLflow and register it (first version → production)."""
    load_env("train.env")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the model-name check reads one small file
    from tand.config import load_config
    from tand.training.run import train as run_training

    with known_errors():
        cfg = load_config(config)
        address = dask or os.environ.get("DASK_SCHEDULER_ADDRESS") or None  # Dask's own variable
        result = run_training(cfg, progress=not quiet, processes=not inline, dask=address)
    headline = {k: round(v, 4) for k, v in result.metrics.items() if k.partition("_")[2] in HEADLINE}
    if result.stale_runs_failed:
        print(
            f"marked {len(result.stale_runs_failed)} run(s) FAILED that an `invoke train` on this host left RUNNING "
            f"when it was killed: {', '.join(result.stale_runs_failed)}"
        )
    if result.schema is not None:
        print(_features_line(result.schema))
    if result.leaderboard:
        print(_selection_line(result.leaderboard))
    print(f"registered {result.model_name} version {result.version} (run {result.run_id})")
    print(f"test metrics: {json.dumps(headline)}")
    if result.alias_set:
        print(f"version {result.version} is now '{cfg.mlflow.alias}': it is what `invoke serve` loads")
    else:
        print(f"'{cfg.mlflow.alias}' stays where it was; promote this version with `invoke promote --version {result.version}`")
    print("wrote request_model.json (an example /predict body)")
    if verbose:
        print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    # The interpreter's last garbage collections at exit walk every object MLflow, pandas and
    # scikit-learn created: about 1.5 s here (bench/train_bench.py). Frozen objects are skipped.
    gc.freeze()


def _features_line(schema) -> str:
    """The inputs as the template read them: a column meant as a category but stored as numbers shows here."""

    def listed(names: list[str]) -> str:
        shown = ", ".join(names[:8])
        return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")

    parts = [f"{len(schema.numeric)} numeric" + (f" ({listed(schema.numeric)})" if schema.numeric else "")]
    parts.append(f"{len(schema.categorical)} categorical" + (f" ({listed(schema.categorical)})" if schema.categorical else ""))
    if schema.dropped:
        parts.append(f"dropped {listed(list(schema.dropped))}")
    return f"features: {'; '.join(parts)} (train.categorical / train.numeric in the config change it)"


def _selection_line(table: list[dict]) -> str:
    winner = next(row for row in table if row["status"] == "winner")
    scored = sum(row["cv_mean"] is not None for row in table)
    return (
        f"model auto chose {winner['model']}: cross-validated {winner['metric']} {winner['cv_mean']:.4f} ± {winner['cv_std']:.4f}, "
        f"best of {scored} candidate(s) scored (leaderboard: the run's auto/leaderboard.csv)"
    )


HEADLINE = {"accuracy", "balanced_accuracy", "roc_auc", "average_precision", "log_loss", "mae", "rmse", "r2"}


@task(
    help={
        "dataset": "breast_cancer (binary, the default example), wine (multiclass) or diabetes (regression).",
        "data-path": "Where to write the CSV (default: data/data.csv for breast_cancer, else data/<dataset>.csv).",
        "config": "Where to write the matching config (default: config.json for breast_cancer, else config.<dataset>.json).",
    }
)
def sample_data(c, dataset="breast_cancer", data_path=None, config=None):
    """Write an example dataset bundled with scikit-learn to data/, with a matching config."""
    from tand.training.examples import DATASETS, export, write_config

    if dataset not in DATASETS:
        raise Exit(f"error: --dataset {dataset!r} is not known; choose one of: {', '.join(DATASETS)}", code=1)
    default = dataset == "breast_cancer"
    data_path = data_path or ("data/data.csv" if default else f"data/{dataset}.csv")
    config = config or ("config.json" if default else f"config.{dataset}.json")
    write_config(export(dataset, data_path), config)
    print(f"wrote {data_path} and {config}; train with: invoke train --config {config}")


@task
def config_schema(c):
    """Regenerate config.schema.json (editor completion for config.json) from the config model."""
    from tand.config import SCHEMA_FILE, json_schema

    path = REPO_ROOT / SCHEMA_FILE
    path.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


@task
def store_schema(c):
    """Regenerate src/tand/sqlite_schema.sql (a new embedded store without MLflow's migrations) after upgrading MLflow."""
    import tempfile

    from tand.tracking.embedded import SCHEMA_FILE, schema_from_mlflow

    with tempfile.TemporaryDirectory() as folder:
        SCHEMA_FILE.write_text(schema_from_mlflow(Path(folder)), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")


# Test modules that mostly wait (a Docker build on the engine's storage, pip installing a clean venv): the full
# run gives them a pytest process of their own beside the rest, so the waiting overlaps the CPU-bound tests.
# Measured in CI: one process 1384 s; the main process 885 s beside 329 s for these two. (The fork test, the quick
# suite again, was tried there too: 791 s beside 636 s, but its inner suite then competes with the main one for
# the two cores, and load-sensitive cases in it flaked.)
SIDE_MODULES = ("tests/shipping/test_docker_image.py", "tests/tracking/test_pyfunc_anywhere.py")


def _side_run(args: list[str], log_path: Path):
    """The side modules in a second pytest process, its output to `log_path` (printed when both are done)."""
    import subprocess

    base = Path(REPO_ROOT)
    command = [*args, *(str(base / module) for module in SIDE_MODULES), "-p", "no:cacheprovider"]
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the caller, after the process ends)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log


def _stop(process, grace: float = 60.0) -> None:
    """Interrupt a pytest process still running (SIGINT: its fixtures' teardown stops the servers and builds it
    started, which a SIGTERM would leave behind), then kill it if it has not ended within `grace` seconds."""
    import subprocess

    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@task(
    help={
        "quick": "Skip the slow end-to-end cases (live servers, Docker, PostgreSQL).",
        "k": "Only tests whose name matches this pytest -k expression.",
        "path": "Test file or folder (default: tests/).",
        "serial": "One pytest process for everything (by default the full run gives the Docker and clean-venv "
        "modules a second process beside the rest; their output follows the main run's).",
    }
)
def test(c, quick=False, k=None, path="tests", serial=False):
    """Run the test suite (what CI runs); --quick for the inner loop."""
    import tempfile

    load_env()
    args = [sys.executable, "-m", "pytest"]
    target = str(Path(REPO_ROOT) / path) if not Path(path).is_absolute() else path
    if quick:
        args += ["-m", "not slow"]
    if k:
        args += ["-k", k]
    side = None
    if not (quick or k):
        args += ["--durations=12"]  # where a full run's time goes (CI prints it)
    if not (serial or quick or k) and Path(target).resolve() == (Path(REPO_ROOT) / "tests").resolve():
        log_path = Path(tempfile.mkdtemp(prefix="tand-side-tests-")) / "pytest.log"
        side, log = _side_run(args, log_path)
        print(f"test: {', '.join(SIDE_MODULES)} run beside the rest (pid {side.pid}); their report follows", flush=True)
        args += [f"--ignore={Path(REPO_ROOT) / module}" for module in SIDE_MODULES]
    if side is None:
        c.run(" ".join(quote(a) for a in [*args, target]), pty=False)
        return
    # A SIGTERM (CI cancelling the job) becomes SystemExit here, so the finally below stops the side process.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        main = c.run(" ".join(quote(a) for a in [*args, target]), pty=False, warn=True)
        side.wait()
    finally:
        _stop(side)  # interrupted: stop what this task started (a no-op once it has ended)
        log.close()
        signal.signal(signal.SIGTERM, previous)
    print(f"\n===== {' + '.join(SIDE_MODULES)} (second pytest process) =====", flush=True)
    print(log_path.read_text(encoding="utf-8"), flush=True)
    failed = [name for name, code in (("main", main.exited), ("side", side.returncode)) if code != 0]
    if failed:
        raise Exit(f"error: tests failed in the {' and '.join(failed)} run (see above)", code=1)
