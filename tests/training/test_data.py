import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset
from tand.config import parse_config
from tand.training.data import load_dataset, read_csv, split
from tand.training.request_example import example_request
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


def churn_like(rows: int = 40) -> pd.DataFrame:
    """A small frame with a float, an integer count, a text category and a text label."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "charges": np.round(rng.uniform(10, 100, rows), 2),
            "tenure": rng.integers(0, 70, rows),
            "city": rng.choice(["Köln", "Zürich", "Paris"], rows),
            "churn": rng.choice(["no", "yes"], rows),
        }
    )


def features(dataset) -> dict:
    return {f.name: (f.kind, f.dtype) for f in dataset.schema.features}


EXPECTED = {"charges": ("numeric", "number"), "tenure": ("numeric", "integer"), "city": ("categorical", "string")}


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_the_separator_is_detected_from_the_header_line(tmp_path, separator):
    path = tmp_path / "d.csv"
    churn_like().to_csv(path, index=False, sep=separator)
    assert features(load_dataset(cfg(path, labels_column="churn"))) == EXPECTED


def test_a_european_csv_reads_with_csv_options_and_says_which_to_set(tmp_path):
    path = tmp_path / "d.csv"
    churn_like().to_csv(path, index=False, sep=";", decimal=",", encoding="latin-1")
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, labels_column="churn"))
    assert str(err.value).startswith("train.csv.encoding: ")
    assert re.search(
        r"is not utf-8 text \(byte 0x(f6|fc) cannot be decoded\); set train.csv.encoding to the file's encoding, e.g. 'latin-1'",
        str(err.value),
    )
    with pytest.raises(DataError, match=r"train.csv.decimal: column 'charges' holds '\d+,\d+', a number with a decimal comma; set train.csv.decimal to ','"):
        load_dataset(cfg(path, labels_column="churn", csv={"encoding": "latin-1"}))
    dataset = load_dataset(cfg(path, labels_column="churn", csv={"encoding": "latin-1", "decimal": ","}))
    assert features(dataset) == EXPECTED
    assert dataset.X["charges"].equals(churn_like()["charges"]) and "Köln" in set(dataset.X["city"])


def test_a_separator_that_is_not_in_the_header_says_which_one_is(tmp_path):
    path = tmp_path / "d.csv"
    churn_like().to_csv(path, index=False, sep="|")
    with pytest.raises(DataError, match=r"train.csv.separator: the header of .* does not contain ';' but contains '\|'; set train.csv.separator to '\|'"):
        load_dataset(cfg(path, labels_column="churn", csv={"separator": ";"}))


@pytest.mark.parametrize("marker", ["n/a?", "NA", "n/a", "?", "-", "null", "None", "NaN", ""])
def test_common_missing_markers_are_missing_and_the_column_stays_numeric(tmp_path, marker):
    frame = churn_like(100).astype({"charges": object})
    frame.loc[::7, "charges"] = marker  # 15 % of the rows
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(cfg(path, labels_column="churn"))
    assert features(dataset)["charges"] == ("numeric", "number")
    assert dataset.X["charges"].isna().sum() == 15


def test_an_unknown_missing_marker_in_a_numeric_column_says_which_key_to_set(tmp_path):
    frame = churn_like(100).astype({"charges": object})
    frame.loc[::7, "charges"] = "unknown"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, labels_column="churn"))
    assert str(err.value) == (
        "train.numeric: column 'charges' holds 'unknown', not a number (15 row(s); values 'unknown'); if that means "
        "missing, add it to train.csv.missing_values; else fix the CSV or list 'charges' in train.categorical"
    )
    dataset = load_dataset(cfg(path, labels_column="churn", csv={"missing_values": ["", "unknown"]}))
    assert features(dataset)["charges"] == ("numeric", "number")
    as_category = load_dataset(cfg(path, labels_column="churn", categorical=["charges"]))
    assert features(as_category)["charges"][0] == "categorical"


@pytest.mark.parametrize("value, shown", [("inf", "inf"), ("-inf", "-inf"), ("1e308", "1e+308"), ("-1e308", "-1e+308")])
def test_infinite_or_huge_numbers_are_one_line_naming_the_column(tmp_path, value, shown):
    frame = churn_like().astype({"charges": object})
    frame.loc[3, "charges"] = value
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, labels_column="churn"))
    assert str(err.value).startswith(
        f"numeric column 'charges' holds {shown} in 1 row(s) (first: line 5 of the CSV); numbers must be finite"
    )
    assert "replace them in the CSV or in preprocess()" in str(err.value)


def test_an_infinite_regression_target_is_one_line_naming_the_label(tmp_path):
    frame = churn_like().astype({"charges": object})
    frame.loc[0, "charges"] = "inf"
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"^train.labels_column: the label 'charges' holds inf in 1 row\(s\) \(first: line 2 of the CSV\)"):
        load_dataset(cfg(path, labels_column="charges", task="regression"))


@pytest.mark.parametrize("duplicate", ["tenure", "churn"])
def test_duplicate_column_names_are_named_not_renamed(tmp_path, duplicate):
    frame = churn_like()
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False, header=["charges", "tenure", "city", "churn"])
    text = path.read_text().splitlines()
    text[0] = text[0].replace("city", f" {duplicate}")  # a space-padded copy is the same name once stripped
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, labels_column="churn"))
    assert str(err.value) == (
        f"train.data_path: column {duplicate!r} appears 2 times in the header of {str(path)!r}; "
        "rename or remove the copies so that each column has its own name"
    )


@pytest.mark.parametrize("declared", [{}, {"categorical": ["notes"]}, {"numeric": ["notes"]}])
def test_a_column_with_no_values_is_one_line_not_an_empty_category_list(tmp_path, declared):
    frame = churn_like().assign(notes="n/a")
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, labels_column="churn", **declared))
    assert str(err.value) == (
        "column 'notes' has no values (every row is missing), so nothing can be learnt from it; add it to train.to_drop"
    )
    dataset = load_dataset(cfg(path, labels_column="churn", to_drop=["notes"]))
    assert "notes" not in dataset.X.columns


def test_a_header_read_as_one_column_points_at_the_separator(tmp_path):
    path = tmp_path / "d.csv"
    churn_like().to_csv(path, index=False, sep=" ")
    with pytest.raises(DataError, match="the header was read as one column: set train.csv.separator"):
        load_dataset(cfg(path, labels_column="churn"))


def test_numbers_the_reader_kept_as_text_are_named_not_made_categories(tmp_path):
    path = tmp_path / "d.csv"
    churn_like().to_csv(path, index=False)  # decimal points, read with a decimal comma configured
    with pytest.raises(DataError) as err:
        load_dataset(cfg(path, labels_column="churn", csv={"decimal": ","}))
    assert str(err.value).startswith("column 'charges' holds numbers stored as text (")
    assert "list it in train.numeric to read them as numbers (and check train.csv.decimal, now ',')" in str(err.value)
    declared = load_dataset(cfg(path, labels_column="churn", csv={"decimal": ","}, numeric=["charges"]))
    assert declared.X["charges"].equals(churn_like()["charges"])


def test_a_separator_at_the_end_of_each_line_is_named_as_such(tmp_path):
    path = tmp_path / "d.csv"
    churn_like().to_csv(path, index=False)
    path.write_text("".join(line.rstrip("\n") + ",\n" for line in path.read_text().splitlines(keepends=True)))
    with pytest.raises(DataError, match=r"column 'Unnamed: 4' has no values \(every row is missing\) \(it has no name in the header: a separator at the end of each line\?\)"):
        load_dataset(cfg(path, labels_column="churn"))
