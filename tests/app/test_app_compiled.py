"""The compiled NumPy path answers exactly as the fitted pipeline does (no per-request DataFrame)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import example_frame
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from app.store.loading import build_predictor, load_from_registry
from app.predict.predictor import OutOfRange, Predictor
from tand.tracking.lookup import AliasTarget
from app.store.snapshots import Snapshot, SnapshotCache
from tand.compiled.model import NumpyMLP, compile_preprocessor, from_arrays, to_arrays
from tand.models.mlp import MLPRegressor
from tand.training.pipeline import build_preprocessor
from tand.schema import Feature, FeatureSchema


def _pipeline_of(trained_model):
    import mlflow.sklearn
    from mlflow import MlflowClient

    uri = trained_model.project.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    location = client.get_model_version_download_uri(trained_model.model_name, str(trained_model.version))
    return mlflow.sklearn.load_model(location)


@pytest.fixture(scope="module")
def served(trained_model):
    loaded = load_from_registry(trained_model.project.tracking_uri, trained_model.model_name, trained_model.version)
    frame = example_frame()[loaded.schema.names]
    return loaded, _pipeline_of(trained_model), frame


def _proba_in_fitted_order(answers, classes) -> np.ndarray:
    return np.array([[a["probabilities"][c] for c in classes] for a in answers], dtype=np.float32)


def test_the_mlp_is_served_by_numpy_alone_and_matches_the_pipeline(served):
    loaded, pipeline, frame = served
    assert loaded.predictor.inference == "numpy" and loaded.predictor.batch_invariant
    records = frame.to_dict("records")
    compiled_X = loaded.predictor.snapshot_parts[0].transform(records)
    assert np.array_equal(compiled_X, pipeline[0].transform(frame))
    rows = loaded.schema.rows(records)
    assert np.array_equal(loaded.predictor.snapshot_parts[0].bind(loaded.schema.names)(rows), compiled_X)
    answers = loaded.predictor.answers(rows)
    assert [a["prediction"] for a in answers] == pipeline.predict(frame).tolist()
    # The preprocessing is bitwise equal (above); the network's float32 products are NumPy's BLAS against
    # PyTorch's kernels, which on some CPUs round the last bit differently: equal to a few float32 ulps.
    np.testing.assert_allclose(_proba_in_fitted_order(answers, pipeline.classes_), pipeline.predict_proba(frame), rtol=1e-6, atol=1e-7)
    # One row at a time too (the common request), against the pipeline on the same single row.
    for i in (0, 7, 300):
        (one,) = loaded.predictor.answers([rows[i]])
        np.testing.assert_allclose(
            _proba_in_fitted_order([one], pipeline.classes_), pipeline.predict_proba(frame.iloc[[i]]), rtol=1e-6, atol=1e-7
        )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warning: the overflow is the point
def test_values_the_model_cannot_compute_with_are_named_not_answered_with_nan(served):
    loaded, _, frame = served
    records = frame.head(3).to_dict("records")
    records[1] = {**records[1], "mean_area": 1e300}  # past the request bounds: overflows float32 once scaled
    with pytest.raises(OutOfRange) as caught:
        loaded.predictor.answers(loaded.schema.rows(records))
    assert caught.value.problems == [(1, None)]


def test_probabilities_are_keyed_by_the_configured_labels_in_configured_order(served, trained_model):
    loaded, _, frame = served
    (answer,) = loaded.predictor.answers(loaded.schema.rows(frame.head(1).to_dict("records")))
    assert list(answer["probabilities"]) == trained_model.config["train"]["labels"]
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_a_snapshot_round_trip_predicts_the_same(served, tmp_path):
    loaded, _, frame = served
    rows = loaded.schema.rows(frame.to_dict("records"))
    preprocessor, mlp = loaded.predictor.snapshot_parts
    again = Predictor(loaded.schema, *from_arrays(*to_arrays(preprocessor, mlp)))
    assert again.answers(rows) == loaded.predictor.answers(rows)
    cache = SnapshotCache(tmp_path, "m")
    target = AliasTarget(3, "abc", "models:/m-1")
    cache.write(target, Snapshot(loaded.schema, loaded.metrics, loaded.example, preprocessor, mlp))
    restored = cache.read(target)
    assert restored.schema == loaded.schema and restored.example == loaded.example
    assert Predictor(restored.schema, restored.preprocessor, restored.mlp).answers(rows) == loaded.predictor.answers(rows)
    assert cache.read(AliasTarget(3, "abc", "models:/m-2")) is None  # the same number for another model: not this file
    cache.path(target).write_bytes(b"not a zip file")
    assert cache.read(target) is None  # unreadable: ignored, the registry path loads instead


MIXED = FeatureSchema(
    features=(
        Feature("size", "numeric", "number"),
        Feature("count", "numeric", "integer"),
        Feature("colour", "categorical", "string", ("blue", "green", "red")),
        Feature("rooms", "categorical", "integer", (1, 2, 3)),
    ),
    task="classification",
    label="kind",
    classes=("yes", "no"),  # configured order differs from scikit-learn's sorted ("no", "yes")
)


def _mixed_frame(n: int, seed: int, missing: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(5, 2, n),
            "count": rng.integers(0, 100, n).astype(float),
            "colour": rng.choice(["blue", "green", "red"], n).astype(object),
            "rooms": rng.integers(1, 4, n),
        }
    )
    if missing:
        frame.loc[::7, "size"] = np.nan
        frame.loc[::11, "colour"] = np.nan
    return frame


def test_mixed_numeric_and_categorical_features_compile_and_match(tmp_path):
    train = _mixed_frame(200, 0, missing=True)
    labels = np.where(train["size"].fillna(5) + (train["colour"] == "red") > 5.5, "yes", "no")
    pipeline = Pipeline([("preprocessor", build_preprocessor(MIXED)), ("model", LogisticRegression())]).fit(train, labels)
    test = _mixed_frame(50, 1, missing=False)
    rows = test.to_dict("records")
    rows[0]["colour"] = "purple"  # unknown to the encoder: all zeros, as handle_unknown="ignore" does
    test = pd.DataFrame(rows)
    predictor = build_predictor(pipeline, MIXED, rows[1])
    assert predictor.inference == "numpy-preprocessing+estimator"
    assert not predictor.batch_invariant, "a BLAS product's last bits depend on the batch: never coalesced"
    assert np.array_equal(compile_preprocessor(pipeline[0]).transform(rows), pipeline[0].transform(test))
    answers = predictor.answers(MIXED.rows(rows))
    assert [a["prediction"] for a in answers] == pipeline.predict(test).tolist()
    assert np.array_equal(
        np.array([[a["probabilities"][c] for c in pipeline.classes_] for a in answers]), pipeline.predict_proba(test)
    )
    assert list(answers[0]["probabilities"]) == ["yes", "no"]
    # Missing numbers are imputed with the fitted medians, as SimpleImputer does.
    with_missing = [dict(row, size=None) for row in rows[1:4]]
    assert np.array_equal(
        compile_preprocessor(pipeline[0]).transform(with_missing), pipeline[0].transform(pd.DataFrame(with_missing))
    )


def test_a_preprocessor_it_does_not_know_falls_back_to_the_dataframe_path():
    train = _mixed_frame(100, 2, missing=False)[["size", "count"]]
    labels = np.where(train["size"] > 5, "yes", "no")
    schema = FeatureSchema(MIXED.features[:2], "classification", "kind", ("yes", "no"))
    preprocessor = ColumnTransformer([("minmax", MinMaxScaler(), ["size", "count"])])
    pipeline = Pipeline([("preprocessor", preprocessor), ("model", LogisticRegression())]).fit(train, labels)
    assert compile_preprocessor(pipeline[0]) is None
    predictor = build_predictor(pipeline, schema, train.iloc[0].to_dict())
    assert predictor.inference == "dataframe-pipeline"
    answers = predictor.answers(schema.rows(train.to_dict("records")))
    assert [a["prediction"] for a in answers] == pipeline.predict(train).tolist()


def test_the_mlp_regressor_forward_pass_matches_bitwise():
    rng = np.random.default_rng(3)
    schema = FeatureSchema(MIXED.features, "regression", "price")
    frame = _mixed_frame(40, 4, missing=False)
    preprocessor = build_preprocessor(schema).fit(frame)
    width = preprocessor.transform(frame).shape[1]
    # Weights set by hand: the forward pass is what is under test, and it needs no PyTorch.
    mlp = MLPRegressor(hidden_sizes=(8,))
    mlp.weights_ = [rng.normal(size=(width, 8)).astype(np.float32), rng.normal(size=(8, 1)).astype(np.float32)]
    mlp.biases_ = [rng.normal(size=8).astype(np.float32), rng.normal(size=1).astype(np.float32)]
    mlp.y_mean_, mlp.y_std_, mlp.n_features_in_ = 150.0, 40.0, width
    pipeline = Pipeline([("preprocessor", preprocessor), ("model", mlp)])
    predictor = build_predictor(pipeline, schema, frame.iloc[0].to_dict())
    assert predictor.inference == "numpy" and predictor.class_names is None
    answers = predictor.answers(schema.rows(frame.to_dict("records")))
    assert [a["prediction"] for a in answers] == pipeline.predict(frame).tolist()
    assert set(answers[0]) == {"prediction"}


def test_a_row_gets_the_same_answer_alone_and_in_any_batch(served):
    # BLAS orders a dot product's additions by the number of rows; the forward pass multiplies row by
    # row, so the API's coalesced calls (app/coalesce.py) cannot change a request's answer. The session's
    # tiny network (16 wide) hides the effect: the default width (256) shows it.
    loaded, _, frame = served
    preprocessor, tiny = loaded.predictor.snapshot_parts
    rng = np.random.default_rng(0)
    width = tiny.weights[0].shape[0]
    mlp = NumpyMLP(
        (rng.normal(size=(width, 256)).astype(np.float32), rng.normal(size=(256, 2)).astype(np.float32)),
        (rng.normal(size=256).astype(np.float32), rng.normal(size=2).astype(np.float32)),
        classes=tiny.classes,
    )
    predictor = Predictor(loaded.schema, preprocessor, mlp)
    rows = loaded.schema.rows(frame.to_dict("records"))
    whole = predictor.answers(rows)
    for size in (1, 2, 3, 5, 17, 64, 129):
        start = int(rng.integers(0, len(rows) - size))
        assert predictor.answers(rows[start : start + size]) == whole[start : start + size], size


# -- the boosting models: numbers passed through, categories as codes, the library's own predict --------------

BOOSTED = {"binary": ("yes", "no"), "multiclass": ("low", "mid", "high"), "regression": None}


def _boosted_frame(n: int, seed: int) -> pd.DataFrame:
    frame = _mixed_frame(n, seed, missing=True)
    frame.loc[::5, "count"] = np.nan
    frame.loc[::13, "rooms"] = np.nan  # an integer category missing: pandas holds the column as floats
    return frame


def _boosted_pipeline(library: str, kind: str):
    from tand.models.boosting import build_boosting
    from tand.training.pipeline import build_native_preprocessor, categorical_positions

    task = "regression" if kind == "regression" else "classification"
    schema = FeatureSchema(MIXED.features, task, "kind", BOOSTED[kind])
    train = _boosted_frame(300, 10)
    signal = train["size"].fillna(5) + 2 * (train["colour"] == "red") - train["count"].fillna(50) / 40
    if kind == "regression":
        target = 3 * signal.to_numpy()
    elif kind == "binary":
        target = np.where(signal > 5, "yes", "no")
    else:
        target = np.select([signal < 4, signal < 6], ["low", "mid"], "high")
    estimator = build_boosting(task, library, {"n_estimators": 25}, 0, categorical_positions(schema))
    pipeline = Pipeline([("preprocessor", build_native_preprocessor(schema)), ("model", estimator)]).fit(train, target)
    return schema, pipeline


def _boosted_requests(n: int) -> tuple[list[dict], pd.DataFrame]:
    """Rows as the API parses them (None for missing) and the frame the DataFrame path would build."""
    records = _boosted_frame(n, 11).astype(object).where(lambda f: f.notna(), None).to_dict("records")
    records[0]["colour"] = "purple"  # unknown to the encoder: NaN, as handle_unknown="use_encoded_value" does
    records[1]["rooms"] = 7  # an unknown integer category
    records[2] = {name: None for name in records[2]}  # every feature missing
    frame = pd.DataFrame(records)
    frame[["size", "count"]] = frame[["size", "count"]].astype(np.float64)
    return records, frame


@pytest.mark.parametrize("library", ["lightgbm", "xgboost", "catboost"])
@pytest.mark.parametrize("kind", list(BOOSTED))
def test_boosting_models_are_served_from_numpy_and_their_own_booster_as_the_pipeline_answers(library, kind, tmp_path):
    schema, pipeline = _boosted_pipeline(library, kind)
    records, frame = _boosted_requests(300)
    predictor = build_predictor(pipeline, schema, records[5])
    assert predictor.inference == f"numpy-preprocessing+{library}"
    # The preprocessing: bitwise the fitted ColumnTransformer's (NaN where it gives NaN), from dicts and from rows.
    compiled = compile_preprocessor(pipeline[0])
    expected_X = pipeline[0].transform(frame)
    assert np.array_equal(compiled.transform(records), expected_X, equal_nan=True)
    rows = schema.rows(records)
    assert np.array_equal(compiled.bind(schema.names)(rows), expected_X, equal_nan=True)
    assert np.isnan(expected_X[0, 2]) and np.isnan(expected_X[1, 3]) and np.isnan(expected_X[2]).all()
    # The predictions: the pipeline's, on the whole batch (the library's threads) and one row at a time (one thread).
    for batch in (rows, *([row] for row in rows[:5])):
        answers = predictor.answers(batch)
        reference = frame.iloc[[rows.index(r) for r in batch]] if len(batch) == 1 else frame
        if kind == "regression":
            np.testing.assert_allclose([a["prediction"] for a in answers], pipeline.predict(reference), rtol=0, atol=1e-9)
            continue
        assert [a["prediction"] for a in answers] == pipeline.predict(reference).tolist()
        got = np.array([[a["probabilities"][c] for c in pipeline.classes_] for a in answers])
        np.testing.assert_allclose(got, pipeline.predict_proba(reference), rtol=0, atol=1e-9)
    # The compiled file's form (the library's own model bytes, no pickle) answers the same.
    again = Predictor(schema, *from_arrays(*to_arrays(*predictor.snapshot_parts)))
    assert again.answers(rows) == predictor.answers(rows)
    cache, target = SnapshotCache(tmp_path, "m"), AliasTarget(1, "run", "models:/m-1")
    cache.write(target, Snapshot(schema, {}, records[5], *predictor.snapshot_parts))
    restored = cache.read(target)
    assert Predictor(restored.schema, restored.preprocessor, restored.mlp).answers(rows) == predictor.answers(rows)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost", "catboost"])
def test_boosting_explanations_from_the_native_booster_match_the_estimators(library):
    from tand.models.attribution import attribute

    schema, pipeline = _boosted_pipeline(library, "multiclass")
    records, _ = _boosted_requests(80)
    predictor = build_predictor(pipeline, schema, records[5])
    X, native = predictor.model_input(schema.rows(records))
    estimator = pipeline[-1]
    for rows in (slice(0, 1), slice(0, 80)):  # one thread, then the library's threads
        for mine, theirs in zip(attribute(native, X[rows]), attribute(estimator, X[rows])):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)
        # Both go through NativeBooster.contributions: the reference is the wrapper's own raw margin, which the
        # base and the contributions sum to (the same iterations as the predictions).
        base, contributions = attribute(native, X[rows])
        data = estimator._data(X[rows])
        margin = {"lightgbm": lambda: estimator.model_.predict(data, raw_score=True),
                  "xgboost": lambda: estimator.model_.predict(data, output_margin=True),
                  "catboost": lambda: estimator.model_.predict(data, prediction_type="RawFormulaVal")}[library]()  # fmt: skip
        np.testing.assert_allclose(base + contributions.sum(axis=1), margin, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # trains two boosting versions into a real MLflow store
@pytest.mark.parametrize("library", ["lightgbm", "catboost"])
def test_a_boosting_version_is_logged_with_its_compiled_file_and_served_from_it(library, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app_support import Store, auth, mixed_dataset, settings, train_version
    from tand.tracking.compiled_files import read_compiled
    from tand.tracking.lookup import lookup_alias

    store, csv = Store(tmp_path / "store"), mixed_dataset(tmp_path / "mixed.csv")
    config = {"train": {"data_path": str(csv), "labels_column": "diagnosis", "task": "classification", "seed": 0,
                        "model": library, "model_args": {"n_estimators": 20}},
              "mlflow": {"model_name": f"boosted-{library}", "experiment_name": "boosted"}}  # fmt: skip
    version = train_version(store, config, tmp_path / "work")
    target = lookup_alias(store.uri, f"boosted-{library}", "production")
    meta, preprocessor, booster = read_compiled(store.uri, f"boosted-{library}", target)
    assert meta["format"] == 2 and booster.library == library
    pickled = load_from_registry(store.uri, f"boosted-{library}", version).predictor
    pipeline = _pipeline_of_version(store.uri, f"boosted-{library}", version)
    frame = pd.read_csv(csv).drop(columns="diagnosis").head(40)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    records[1] = {**records[1], "clinic": None, "grade": None}
    rows = pickled.schema.rows(records)
    # A category the API's request schema would refuse, in process: the pipeline's NaN code, as served.
    unknown = pickled.schema.rows([{**records[0], "clinic": "nowhere"}])
    (served_unknown,) = pickled.answers(unknown)
    (pipeline_unknown,) = Predictor(pickled.schema, pipeline=pipeline).answers(unknown)
    assert served_unknown["prediction"] == pipeline_unknown["prediction"]
    app = create_app(settings(store.uri, f"boosted-{library}", None))
    with TestClient(app) as client:
        info = client.get("/model", headers=auth()).json()
        answer = client.post("/predict", json=records, headers=auth())
        explained = client.post("/predict?explain=true", json=records[:2], headers=auth())
    assert info["loaded_from"] == "registry" and info["inference"] == f"numpy-preprocessing+{library}"
    assert pickled.inference == f"numpy-preprocessing+{library}"  # through MLflow: compiled at load
    expected = Predictor(pickled.schema, pipeline=pipeline).answers(rows)
    assert answer.status_code == 200, answer.text
    got = answer.json()["predictions"]
    assert [a["prediction"] for a in got] == [a["prediction"] for a in expected]
    for mine, theirs in zip(got, expected):
        assert mine["probabilities"].keys() == theirs["probabilities"].keys()
        assert all(abs(mine["probabilities"][c] - theirs["probabilities"][c]) <= 1e-9 for c in mine["probabilities"])
    assert explained.status_code == 200 and set(explained.json()["predictions"][0]["explanation"]["contributions"]) == set(frame)


def _pipeline_of_version(uri: str, name: str, version: int):
    import mlflow.sklearn
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return mlflow.sklearn.load_model(client.get_model_version_download_uri(name, str(version)))


def test_a_boosting_model_whose_predictions_the_native_path_does_not_reproduce_keeps_its_estimator():
    from tand.models.boosting import build_boosting
    from tand.training.pipeline import build_native_preprocessor, categorical_positions

    schema = FeatureSchema(MIXED.features, "classification", "kind", BOOSTED["multiclass"])
    train = _boosted_frame(200, 12)
    target = np.select([train["size"].fillna(5) < 4, train["size"].fillna(5) < 6], ["low", "mid"], "high")
    # multi:softmax: XGBoost's scikit-learn wrapper computes the probabilities itself (softmax of the margins).
    estimator = build_boosting("classification", "xgboost", {"n_estimators": 10, "objective": "multi:softmax"}, 0,
                               categorical_positions(schema))  # fmt: skip
    pipeline = Pipeline([("preprocessor", build_native_preprocessor(schema)), ("model", estimator)]).fit(train, target)
    records, frame = _boosted_requests(50)
    predictor = build_predictor(pipeline, schema, records[5])
    assert predictor.inference == "numpy-preprocessing+estimator" and predictor.snapshot_parts is None
    answers = predictor.answers(schema.rows(records))
    assert [a["prediction"] for a in answers] == pipeline.predict(frame).tolist()
    got = np.array([[a["probabilities"][c] for c in pipeline.classes_] for a in answers])
    np.testing.assert_allclose(got, pipeline.predict_proba(frame), rtol=0, atol=1e-12)
