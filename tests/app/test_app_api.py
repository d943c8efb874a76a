"""The API's logic through TestClient, with real models in real MLflow stores."""

from __future__ import annotations

import json
import math
import threading

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app_support import TOKEN, auth, copy_store, mixed_dataset, settings, train_version
from conftest import tiny_config


@pytest.fixture(scope="module")
def mixed(trained_model, tmp_path_factory):
    """A copy of the session store plus a version with other inputs (two categorical columns),
    registered under the same name with the alias "mixed"; production stays on version 1."""
    root = tmp_path_factory.mktemp("mixed")
    store = copy_store(trained_model.project.path / "database.db", root / "store")
    data = mixed_dataset(root / "mixed.csv")
    config = tiny_config(data_path=str(data), framework="sklearn", model="logistic_regression")
    config["mlflow"]["model_name"] = trained_model.model_name
    version = train_version(store, config, root / "work")
    store.set_alias(trained_model.model_name, "mixed", version)
    return store, version


@pytest.fixture
def client(trained_model, tmp_path):
    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache"))
    with TestClient(app) as test_client:
        yield test_client


def test_health_root_and_model_info(client, trained_model):
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").json() == {"status": "ready", "model_version": trained_model.version}
    assert client.get("/").json() == {
        "status": "ok",
        "model": {"name": trained_model.model_name, "version": trained_model.version, "alias": "production"},
    }
    info = client.get("/model", headers=auth()).json()
    assert info["run_id"] and info["inference"] == "numpy" and info["loaded_from"] == "registry"
    assert "test_accuracy" in info["metrics"]
    assert [f["name"] for f in info["feature_schema"]["features"]] == list(trained_model.request)


def test_predict_one_row_and_a_batch(client, trained_model):
    labels = trained_model.config["train"]["labels"]
    answer = client.post("/predict", json=trained_model.request, headers=auth())
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == str(trained_model.version)
    body = answer.json()
    assert set(body) == {"prediction", "probabilities", "model_version"} and body["prediction"] in labels
    assert list(body["probabilities"]) == labels and math.isclose(sum(body["probabilities"].values()), 1, abs_tol=1e-6)
    batch = client.post("/predict", json=[trained_model.request] * 3, headers={"Authorization": f"Bearer {TOKEN}"})
    assert batch.status_code == 200
    assert batch.json()["model_version"] == trained_model.version and len(batch.json()["predictions"]) == 3
    assert batch.json()["predictions"][0]["prediction"] == body["prediction"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"TOKEN": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
     {"TOKEN": "tökén-ü".encode()}, {"Authorization": "Bearer ключ".encode()}],
    ids=["missing", "wrong", "wrong-bearer", "not-bearer", "non-ascii", "non-ascii-bearer"],
)
def test_a_missing_or_wrong_token_is_401_json_and_never_echoed(client, trained_model, headers):
    for method, path, kwargs in (("post", "/predict", {"json": trained_model.request}), ("post", "/update-model", {}), ("get", "/model", {})):
        answer = getattr(client, method)(path, headers=headers, **kwargs)
        assert answer.status_code == 401 and "TOKEN header" in answer.json()["detail"]
        assert TOKEN not in answer.text and "wrong" not in answer.text


def _bad_bodies(request: dict) -> list:
    first = next(iter(request))
    raw = json.dumps(request)
    return [
        ("malformed", raw[:-5].encode(), 422, [], "Invalid JSON"),
        ("wrong-type", {**request, first: "big"}, 422, [first], "valid number"),
        ("nan", raw.replace(json.dumps(request[first]), "NaN", 1).encode(), 422, [], ""),
        ("infinity", raw.replace(json.dumps(request[first]), "Infinity", 1).encode(), 422, [], ""),
        ("extra", {**request, "surprise": 1}, 422, ["surprise"], "Extra inputs are not permitted"),
        ("empty-array", [], 422, [], "at least 1 item"),
        ("too-many-rows", [request] * 6, 422, [], "at most 5 items"),
        ("not-an-object", [1, 2], 422, [0], "Input should be an object"),
        ("huge", {**request, first: 1e300}, 422, [first], "less than or equal to 1000000000000000"),
        ("huge-literal", raw.replace(json.dumps(request[first]), "1" + "0" * 400, 1).encode(), 422, [first], "finite number"),
    ]


