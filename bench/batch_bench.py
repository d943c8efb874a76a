"""Batch-scoring benchmark (not a test): `invoke predict` on files of growing size, against the API's batch path.

    .venv/bin/python bench/batch_bench.py [--rows 200000,1000000] [--epochs 3]

Trains the template's example (the PyTorch MLP, a few epochs) into a temporary project, writes CSV files
of the example's rows resampled to each size, and scores each with `invoke predict` in its own process,
printing wall time and rows per second of the whole command (start-up and model load included), the rows
per second of the scoring itself (reading, checking, predicting, writing: what the command reports), and the
process's peak memory (so a flat memory as the file grows is visible). Then starts the API (uvicorn, one
worker: one core) and posts 10,000-row batches of the same rows for a few seconds: the API's batch path's
rows per second, for comparison. Both run with one BLAS thread. CPU seconds (user + system, of the command
and of the server) are printed too: on a busy machine they say more than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

from serve_bench import free_port, tree_cpu_seconds  # bench/serve_bench.py: run as a script, bench/ is on the path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "breast_cancer.csv"
TOKEN = "bench-batch-token"
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]


def measured(command: list[str], cwd: Path, env: dict) -> tuple[float, float, float, float]:
    """(seconds, CPU seconds, peak RSS in MB, the scoring's own rows/s as the command reports it) of one
    command, run in a child of a fresh Python so RUSAGE_CHILDREN is its own."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True); "
        "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024, r.returncode); "
        "print(r.stdout)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    first, _, printed = out.stdout.partition("\n")
    seconds, cpu, peak, code = first.split()
    if code != "0":
        raise SystemExit(f"{' '.join(command)} failed ({code}): {out.stderr[-1500:]}")
    scoring = re.search(r"([\d,]+) rows/s scoring", printed)
    return float(seconds), float(cpu), float(peak), float(scoring.group(1).replace(",", "")) if scoring else float("nan")


def api_rows_per_second(root: Path, env: dict, body: bytes, rows: int, seconds: float = 8.0) -> tuple[float, float]:
    """(rows per second, rows per CPU second of the server) posting `body` again and again."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--no-access-log", "--log-level", "warning"], cwd=root, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/predict"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the API did not start")
                time.sleep(0.3)
        request = lambda: urllib.request.urlopen(urllib.request.Request(url, body, {"TOKEN": TOKEN, "Content-Type": "application/json"}), timeout=60).read()  # noqa: E731
        request()
        done, started, cpu = 0, time.perf_counter(), tree_cpu_seconds(server.pid)
        while time.perf_counter() - started < seconds:
            request()
            done += rows
        return done / (time.perf_counter() - started), done / max(tree_cpu_seconds(server.pid) - cpu, 1e-9)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="200000,1000000", help="comma-separated file sizes in rows")
    parser.add_argument("--epochs", type=int, default=3, help="MLP epochs (the network's size, not its accuracy, sets the speed)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="tand-batch-bench-") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        shutil.copy2(EXAMPLE, root / "data" / "data.csv")
        config = {
            "train": {"data_path": "data/data.csv", "labels_column": "diagnosis", "labels": ["malignant", "benign"], "epochs": args.epochs},
            "mlflow": {"model_name": "batch-bench", "experiment_name": "batch-bench"},
        }
        (root / "config.json").write_text(json.dumps(config))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'database.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
               "API_TOKEN": TOKEN, "TAND_CONFIG": str(root / "config.json"), "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}  # fmt: skip
        subprocess.run([*INVOKE, "train", "--quiet"], cwd=root, env=env, check=True, capture_output=True)
        frame = pd.read_csv(EXAMPLE).drop(columns="diagnosis")
        print("| rows | file | invoke predict, whole command | rows/s, whole command | rows per CPU second, whole command | rows/s, scoring | peak memory |")
        print("|---|---|---|---|---|---|---|")
        for n in sizes:
            path = root / f"rows-{n}.csv"
            frame.sample(n, replace=True, random_state=0).to_csv(path, index=False)
            command = [*INVOKE, "predict", "--input", str(path), "--output", str(root / "out.csv"), "--quiet"]
            seconds, cpu, peak, scoring = measured(command, root, env)
            size = path.stat().st_size / 1e6
            print(f"| {n:,} | {size:.0f} MB | {seconds:.1f} s | {n / seconds:,.0f} | {n / cpu:,.0f} | {scoring:,.0f} | {peak:.0f} MB |", flush=True)
            path.unlink()
        batch = frame.sample(10_000, replace=True, random_state=1)
        rate, per_cpu = api_rows_per_second(root, env, batch.to_json(orient="records").encode(), len(batch))
        print(f"\nthe API's batch path (uvicorn, 1 worker, 10,000-row requests in a row): {rate:,.0f} rows/s, {per_cpu:,.0f} rows per CPU second of the server")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (a shared machine's wall times vary; CPU seconds less)")


if __name__ == "__main__":
    main()
