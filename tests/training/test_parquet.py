"""Parquet as train.data_path: read with the CSV's conventions, trained, registered and served."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app_support import Store, auth, mixed_dataset, settings, train_version
from conftest import load_registered, tiny_config
from tand.config import CsvConfig, parse_config
from tand.errors import DataError
from tand.training.data import load_dataset
from tand.training.reading import read_parquet, read_table


def test_parquet_reads_as_the_csv_does(tmp_path):
    frame = pd.DataFrame(
        {
            "size": pd.array([1, None, 3, 4], dtype="Int64"),  # a nullable integer: NaN in a float column
            "colour": pd.Categorical(["red", "blue", None, "red"]),  # dictionary-encoded text: plain values
            "grade": ["a", "?", "b", "NA"],  # text missing markers, as in a CSV
            "when": pd.to_datetime(["2024-01-01", None, "2024-01-03", "2024-01-04"]),
        }
    )
    frame.to_parquet(tmp_path / "data.pq")
    read = read_table(tmp_path / "data.pq")
    assert read["size"].dtype == np.float64 and read["size"].isna().tolist() == [False, True, False, False]
    assert read["colour"].tolist()[:2] == ["red", "blue"] and pd.isna(read["colour"][2])
    assert read["grade"].isna().tolist() == [False, True, False, True]
    assert read["when"][0] == "2024-01-01" and pd.isna(read["when"][1])
    kept = read_parquet(tmp_path / "data.pq", CsvConfig(missing_values=[]))
    assert kept["grade"].tolist() == ["a", "?", "b", "NA"]


def test_parquet_and_csv_give_the_same_dataset(tmp_path):
    csv = mixed_dataset(tmp_path / "mixed.csv")
    pd.read_csv(csv).to_parquet(tmp_path / "mixed.parquet")
    from_csv = load_dataset(parse_config(tiny_config(data_path=str(csv))).train)
    from_parquet = load_dataset(parse_config(tiny_config(data_path=str(tmp_path / "mixed.parquet"))).train)
    assert from_parquet.schema == from_csv.schema
    pd.testing.assert_frame_equal(from_parquet.X, from_csv.X, check_dtype=False)
    assert from_parquet.y.tolist() == from_csv.y.tolist()


def test_unreadable_or_missing_parquet_is_one_line(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"cannot be read as Parquet"):
        read_table(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"not found; put your Parquet file there"):
        read_table(tmp_path / "absent.pq")


@pytest.fixture(scope="module")
def parquet_model(tmp_path_factory):
    """A tiny MLP trained from a Parquet file into a fresh store."""
    root = tmp_path_factory.mktemp("parquet")
    frame = pd.read_csv(mixed_dataset(root / "mixed.csv"))
    frame.to_parquet(root / "mixed.parquet")
    (root / "store").mkdir()
    store = Store(root / "store")
    config = tiny_config(data_path=str(root / "mixed.parquet"))
    config["mlflow"]["model_name"] = "parquet-model"
    return store, train_version(store, config, root / "work"), frame


def test_parquet_input_trains_and_serves(parquet_model, tmp_path, monkeypatch):
    store, version, frame = parquet_model
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    registered = load_registered("parquet-model", version=version)
    rows = frame.drop(columns=["diagnosis"]).head(4)
    expected = registered.pipeline.predict_proba(rows)
    app = create_app(settings(store.uri, "parquet-model", tmp_path / "cache"))
    with TestClient(app) as client:
        answer = client.post("/predict", json=rows.to_dict("records"), headers=auth())
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    classes = [str(c) for c in registered.pipeline.classes_]
    for row, probabilities in zip(predictions, expected):
        for name, p in zip(classes, probabilities):
            assert math.isclose(row["probabilities"][name], p, abs_tol=1e-6)