def test_every_kind_of_bad_input_gets_a_4xx_naming_the_field(trained_model, tmp_path):
    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path, max_batch_rows=5))
    with TestClient(app) as client:
        for name, body, status, loc, message in _bad_bodies(trained_model.request):
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            answer = client.post("/predict", headers=auth(), **kwargs)
            assert answer.status_code == status, name
            error = answer.json()["detail"][0]
            assert error["loc"][: 1 + len(loc)] == ["body", *loc], name
            assert message in error["msg"], (name, error)


def _pipeline_answer(name: str, alias: str, store_uri: str, row: dict, monkeypatch) -> dict:
    """The registered pipeline's own probabilities for `row`, missing values as NaN (as in a CSV)."""
    import numpy as np
    import pandas as pd
    from conftest import load_registered

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    registered = load_registered(name, alias=alias)
    frame = pd.DataFrame([{k: (np.nan if v is None else v) for k, v in row.items()}], columns=registered.schema.names)
    return dict(zip(map(str, registered.pipeline.classes_), registered.pipeline.predict_proba(frame)[0]))


def test_null_and_omitted_values_get_the_pipelines_answer_for_a_missing_value(mixed, trained_model, tmp_path, monkeypatch):
    """Every feature goes through the pipeline's imputer: null, or leaving it out, is a missing value, on
    the compiled path too (numbers: the median; categories: the most frequent), bitwise as the pipeline."""
    store, version = mixed
    app = create_app(settings(store.uri, trained_model.model_name, tmp_path, model_alias="mixed"))
    with TestClient(app) as client:
        info = client.get("/model", headers=auth()).json()
        assert info["inference"] == "numpy-preprocessing+estimator"
        full = {**trained_model.request, "clinic": "north", "grade": 2}
        row = {**full, "clinic": None, "mean_radius": None}
        del row["grade"]
        answer = client.post("/predict", json=row, headers=auth())
        assert answer.status_code == 200, answer.text
        expected = _pipeline_answer(trained_model.model_name, "mixed", store.uri, {**row, "grade": None}, monkeypatch)
        assert answer.json()["probabilities"] == expected
        # pandas' to_dict writes an integer column with gaps as floats: 2.0 is the integer 2
        as_float = client.post("/predict", json={**full, "grade": 2.0}, headers=auth()).json()
        assert as_float == client.post("/predict", json=full, headers=auth()).json()


def test_bodies_over_the_size_limit_are_413_with_or_without_content_length(trained_model, tmp_path):
    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path, max_body_bytes=4096))
    body = json.dumps([trained_model.request] * 8).encode()
    assert len(body) > 4096
    with TestClient(app) as client:
        sized = client.post("/predict", content=body, headers=auth())
        chunked = client.post("/predict", content=iter([body[:3000], body[3000:]]), headers=auth())
        small = client.post("/predict", content=iter([json.dumps(trained_model.request).encode()]), headers=auth())
    for answer in (sized, chunked):
        assert answer.status_code == 413 and "limit is 4096 bytes" in answer.json()["detail"]
    assert small.status_code == 200


def test_an_unknown_category_is_named_with_the_known_ones(mixed, trained_model, tmp_path):
    store, version = mixed
    app = create_app(settings(store.uri, trained_model.model_name, tmp_path, model_alias="mixed"))
    with TestClient(app) as client:
        info = client.get("/model", headers=auth()).json()
        assert info["version"] == version and info["inference"] == "numpy-preprocessing+estimator"
        assert info["loaded_from"] == "mlflow"  # training logs a compiled file only for models that run on NumPy alone
        example = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
        assert client.post("/predict", json=example, headers=auth()).status_code == 200
        answer = client.post("/predict", json={**example, "clinic": "west"}, headers=auth())
        assert answer.status_code == 422
        assert answer.json()["detail"] == [
            {"loc": ["body", "clinic"], "msg": "Input should be 'east', 'north' or 'south'", "type": "literal_error"}
        ]
        assert client.post("/predict", json={**example, "grade": 9}, headers=auth()).json()["detail"][0]["msg"] == "Input should be 1 or 2 or 3"


