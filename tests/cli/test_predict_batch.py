"""`invoke predict`: a file scored as the live API answers each row, refused rows reported by number."""

from __future__ import annotations

import json
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest

from app_support import TOKEN, Store, mixed_dataset, server_env, start_server, train_version, write_config
from conftest import EXAMPLE_CONFIG, INVOKE, example_csv

MODEL = "batch-scored"


WARDS = ["07", "12", "3b"]  # text categories, two of which look like integers: "07" must stay "07"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A logistic regression on the example plus a text, an integer-looking text and an integer category."""
    root = tmp_path_factory.mktemp("batch")
    csv = mixed_dataset(root / "mixed.csv")
    data = pd.read_csv(csv)
    data.insert(2, "ward", np.random.default_rng(1).choice(WARDS, len(data)))
    data.to_csv(csv, index=False)
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["train"].update(data_path=str(csv), model="logistic_regression", framework="sklearn", categorical=["clinic", "grade", "ward"])
    config["mlflow"]["model_name"] = MODEL
    store = Store(root / "store")
    store.path.mkdir()
    version = train_version(store, config, root / "work")
    frame = pd.read_csv(csv, dtype={"ward": str}).head(40)  # the label column stays in: the scorer reads what it needs
    frame.insert(0, "patient", [f"p{i:03d}" for i in range(len(frame))])
    return store, version, root, frame


