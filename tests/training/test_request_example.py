"""The example request (request_model.json, /docs) is typical values of the training data, never a row."""

import json

import pandas as pd

from app.predict.parser import RequestParser
from conftest import example_csv, tiny_config
from tand.config import parse_config
from tand.training.data import load_dataset
from tand.training.request_example import example_request


def test_the_example_is_medians_and_modes_not_a_training_row(tmp_path):
    frame = pd.read_csv(example_csv())
    frame["clinic"] = (["north", "south", "north", None] * len(frame))[: len(frame)]
    frame.loc[::7, "mean_radius"] = None
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(parse_config(tiny_config(data_path=str(path))).train)
    request = example_request(dataset)
    assert request["clinic"] == "north"
    assert abs(request["mean_radius"] - dataset.X["mean_radius"].median()) <= 1e-3 * abs(request["mean_radius"])
    rows = dataset.X[list(request)].astype(object).to_dict("records")
    assert request not in rows
    # And it is a valid request for a model trained on this data.
    parsed, batch = RequestParser(dataset.schema, max_rows=1).parse(json.dumps(request).encode())
    assert not batch and len(parsed) == 1
