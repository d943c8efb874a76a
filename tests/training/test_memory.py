"""The memory guard: a wide one-hot stops with one line before the fit; native and sparse layouts fit."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import INVOKE, make_project
from tand.config import parse_config
from tand.errors import DataError
from tand.schema import Feature, FeatureSchema
from tand.training import memory
from tand.training.pipeline import build_pipeline

CITIES = 50_000
ROWS = 60_000
PEAK_LIMIT_MB = 2048
# Runs a command and prints the peak resident memory (MB) of it and its descendants, which it waited for.
PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr); sys.exit(done.returncode)"
)


def _schema(cities: int) -> FeatureSchema:
    return FeatureSchema(
        features=(
            Feature("x", "numeric", "number"),
            Feature("city", "categorical", "string", tuple(f"c{i}" for i in range(cities))),
            Feature("kind", "categorical", "string", ("a", "b")),
        ),
        task="classification", label="y", classes=("no", "yes"),
    )


def _train(**keys):
    return parse_config({"train": {"labels_column": "y", **keys}}).train


def test_estimate_follows_the_layout_the_pipeline_builds():
    schema = _schema(CITIES)
    dense = memory.estimate(schema, _train(framework="pytorch"), 48_000)
    assert (dense.layout, dense.width, dense.widest, dense.widest_width) == ("dense", 1 + CITIES + 2, "city", CITIES)
    assert dense.bytes == 48_000 * (1 + CITIES + 2) * 8 * memory.PYTORCH_COPIES
    native = memory.estimate(schema, _train(model="hist_gradient_boosting"), 48_000)
    assert (native.layout, native.width, native.bytes) == ("native", 3, 48_000 * 3 * 8)
    sparse = memory.estimate(schema, _train(model="logistic_regression"), 48_000)
    assert sparse.layout == "sparse" and sparse.bytes == 48_000 * 3 * memory.SPARSE_BYTES_PER_VALUE
    grouped = memory.estimate(schema, _train(framework="pytorch", max_categories=20), 48_000)
    assert grouped.width == 1 + 20 + 2
    onehot = build_pipeline(schema, _train(model="logistic_regression"), progress=False)[0]
    assert onehot.sparse_threshold == 1.0  # wide: sparse; narrow stays dense (the API's compiled path reads it)
    assert build_pipeline(_schema(10), _train(model="logistic_regression"), progress=False)[0].sparse_threshold == 0.0


def test_past_the_limit_one_line_names_the_column_and_the_fixes():
    with pytest.raises(DataError) as caught:
        memory.check(_schema(CITIES), _train(framework="pytorch", memory_limit_gb=1), 48_000)
    line = str(caught.value)
    assert "\n" not in line and "column 'city'" in line and "50,000 columns" in line and "over the 1.0 GB limit" in line
    for fix in ("train.to_drop", "train.numeric", "train.max_categories", "hist_gradient_boosting"):
        assert fix in line
    assert memory.check(_schema(CITIES), _train(model="hist_gradient_boosting", memory_limit_gb=1), 48_000).layout == "native"


def test_available_memory_is_read_from_meminfo(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:   2048 kB\n")
    assert memory.available_bytes(tmp_path / "meminfo") == 2048 * 1024
    assert memory.limit_bytes(_train(memory_limit_gb=0.5)) == 0.5 * memory.GB


@pytest.fixture(scope="module")
def wide_project(tmp_path_factory):
    """60,000 rows whose 'city' column holds 50,000 distinct values."""
    project = make_project(tmp_path_factory.mktemp("wide"))
    rng = np.random.default_rng(0)
    city = np.concatenate([np.arange(CITIES), rng.integers(0, CITIES, ROWS - CITIES)])
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), "city": [f"c{i:05d}" for i in city], "kind": rng.choice(["a", "b"], ROWS)})
    frame["y"] = np.where(frame.x + (frame.kind == "a") + rng.normal(size=ROWS) > 0.5, "yes", "no")
    frame.to_csv(project.path / "data" / "wide.csv", index=False)
    return project


def _invoke_train(project, name: str, **train):
    config = {"train": {"data_path": "data/wide.csv", "labels_column": "y", **train}, "mlflow": {"model_name": name}}
    project.write_config(config, f"{name}.json")
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", PEAK, *INVOKE, "train", "--config", f"{name}.json"],
        cwd=project.path, env=project.env(), capture_output=True, text=True, timeout=600,
    )
    peak_mb = int(done.stderr.strip().splitlines()[-1])
    return done, "\n".join(done.stderr.strip().splitlines()[:-1]), peak_mb


@pytest.mark.slow  # invoke train as a subprocess on 60,000 rows
def test_fifty_thousand_categories_stop_with_one_line_not_the_oom_killer(wide_project):
    done, stderr, peak_mb = _invoke_train(wide_project, "wide-mlp", framework="pytorch", epochs=1)
    assert done.returncode == 1, stderr
    assert stderr.startswith("error: ") and len(stderr.splitlines()) == 1, stderr
    assert "column 'city'" in stderr and "train.max_categories" in stderr
    assert peak_mb < PEAK_LIMIT_MB
    assert wide_project.versions("wide-mlp") == []


@pytest.mark.slow
def test_fifty_thousand_categories_train_natively_under_two_gigabytes(wide_project):
    done, stderr, peak_mb = _invoke_train(wide_project, "wide-hgb", model="hist_gradient_boosting", model_args={"max_iter": 10})
    assert done.returncode == 0, stderr[-2000:]
    assert peak_mb < PEAK_LIMIT_MB, f"peak {peak_mb} MB"
    assert wide_project.versions("wide-hgb") == [1]
    schema = json.loads((wide_project.path / "request_model.json").read_text())
    assert set(schema) == {"x", "city", "kind"}


def test_a_wide_one_hot_is_sparse_fits_and_answers_through_the_api_predictor(tmp_path):
    """A 400-category column for a linear model: a sparse matrix (not 400 dense columns); the API's predictor
    (the DataFrame path: the compiled form reads dense one-hots only) answers as the pipeline does."""
    from scipy import sparse

    from app.store.loading import build_predictor
    from tand.training.data import load_dataset, split
    from tand.training.request_example import example_request

    rng = np.random.default_rng(1)
    rows = 3000
    frame = pd.DataFrame({"x": rng.normal(size=rows), "shop": [f"s{i}" for i in rng.integers(0, 400, rows)]})
    frame["y"] = np.where(frame.x + rng.normal(size=rows) > 0, "yes", "no")
    frame.to_csv(tmp_path / "wide.csv", index=False)
    cfg = _train(data_path=str(tmp_path / "wide.csv"), model="logistic_regression")
    dataset = load_dataset(cfg)
    parts = split(dataset, 0.2, 0)
    pipeline = build_pipeline(dataset.schema, cfg, progress=False).fit(parts.X_train, parts.y_train)
    assert sparse.issparse(pipeline[0].transform(parts.X_test.head(5)))
    predictor = build_predictor(pipeline, dataset.schema, example_request(dataset))
    assert predictor.inference == "dataframe-pipeline"
    sample = parts.X_test.head(20)
    answers = predictor.answers(dataset.schema.rows(sample.to_dict("records")))
    expected = pipeline.predict_proba(sample)
    for answer, probabilities in zip(answers, expected):
        assert answer["probabilities"] == pytest.approx(dict(zip(pipeline.classes_, probabilities)), abs=1e-9)