def run_predict(store, root, *args, model=MODEL):
    config = write_config(root / "config.json", model)
    env = server_env(store.uri, config, root / "cache")
    return subprocess.run(
        [*INVOKE, "predict", "--config", str(config), "--quiet", *args], cwd=root, env=env, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow  # a live uvicorn and invoke as a subprocess
def test_a_csv_is_scored_as_the_live_api_answers_and_a_bad_row_is_reported(trained):
    store, version, root, frame = trained
    number = "mean_radius"
    bad = frame.copy().astype({"clinic": object, "grade": object, number: object})
    bad.loc[7, "clinic"] = "atlantis"  # not a category the model knows: the API refuses it
    bad.loc[12, "grade"] = None  # missing: imputed, as the API does for a null
    bad.loc[14, "clinic"] = None
    bad.loc[15, number] = None
    bad.loc[21, "grade"] = 2.5  # not a whole number
    bad.loc[25, number] = "abc"  # not a number
    bad.loc[30, number] = 1e300  # beyond the API's bound
    refused_rows = {7: "clinic", 21: "grade", 25: number, 30: number}
    source = root / "incoming.csv"
    bad.to_csv(source, index=False)
    assert ",07," in source.read_text()
    out = root / "scored.csv"
    # Chunks of 6 rows: some hold only integer-looking wards; they stay text.
    result = run_predict(store, root, "--input", str(source), "--output", str(out), "--keep", "patient", "--chunk-rows", "6")
    assert result.returncode == 0, result.stderr
    assert f"scored 36 of 40 rows with {MODEL} version {version}" in result.stdout and "4 refused" in result.stdout

    scored = pd.read_csv(out)
    assert list(scored["patient"]) == [p for i, p in enumerate(bad["patient"]) if i not in refused_rows]
    assert set(scored["version"]) == {version} and set(scored["model"]) == {MODEL}
    errors = pd.read_csv(root / "scored.errors.csv")
    assert list(errors["row"]) == [i + 1 for i in refused_rows]  # 1 = the first data row
    assert list(errors["column"]) == list(refused_rows.values())

    server = start_server(root, server_env(store.uri, write_config(root / "serve.json", MODEL), root / "cache"))
    try:
        def post(frame):
            rows = json.loads(frame.drop(columns=["patient", "diagnosis"]).to_json(orient="records"))
            return httpx.post(f"{server.url}/predict", json=rows, headers={"TOKEN": TOKEN}, timeout=30)

        answer = post(bad.drop(index=list(refused_rows)))
        refusals = {i: post(bad.loc[[i]]) for i in refused_rows}
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    for i, response in refusals.items():
        assert response.status_code == 422, (i, response.text)
        reason = errors.loc[errors["row"] == i + 1, "reason"].item()
        assert reason in [d["msg"] for d in response.json()["detail"]], (i, reason, response.text)  # the API's own words
    api = answer.json()["predictions"]
    assert list(scored["prediction"]) == [a["prediction"] for a in api]
    for name in ("malignant", "benign"):
        assert np.allclose(scored[f"probability_{name}"], [a["probabilities"][name] for a in api], rtol=1e-12, atol=0)


def test_parquet_in_and_out_in_small_chunks(trained):
    store, version, root, frame = trained
    source = root / "incoming.parquet"
    frame.to_parquet(source, index=False)
    out = root / "scored.parquet"
    (root / "scored.errors.csv").write_text("row,column,reason\n1,clinic,an earlier run's refusal\n")
    result = run_predict(store, root, "--input", str(source), "--output", str(out), "--keep", "patient", "--chunk-rows", "7")
    assert result.returncode == 0, result.stderr
    scored = pd.read_parquet(out)
    assert len(scored) == 40 and list(scored["patient"]) == list(frame["patient"])
    assert "refused" not in result.stdout
    assert not (root / "scored.errors.csv").exists(), "no refusal this time: an earlier run's errors file is not left behind"
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


@pytest.fixture(scope="module")
def trained_mlp(tmp_path_factory):
    """The template's default model (the MLP, compiled to NumPy: the API and the scorer load its compiled file)."""
    root = tmp_path_factory.mktemp("batch-mlp")
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["train"].update(data_path=str(example_csv()), epochs=2, hidden_dim=16)
    config["mlflow"]["model_name"] = "batch-mlp"
    store = Store(root / "store")
    store.path.mkdir()
    return store, train_version(store, config, root / "work"), root


@pytest.mark.slow  # a live uvicorn and invoke as a subprocess
def test_the_mlp_scores_bit_for_bit_as_the_live_api_answers(trained_mlp):
    store, version, root = trained_mlp
    frame = pd.read_csv(example_csv()).head(50)  # the label column stays in the file
    frame.loc[[3, 9], "mean_radius"] = np.nan
    frame.loc[9, "mean_texture"] = np.nan
    frame.to_csv(root / "incoming.csv", index=False)
    result = run_predict(store, root, "--input", str(root / "incoming.csv"), "--output", str(root / "scored.csv"), model="batch-mlp")
    assert result.returncode == 0, result.stderr
    scored = pd.read_csv(root / "scored.csv", float_precision="round_trip")

    server = start_server(root, server_env(store.uri, write_config(root / "serve.json", "batch-mlp"), root / "cache"))
    try:
        records = frame.drop(columns="diagnosis").to_dict(orient="records")
        rows = [{k: None if np.isnan(v) else float(v) for k, v in record.items()} for record in records]  # repr: exact
        answer = httpx.post(f"{server.url}/predict", json=rows, headers={"TOKEN": TOKEN}, timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    api = answer.json()["predictions"]
    assert list(scored["prediction"]) == [a["prediction"] for a in api]
    for name in ("malignant", "benign"):
        assert list(scored[f"probability_{name}"]) == [a["probabilities"][name] for a in api]  # exactly


def test_a_corrupt_parquet_an_output_over_the_input_or_in_no_folder_and_a_missing_kept_column_are_one_line(trained):
    store, version, root, frame = trained
    (root / "corrupt.parquet").write_text("not parquet")
    frame.to_csv(root / "source.csv", index=False)
    cases = {
        ("--input", str(root / "corrupt.parquet"), "--output", str(root / "c.csv")): f"error: {root / 'corrupt.parquet'}: cannot be read as Parquet (",
        ("--input", str(root / "source.csv"), "--output", str(root / "source.csv")): f"error: --output {root / 'source.csv'} is the input file",
        ("--input", str(root / "source.csv"), "--output", str(root / "nowhere" / "o.csv")): f"error: --output {root / 'nowhere' / 'o.csv'}: no folder",
        ("--input", str(root / "source.csv"), "--output", str(root / "k.csv"), "--keep", "patient,ward_id"):
            f"error: {root / 'source.csv'}: no column 'ward_id' to copy (--keep)",
    }  # fmt: skip
    for args, start in cases.items():
        result = run_predict(store, root, *args)
        assert result.returncode == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert pd.read_csv(root / "source.csv").equals(frame.reset_index(drop=True)), "the input is left as it was"
