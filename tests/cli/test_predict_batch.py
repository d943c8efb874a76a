"""`invoke predict`: a file scored as the live API answers each row, refused rows reported by number."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest

from app_support import TOKEN, Store, mixed_dataset, server_env, start_server, train_version, write_config
from conftest import EXAMPLE_CONFIG, INVOKE, REPO

MODEL = "batch-scored"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A logistic regression on the example plus a text and an integer category, in its own store."""
    root = tmp_path_factory.mktemp("batch")
    csv = mixed_dataset(root / "mixed.csv")
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["train"].update(data_path=str(csv), model="logistic_regression", framework="sklearn", categorical=["clinic", "grade"])
    config["mlflow"]["model_name"] = MODEL
    store = Store(root / "store")
    store.path.mkdir()
    version = train_version(store, config, root / "work")
    frame = pd.read_csv(csv).drop(columns="diagnosis").head(40)
    frame.insert(0, "patient", [f"p{i:03d}" for i in range(len(frame))])
    return store, version, root, frame


def run_predict(store, root, *args):
    config = write_config(root / "config.json", MODEL)
    env = server_env(store.uri, config, root / "cache")
    return subprocess.run(
        [*INVOKE, "predict", "--config", str(config), "--quiet", *args], cwd=root, env=env, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow  # a live uvicorn and invoke as a subprocess
def test_a_csv_is_scored_as_the_live_api_answers_and_a_bad_row_is_reported(trained):
    store, version, root, frame = trained
    bad = frame.copy()
    bad["clinic"] = bad["clinic"].astype(object)
    bad.loc[7, "clinic"] = "atlantis"  # not a category the model knows: the API refuses it
    bad.loc[12, "grade"] = None  # missing: imputed, as the API does for a null
    source = root / "incoming.csv"
    bad.to_csv(source, index=False)
    out = root / "scored.csv"
    result = run_predict(store, root, "--input", str(source), "--output", str(out), "--keep", "patient")
    assert result.returncode == 0, result.stderr
    assert f"scored 39 of 40 rows with {MODEL} version {version}" in result.stdout and "1 refused" in result.stdout

    scored = pd.read_csv(out)
    assert list(scored["patient"]) == [p for i, p in enumerate(bad["patient"]) if i != 7]
    assert set(scored["version"]) == {version} and set(scored["model"]) == {MODEL}
    errors = pd.read_csv(root / "scored.errors.csv")
    assert list(errors["row"]) == [8] and list(errors["column"]) == ["clinic"]  # 1 = the first data row

    server = start_server(root, server_env(store.uri, write_config(root / "serve.json", MODEL), root / "cache"))
    try:
        rows = json.loads(bad.drop(columns="patient").drop(index=7).to_json(orient="records"))
        answer = httpx.post(f"{server.url}/predict", json=rows, headers={"TOKEN": TOKEN}, timeout=30)
        refused = httpx.post(f"{server.url}/predict", json=json.loads(bad.drop(columns="patient").iloc[[7]].to_json(orient="records")),
                             headers={"TOKEN": TOKEN}, timeout=30)  # fmt: skip
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert refused.status_code == 422 and "clinic" in refused.text
    api = answer.json()["predictions"]
    assert list(scored["prediction"]) == [a["prediction"] for a in api]
    for name in ("malignant", "benign"):
        assert np.allclose(scored[f"probability_{name}"], [a["probabilities"][name] for a in api], rtol=1e-12, atol=0)


def test_parquet_in_and_out_in_small_chunks(trained):
    store, version, root, frame = trained
    source = root / "incoming.parquet"
    frame.to_parquet(source, index=False)
    out = root / "scored.parquet"
    result = run_predict(store, root, "--input", str(source), "--output", str(out), "--keep", "patient", "--chunk-rows", "7")
    assert result.returncode == 0, result.stderr
    scored = pd.read_parquet(out)
    assert len(scored) == 40 and list(scored["patient"]) == list(frame["patient"])
    assert "refused" not in result.stdout
    assert not (root / "scored.errors.csv").exists(), "no refusal this time: the CSV run's errors file is not left behind"
    whole = run_predict(store, root, "--input", str(source), "--output", str(root / "whole.parquet"))
    assert whole.returncode == 0
    assert pd.read_parquet(root / "whole.parquet")["prediction"].tolist() == scored["prediction"].tolist(), "chunking changes nothing"


def test_nothing_scorable_or_a_missing_column_is_one_line_and_exit_1(trained):
    store, version, root, frame = trained
    broken = frame.assign(clinic="atlantis")
    broken.to_csv(root / "broken.csv", index=False)
    result = run_predict(store, root, "--input", str(root / "broken.csv"), "--output", str(root / "none.csv"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no row of") and "Traceback" not in result.stderr
    assert len(pd.read_csv(root / "none.errors.csv")) == 40

    frame.drop(columns="grade").to_csv(root / "short.csv", index=False)
    result = run_predict(store, root, "--input", str(root / "short.csv"), "--output", str(root / "x.csv"))
    assert result.returncode == 1 and "no column 'grade'" in result.stderr and "Traceback" not in result.stderr