def test_without_a_model_it_is_live_but_not_ready(trained_model, tmp_path):
    app = create_app(settings(trained_model.project.tracking_uri, "no-such-model", tmp_path))
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        for answer in (client.get("/"), client.get("/health/ready"), client.post("/predict", json={}, headers=auth())):
            assert answer.status_code == 503 and "no alias 'production'" in answer.json()["detail"]
        assert client.post("/update-model", headers=auth()).status_code == 503


def test_a_restart_serves_from_the_snapshot_with_the_same_answers(trained_model, tmp_path):
    outcomes = []
    for _ in range(2):
        app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache"))
        with TestClient(app) as client:
            info = client.get("/model", headers=auth()).json()
            outcomes.append((info["loaded_from"], client.post("/predict", json=[trained_model.request] * 4, headers=auth()).json()))
    assert [source for source, _ in outcomes] == ["registry", "snapshot"]
    assert outcomes[0][1] == outcomes[1][1]
    assert outcomes[1][1]["model_version"] == trained_model.version


def test_the_openapi_document_carries_the_feature_schema_example_and_token_schemes(client, trained_model):
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["example"] == trained_model.request
    # The 200 example is the model's real answer to that example, with its version.
    answer = client.post("/predict", json=trained_model.request, headers=auth()).json()
    assert operation["responses"]["200"]["content"]["application/json"]["example"] == answer
    features = document["components"]["schemas"]["Features"]
    # Every feature is imputed by the pipeline: documented, optional and nullable.
    assert set(features["properties"]) == set(trained_model.request) and features["additionalProperties"] is False
    assert features.get("required", []) == []
    assert all({"type": "null"} in spec["anyOf"] for spec in features["properties"].values())
    assert operation["security"] == [{"TOKEN": []}, {"Bearer": []}]
    assert document["components"]["securitySchemes"]["TOKEN"]["name"] == "TOKEN"
    assert {"200", "401", "413", "422", "503"} <= set(operation["responses"])
    assert client.get("/docs").status_code == 200


def test_update_model_when_nothing_changed_keeps_the_version(client, trained_model):
    answer = client.post("/update-model", headers=auth())
    assert answer.json() == {"version": trained_model.version, "previous": trained_model.version}


def _predict_version(client, request) -> int:
    answer = client.post("/predict", json=request, headers=auth())
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]


def test_a_version_with_other_inputs_is_refused_and_the_old_one_keeps_serving(mixed, trained_model, tmp_path):
    store = copy_store(mixed[0].db, tmp_path / "store")
    app = create_app(settings(store.uri, trained_model.model_name, tmp_path / "cache"))
    with TestClient(app) as client:
        store.set_alias(trained_model.model_name, "production", mixed[1])
        for _ in range(2):  # the second time from memory: the refused version is not loaded again
            answer = client.post("/update-model", headers=auth())
            assert answer.status_code == 422
            assert f"version {mixed[1]} takes different inputs than version 1" in answer.json()["detail"]
            assert "adds clinic, grade" in answer.json()["detail"]
        assert _predict_version(client, trained_model.request) == 1


def test_an_unreachable_registry_or_a_missing_alias_is_503_and_the_old_model_keeps_answering(trained_model, tmp_path):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    name = trained_model.model_name
    app = create_app(settings(store.uri, name, tmp_path / "cache"))
    with TestClient(app) as client:
        new = store.register_again(name, 1)
        store.set_alias(name, "production", new)
        store.db.rename(store.path / "moved.db")
        answer = client.post("/update-model", headers=auth())
        assert answer.status_code == 503 and "is unreachable" in answer.json()["detail"]
        assert client.get("/health/ready").status_code == 200 and _predict_version(client, trained_model.request) == 1
        (store.path / "moved.db").rename(store.db)
        store.client().delete_registered_model_alias(name, "production")
        answer = client.post("/update-model", headers=auth())
        assert answer.status_code == 503 and "has no alias 'production'" in answer.json()["detail"]
        assert _predict_version(client, trained_model.request) == 1
        store.set_alias(name, "production", new)
        assert client.post("/update-model", headers=auth()).json() == {"version": new, "previous": 1}
        assert _predict_version(client, trained_model.request) == new


