"""`invoke check`: your own config and data, end to end, in a throwaway store.

The template's test suite (`invoke test`) checks the template on its own fixed example, whatever you
did to config.json and data/. This task checks what you did: it trains your config into a temporary
MLflow store (your database.db and mlruns/ are not touched), loads the version as the API does, and
answers the example request, and the same request with every value missing, through the real app.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from cli.common import known_errors, load_env
from cli.training import HEADLINE

CHECK_TOKEN = "invoke-check-token"  # lives only in this process


def _train_aside(cfg, folder: Path):
    """Train into a store in `folder`; the process's tracking settings are restored afterwards."""
    from tand.training.run import train

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_DEFAULT_ARTIFACT_ROOT")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'database.db'}"
    os.environ["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = str(folder / "mlruns")
    try:
        return train(cfg, project_dir=folder, progress=False, processes=True)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _answers(cfg, folder: Path, result) -> list[tuple[str, int, dict]]:
    import warnings

    with warnings.catch_warnings():  # Starlette's note about its test client's HTTP library: not the user's concern
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        api_token=CHECK_TOKEN,
        model_name=result.model_name,
        model_alias=cfg.mlflow.alias,
        tracking_uri=f"sqlite:///{folder / 'database.db'}",
        refresh_interval=0,
        cache_dir=None,
    )
    request = json.loads((folder / "request_model.json").read_text(encoding="utf-8"))
    answers = []
    with TestClient(create_app(settings)) as client:
        for label, body in (("request_model.json", request), ("every value missing", dict.fromkeys(request))):
            answer = client.post("/predict", json=body, headers={"TOKEN": CHECK_TOKEN})
            answers.append((label, answer.status_code, answer.json()))
    return answers


@task(help={"config": "Path of the config file (default: config.json)."})
def check(c, config="config.json"):
    """Check your own config and data end to end (train aside, serve, predict); your store is not touched."""
    load_env("train.env")
    from tand.config import load_config

    with known_errors():
        cfg = load_config(config)
        with tempfile.TemporaryDirectory(prefix="tand-check-") as tmp:
            folder = Path(tmp)
            result = _train_aside(cfg, folder)
            headline = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("test_") and k[5:] in HEADLINE}
            print(f"trained {result.model_name} (in a temporary store): test metrics {json.dumps(headline)}")
            answers = _answers(cfg, folder, result)
    failed = False
    for label, status, body in answers:
        print(f"POST /predict with {label}: {status} {json.dumps(body)[:300]}")
        failed |= status != 200
    if failed:
        raise Exit("error: the API refused a request the trained model should answer; see above", code=1)
    print("ok: your data trains, registers and serves (nothing was written to your store)")
