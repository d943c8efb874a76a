"""Batch-scoring benchmark (not a test): `invoke predict` on files of growing size, against the API's batch path.

    .venv/bin/python bench/batch_bench.py [--rows 200000,1000000] [--epochs 3]

Trains the template's example (the PyTorch MLP, a few epochs) into a temporary project, writes CSV files
of the example's rows resampled to each size, and scores each with `invoke predict` in its own process,
printing wall time, rows per second and the process's peak memory (so a flat memory as the file grows is
visible). Then starts the API (uvicorn, one worker: one core) and posts 10,000-row batches of the same
rows for a few seconds: the API's batch path's rows per second, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "breast_cancer.csv"
TOKEN = "bench-batch-token"
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]


def measured(command: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command, run in a child of a fresh Python so RUSAGE_CHILDREN is its own."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    seconds, peak, code = out.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(command)} failed ({code}): {out.stderr[-1500:]}")
    return float(seconds), float(peak)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_rows_per_second(root: Path, env: dict, body: bytes, rows: int, seconds: float = 8.0) -> float:
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
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            request()
            done += rows
        return done / (time.perf_counter() - started)
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
        print(f"| rows | file | invoke predict | rows/s | peak memory |\n|---|---|---|---|---|")
        for n in sizes:
            path = root / f"rows-{n}.csv"
            frame.sample(n, replace=True, random_state=0).to_csv(path, index=False)
            seconds, peak = measured([*INVOKE, "predict", "--input", str(path), "--output", str(root / "out.csv"), "--quiet"], root, env)
            print(f"| {n:,} | {path.stat().st_size / 1e6:.0f} MB | {seconds:.1f} s | {n / seconds:,.0f} | {peak:.0f} MB |", flush=True)
        batch = frame.sample(10_000, replace=True, random_state=1)
        rate = api_rows_per_second(root, env, batch.to_json(orient="records").encode(), len(batch))
        print(f"\nthe API's batch path (uvicorn, 1 worker, 10,000-row requests in a row): {rate:,.0f} rows/s")


if __name__ == "__main__":
    main()
