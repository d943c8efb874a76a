import json

import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset
from tand.config import parse_config
from tand.training.data import example_request, load_dataset, read_csv, split
from tand.errors import DataError


def cfg(path, **train):
    return parse_config({"train": {"data_path": str(path), **train}}).train


def test_bom_header_is_read_as_plain_column_names():
    frame = read_csv(shared_dataset("heart.csv"))
    assert frame.columns[0] == "age" and "target" in frame.columns


def test_mixed_types_missing_values_and_string_labels(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame(
        {
            "size": [1.5, 2.5, np.nan, 4.0, 5.5, 6.0, 7.5, 8.0],
            "colour": ["red", "blue", None, "red", "green", "blue", "red", "green"],
            "rooms": [1, 2, 3, 1, 2, 3, 1, 2],
            "count": [10, 200, 35, 41, 52, 67, 78, 99],
            "kind": ["cat", "dog", "cat", "dog", "cat", "dog", "cat", "dog"],
        }
    ).to_csv(path, index=False)
    dataset = load_dataset(cfg(path, labels_column="kind"))
    kinds = {f.name: (f.kind, f.dtype) for f in dataset.schema.features}
    assert kinds == {
        "size": ("numeric", "number"),
        "colour": ("categorical", "string"),
        "rooms": ("categorical", "integer"),
        "count": ("numeric", "integer"),
    }
    assert dataset.schema.classes == ("cat", "dog")
    colour = next(f for f in dataset.schema.features if f.name == "colour")
    assert colour.categories == ("blue", "green", "red")
    declared = load_dataset(cfg(path, labels_column="kind", numeric=["rooms"], categorical=["count"]))
    kinds = {f.name: f.kind for f in declared.schema.features}
    assert kinds["rooms"] == "numeric" and kinds["count"] == "categorical"
    request = example_request(dataset)
    assert set(request) == {"size", "colour", "rooms", "count"}
    json.dumps(request)


def test_integer_labels_are_named_by_config(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"x": range(10), "y": [0, 1] * 5}).to_csv(path, index=False)
    dataset = load_dataset(cfg(path, labels_column="y", labels=["no", "yes"]))
    assert set(dataset.y) == {"no", "yes"} and dataset.schema.classes == ("no", "yes")


def test_split_is_stratified_and_seeded():
    dataset = load_dataset(cfg(shared_dataset("heart.csv"), labels_column="target", labels=["no", "yes"]))
    a = split(dataset, 0.25, seed=1)
    b = split(dataset, 0.25, seed=1)
    assert a.X_test.index.equals(b.X_test.index)
    share = dataset.y.value_counts(normalize=True)
    test_share = a.y_test.value_counts(normalize=True)
    assert abs(share["yes"] - test_share["yes"]) < 0.03


@pytest.mark.parametrize(
    "frame, train, message",
    [
        (pd.DataFrame({"x": [1, 2], "y": [0, 1]}), {"labels_column": "label"}, "column 'label' is not in the CSV; columns are: x, y"),
        (pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 2]}), {"labels_column": "y", "labels": ["a", "b"]}, "holds classes [0, 1, 2] but `labels` names 2"),
        (pd.DataFrame({"x": ["1", "2", "a"], "y": [0, 1, 0]}), {"labels_column": "y", "numeric": ["x"]}, "column 'x' holds 'a', not a number"),
        (pd.DataFrame({"x": [1, 2, 3], "y": [1, 1, 1]}), {"labels_column": "y"}, "holds a single class"),
        (pd.DataFrame({"x": [1, 2], "y": [0, 1]}), {"labels_column": "y", "to_drop": ["z"]}, "train.to_drop: column(s) 'z' not in the CSV"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, frame, train, message):
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, **train))
    assert message in str(err.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(cfg(tmp_path / "none.csv", labels_column="y"))
    (tmp_path / "header.csv").write_text("x,y\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        load_dataset(cfg(tmp_path / "header.csv", labels_column="y"))
