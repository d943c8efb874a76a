"""Image-size benchmark (not a test): what the Docker image adds over its base, per kind of served model.

    .venv/bin/python bench/image_bench.py [--models mlp,lightgbm,xgboost,catboost] [--keep]

For each model it trains a tiny version of it into a temporary project (the template's example data),
builds the API's image with `invoke docker-build --network host` (which stages the served model's own
library in build/model-store/requirements-model.txt), runs the container with `--network host`, checks
that POST /predict answers, and prints the image's size and what it adds over the Dockerfile's base.
The images are removed afterwards unless --keep. Needs a Docker engine (classic builder, host network).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "breast_cancer.csv"
SHIPPED = ("Dockerfile", ".dockerignore", "requirements-serve.txt", "app", "src", "deploy", "cli", "tasks.py")
TOKEN = "bench-image-token-7c1d"
MODELS = {
    "mlp": {"framework": "pytorch", "epochs": 3, "hidden_dim": 32},
    "lightgbm": {"model": "lightgbm", "model_args": {"n_estimators": 30}},
    "xgboost": {"model": "xgboost", "model_args": {"n_estimators": 30}},
    "catboost": {"model": "catboost", "model_args": {"n_estimators": 30}},
    "random_forest": {"model": "random_forest", "model_args": {"n_estimators": 20}},
}


def project(root: Path, name: str, train: dict) -> Path:
    root.mkdir(parents=True)
    for item in SHIPPED:
        source = REPO / item
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, root / item, **({"ignore": shutil.ignore_patterns("__pycache__", "eb-cli")} if source.is_dir() else {}))
    (root / "data").mkdir()
    shutil.copy2(EXAMPLE, root / "data" / "data.csv")
    config = {
        "train": {"data_path": "data/data.csv", "labels_column": "diagnosis", "labels": ["malignant", "benign"], **train},
        "mlflow": {"model_name": f"image-{name}", "experiment_name": "image-bench"},
    }
    (root / "config.json").write_text(json.dumps(config, indent=2))
    (root / "env_files").mkdir()
    (root / "env_files" / "docker_app.env").write_text(
        f"MLFLOW_TRACKING_URI=sqlite:///database.db\nMLFLOW_DISABLE_TELEMETRY=true\nMODEL_ALIAS=production\nAPI_TOKEN={TOKEN}\n"
    )
    (root / "env_files" / "app.env").write_text(f"API_TOKEN={TOKEN}\n")
    return root


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///database.db", "MLFLOW_DISABLE_TELEMETRY": "true", "API_TOKEN": TOKEN}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def size(reference: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", reference], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(tag: str, request: dict) -> bool:
    port = free_port()
    name = f"image-bench-{port}"
    subprocess.run(
        ["docker", "run", "--rm", "--detach", "--name", name, "--network", "host", "--env", f"PORT={port}", "--env", "HOST=127.0.0.1",
         "--env-file", "env_files/docker_app.env", tag], check=True, capture_output=True, cwd=Path.cwd(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/predict", json.dumps(request).encode(), {"TOKEN": TOKEN, "Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=5) as response:
                    return response.status == 200 and "prediction" in json.loads(response.read())
            except OSError:
                time.sleep(1)
        return False
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lightgbm,xgboost,catboost", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--keep", action="store_true", help="keep the images")
    args = parser.parse_args()
    invoke = [sys.executable, "-m", "invoke", "--search-root", "."]
    base = next(line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("FROM "))
    base_size = size(base)
    print(f"base {base}: {base_size / 1e6:.0f} MB")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tand-image-bench-") as tmp:
        for name in args.models.split(","):
            root = project(Path(tmp) / name, name, MODELS[name])
            os.chdir(root)
            run([*invoke, "train", "--quiet"], root, 900)
            tag = f"tand-image-bench-{name}:latest"
            started = time.monotonic()
            run([*invoke, "docker-build", "--tag", tag, "--network", "host"], root, 3600)
            built = time.monotonic() - started
            extra = [ln for ln in (root / "build/model-store/requirements-model.txt").read_text().splitlines() if ln and not ln.startswith("#")]
            request = json.loads((root / "request_model.json").read_text())
            ok = answers(tag, request)
            total = size(tag)
            rows.append((name, ", ".join(extra) or "-", total, total - base_size, built, ok))
            print(f"{name}: {total / 1e6:.0f} MB ({(total - base_size) / 1e6:+.0f} MB over the base), built in {built:.0f} s, /predict {'ok' if ok else 'FAILED'}", flush=True)
            if not args.keep:
                subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True)
            os.chdir(REPO)
    print(f"\n| served model | extra packages | image | over {base} | build | /predict |\n|---|---|---|---|---|---|")
    for name, extra, total, over, built, ok in rows:
        print(f"| {name} | {extra} | {total / 1e6:.0f} MB | {over / 1e6:+.0f} MB | {built:.0f} s | {'200' if ok else 'failed'} |")


if __name__ == "__main__":
    main()
