"""POST /predict?explain=true through a live uvicorn: for the MLP (binary), LightGBM (multiclass), XGBoost
(binary), CatBoost (regression), a logistic regression (binary) and a random forest (regression),
base + sum(contributions) == output on a few hundred rows, the output is the model's own raw score, a
constant column (which no model can use) gets exactly zero, and a one-hot feature is one entry. A model
with no explanation answers 422. In process: the explainer is built once per predictor, explaining
from the prediction's own input matrix gives the same answers, and a binary forest's or logistic regression's
explanation is in its positive class's units whichever of the two fitted classes that is."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from app_support import TOKEN, Store, server_env, start_server, train_version, write_config

FEATURES = ["dose", "weight", "ward", "shift", "constant"]
CASES = {
    "mlp": ("binary", {"framework": "pytorch", "epochs": 2, "patience": 0}),
    "lightgbm": ("multiclass", {"model": "lightgbm", "model_args": {"n_estimators": 20}}),
    "xgboost": ("binary", {"model": "xgboost", "model_args": {"n_estimators": 20}}),
    "catboost": ("regression", {"model": "catboost", "model_args": {"n_estimators": 20}}),
    "logistic_regression": ("binary", {"model": "logistic_regression"}),
    "random_forest": ("regression", {"model": "random_forest", "model_args": {"n_estimators": 5, "max_depth": 4}}),
    "knn": ("binary", {"model": "knn"}),
}


def frame(kind: str, rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    data = pd.DataFrame({
        "dose": rng.normal(size=rows), "weight": rng.normal(70, 12, size=rows),
        "ward": rng.choice(["cardio", "neuro", "ortho"], size=rows), "shift": rng.choice(["day", "night"], size=rows),
        "constant": np.full(rows, 2.5),
    })  # fmt: skip
    signal = 1.4 * data["dose"] + 2.0 * (data["ward"] == "cardio") - 0.8
    if kind == "regression":
        data["outcome"] = 10 * signal + rng.normal(size=rows)
    elif kind == "binary":
        data["outcome"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-signal)), "relapse", "recovered")
    else:
        data["outcome"] = np.select([signal < -0.5, signal < 1.0], ["low", "mid"], "high")
    return data


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("store"))
    root = tmp_path_factory.mktemp("explain")
    for name, (kind, train) in CASES.items():
        csv = root / f"{kind}.csv"
        frame(kind).to_csv(csv, index=False)
        task = "regression" if kind == "regression" else "classification"
        config = {"train": {"data_path": str(csv), "labels_column": "outcome", "task": task, "seed": 1, **train},
                  "mlflow": {"model_name": f"explained-{name}", "experiment_name": "explain"}}  # fmt: skip
        train_version(store, config, root / name)
    servers = []
    yield store, root, servers
    for server in servers:
        server.stop()


def serve(served, name: str) -> str:
    """One live server per model (their schemas differ, so /update-model would refuse the swap)."""
    store, root, servers = served
    config = write_config(root / f"{name}.json", f"explained-{name}")
    servers.append(start_server(root, server_env(store.uri, config, root / f"cache-{name}")))
    return servers[-1].url


def objects(explanation: dict) -> list[dict]:
    return [explanation] if "unit" in explanation else list(explanation.values())


@pytest.mark.slow  # a live uvicorn, five trained models
@pytest.mark.parametrize("name", ["mlp", "lightgbm", "xgboost", "catboost", "logistic_regression", "random_forest"])
def test_explanations_are_complete_and_ignore_what_the_model_cannot_use(served, name):
    url = serve(served, name)
    kind = CASES[name][0]
    rows = frame(kind).drop(columns="outcome").to_dict("records")
    answer = httpx.post(f"{url}/predict?explain=true", json=rows, headers={"TOKEN": TOKEN}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 300
    for prediction in predictions:
        explained = objects(prediction["explanation"])
        assert len(explained) == (3 if kind == "multiclass" else 1)
        for item in explained:
            assert set(item["contributions"]) == set(FEATURES)  # the one-hot's columns summed to "ward", "shift"
            total = item["base"] + sum(item["contributions"].values())
            assert abs(total - item["output"]) <= 1e-6 * max(1.0, abs(item["output"]))
            assert item["contributions"]["constant"] == 0.0
        if kind == "regression":
            assert explained[0]["unit"] == "prediction"
            assert abs(explained[0]["output"] - prediction["prediction"]) <= 1e-4 * max(1.0, abs(prediction["prediction"]))
        elif kind == "binary":
            unit = explained[0]["unit"]
            positive = unit[unit.index("(") + 1 : -1]
            p = prediction["probabilities"][positive]
            assert unit.startswith("logit(") and abs(explained[0]["output"] - np.log(p / (1 - p))) < 1e-4
        else:
            scores = np.array([item["output"] for item in explained])
            softmax = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
            classes = [item["unit"][6:-1] for item in explained]
            assert np.allclose(softmax, [prediction["probabilities"][c] for c in classes], atol=1e-6)
    single = httpx.post(f"{url}/predict?explain=true", json=rows[0], headers={"TOKEN": TOKEN}, timeout=30).json()
    assert "explanation" in single and "explanation" not in httpx.post(f"{url}/predict", json=rows[0], headers={"TOKEN": TOKEN}).json()


@pytest.mark.slow
def test_a_model_without_explanations_answers_422(served):
    url = serve(served, "knn")
    row = frame("binary").drop(columns="outcome").iloc[0].to_dict()
    answer = httpx.post(f"{url}/predict?explain=true", json=row, headers={"TOKEN": TOKEN}, timeout=30)
    assert answer.status_code == 422 and "KNeighborsClassifier" in answer.json()["detail"]
    assert httpx.post(f"{url}/predict", json=row, headers={"TOKEN": TOKEN}).status_code == 200


@pytest.mark.slow
def test_each_run_logs_its_global_explanation(served):
    store, _, _ = served
    tables = sorted(store.path.rglob("plots/global_explanation.csv"))
    assert len(tables) == 6 and len(list(store.path.rglob("plots/global_explanation.png"))) == 6  # not for k-NN
    for table in tables:
        lines = table.read_text().splitlines()
        assert lines[0] == "feature,mean_abs_contribution" and {line.split(",")[0] for line in lines[1:]} == set(FEATURES)
        assert float(dict(line.split(",") for line in lines[1:])["constant"]) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "lightgbm", "xgboost", "catboost", "random_forest"])
def test_the_explainer_is_built_once_and_explains_the_predictions_own_input(served, name):
    from app.predict.explain import explained_answers
    from app.store.loading import load_from_registry

    store, _, _ = served
    predictor = load_from_registry(store.uri, f"explained-{name}", 1).predictor
    rows = predictor.schema.rows(frame(CASES[name][0]).drop(columns="outcome").head(40).to_dict("records"))
    assert "explainer" not in vars(predictor)  # nothing is built until an explanation is asked for
    X, _ = predictor.model_input(rows)  # the reference: answers and explanations each from a matrix of their own
    once = [{**answer, "explanation": explanation} for answer, explanation in zip(predictor.answers(rows), predictor.explainer(X))]
    assert predictor.explainer is predictor.explainer
    assert explained_answers(predictor, rows) == once
    if name in ("lightgbm", "xgboost", "catboost"):
        # Served by the library's own booster on the compiled matrix; explained by TreeSHAP on that same matrix,
        # exactly as from the pipeline's fitted estimator on the pipeline's own transform.
        from tand.models.attribution import attribute

        assert predictor.inference == f"numpy-preprocessing+{name}"
        X, native = predictor.model_input(rows)
        pipeline = _pipeline(store, name)
        frame_X = pipeline[0].transform(pd.DataFrame(rows, columns=predictor.schema.names))
        assert np.array_equal(X, frame_X, equal_nan=True)
        for mine, theirs in zip(attribute(native, X), attribute(pipeline[-1], frame_X)):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)


def _pipeline(store, name: str):
    import mlflow.sklearn

    client = store.client()
    return mlflow.sklearn.load_model(client.get_model_version_download_uri(f"explained-{name}", "1"))


@pytest.mark.parametrize("positive", ["yes", "no"])  # fitted (sorted) order: no, yes: the positive class second, then first
@pytest.mark.parametrize("model", ["random_forest", "logistic_regression"])
def test_a_binary_explanation_is_in_the_positive_class_units_whichever_class_that_is(model, positive):
    """In process: a forest's two probability outputs and a logistic regression's one logit, each mapped to the
    configured positive class (the forest: its probability; the logistic regression: its log-odds, negated when
    the positive class is sklearn's first)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from app.predict.explain import explained_answers
    from app.store.loading import build_predictor
    from tand.schema import Feature, FeatureSchema
    from tand.training.pipeline import build_preprocessor

    rng = np.random.default_rng(2)
    train = pd.DataFrame({"dose": rng.normal(size=200), "ward": rng.choice(["a", "b", "c"], 200).astype(object)})
    labels = np.where(train["dose"] + (train["ward"] == "b") + rng.normal(size=200) * 0.5 > 0.5, "yes", "no")
    features = (Feature("dose", "numeric", "number"), Feature("ward", "categorical", "string", ("a", "b", "c")))
    schema = FeatureSchema(features, "classification", "t", ("yes", "no"), positive_class=positive)
    estimator = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0) if model == "random_forest" else LogisticRegression()
    pipeline = Pipeline([("preprocessor", build_preprocessor(schema)), ("model", estimator)]).fit(train, labels)
    predictor = build_predictor(pipeline, schema, train.iloc[0].to_dict())
    rows = schema.rows(train.head(30).to_dict("records"))
    for answer in explained_answers(predictor, rows):
        p, explanation = answer["probabilities"][positive], answer["explanation"]
        assert set(explanation["contributions"]) == {"dose", "ward"}
        assert abs(explanation["base"] + sum(explanation["contributions"].values()) - explanation["output"]) < 1e-9
        if model == "random_forest":
            assert explanation["unit"] == f"probability({positive})" and abs(explanation["output"] - p) < 1e-9
        else:
            assert explanation["unit"] == f"logit({positive})" and abs(explanation["output"] - np.log(p / (1 - p))) < 1e-6