def test_concurrent_update_calls_load_once(trained_model, tmp_path):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    name = trained_model.model_name
    app = create_app(settings(store.uri, name, tmp_path / "cache"))
    model_store = app.state.store
    loads, active, most = [], [0], [0]
    real_load = model_store.load

    def counting_load(target):  # a spy around the real loader: counts, and measures overlap
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            loads.append(target.version)
            return real_load(target)
        finally:
            active[0] -= 1

    with TestClient(app) as client:
        model_store.load = counting_load
        new = store.register_again(name, 1)
        store.set_alias(name, "production", new)
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(client.post("/update-model", headers=auth()).json())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert loads == [new] and most[0] == 1
    assert sorted(a["version"] for a in answers) == [new] * 4
    assert {a["previous"] for a in answers} == {1, new}  # one call swapped; the others found it done


def test_warm_writes_the_snapshot_that_a_start_reads(trained_model, tmp_path, monkeypatch, capsys):
    from app import warm

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model.project.tracking_uri)
    monkeypatch.setenv("MODEL_NAME", trained_model.model_name)
    monkeypatch.setenv("TAND_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("MODEL_CACHE_DIR", "")
    assert warm.main() == 1 and "MODEL_CACHE_DIR is empty" in capsys.readouterr().err
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    assert warm.main() == 0 and "snapshot in" in capsys.readouterr().out
    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache"))
    with TestClient(app) as client:
        assert client.get("/model", headers=auth()).json()["loaded_from"] == "snapshot"


def test_predict_through_the_documented_route_when_mounted(trained_model, tmp_path):
    """Mounted under a prefix, /predict is matched by FastAPI's route, which answers through the same endpoint."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache"))
    outer = Starlette(routes=[Mount("/api", app=app)], lifespan=lambda _: app.router.lifespan_context(app))
    with TestClient(outer) as client:
        answer = client.post("/api/predict", json=trained_model.request, headers=auth())
        refused = client.post("/api/predict", json=trained_model.request)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == str(trained_model.version)
    assert answer.json()["prediction"] in trained_model.config["train"]["labels"]
    assert refused.status_code == 401


def test_the_start_up_heap_is_frozen_while_serving_and_given_back_after(trained_model, tmp_path):
    # Full collections over the imports' objects stalled every request in flight (bench/serve_bench.py).
    import gc

    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache"))
    with TestClient(app) as client:
        assert gc.get_freeze_count() > 10_000
        assert client.post("/predict", json=trained_model.request, headers=auth()).status_code == 200
    assert gc.get_freeze_count() == 0


def test_docs_load_nothing_from_another_host(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]|url:\s*['"]([^'"]+)['"]""", page.text)
    found = [a or b for a, b in urls]
    assert found and all(url.startswith("/") for url in found), found
    assert "http://" not in page.text.replace("http://127", "") and "https://" not in page.text
    for url in found:
        if url.startswith("/docs-assets/"):
            assert client.get(url).status_code == 200, url


def test_the_documented_answer_follows_a_reload_to_a_version_with_the_same_inputs(trained_model, tmp_path):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    app = create_app(settings(store.uri, trained_model.model_name, tmp_path / "cache"))

    def documented_version(client) -> int:
        operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
        return operation["responses"]["200"]["content"]["application/json"]["example"]["model_version"]

    with TestClient(app) as client:
        assert documented_version(client) == trained_model.version
        again = store.register_again(trained_model.model_name, trained_model.version)
        store.set_alias(trained_model.model_name, "production", again)
        assert client.post("/update-model", headers=auth()).json()["version"] == again
        assert documented_version(client) == again
