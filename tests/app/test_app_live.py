"""The API over real HTTP: uvicorn processes on 127.0.0.1, the seed's curl request, reloads under load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import httpx
import pytest

from app.settings import EXAMPLE_TOKEN
from app_support import model_cache  # noqa: F401 - a fixture
from app_support import REPO, copy_store, free_port, server_env, start_server, train_version, wait_until, write_config
from conftest import example_csv, tiny_config

pytestmark = pytest.mark.slow
HEADERS = {"TOKEN": EXAMPLE_TOKEN}


@pytest.fixture(scope="module")
def live(trained_model, tmp_path_factory, model_cache):
    """One uvicorn, started as `uvicorn --factory app.main:create_app`, with the example token and small limits."""
    root = tmp_path_factory.mktemp("live")
    config = write_config(root / "config.json", trained_model.model_name, max_body_bytes=65536, max_batch_rows=50)
    env = server_env(trained_model.project.tracking_uri, config, model_cache, API_TOKEN=EXAMPLE_TOKEN)
    server = start_server(root, env)
    yield server
    server.stop()


def test_the_example_token_is_warned_about_at_start_up(live):
    assert "API_TOKEN is the example value" in live.log()
    assert EXAMPLE_TOKEN not in live.log()


def test_the_seeds_curl_request_works(live, trained_model, tmp_path):
    body = tmp_path / "request_model.json"
    body.write_text(json.dumps(trained_model.request))
    if shutil.which("curl"):
        command = ["curl", "--silent", "--show-error", "--header", "Content-Type: application/json",
                   "--header", f"TOKEN: {EXAMPLE_TOKEN}", "--request", "POST", "--data", f"@{body}", f"{live.url}/predict"]
        answer = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)
    else:  # the same request shape without curl
        answer = httpx.post(f"{live.url}/predict", content=body.read_bytes(), headers={**HEADERS, "Content-Type": "application/json"}).json()
    assert answer["prediction"] in trained_model.config["train"]["labels"] and answer["model_version"] == trained_model.version


def test_null_and_an_omitted_field_get_the_pipelines_own_answer_for_a_missing_value(live, trained_model, monkeypatch):
    import numpy as np
    import pandas as pd

    from conftest import load_registered

    names = list(trained_model.request)
    nulled = {**trained_model.request, names[0]: None}
    omitted = {k: v for k, v in trained_model.request.items() if k != names[1]}
    answers = httpx.post(f"{live.url}/predict", json=[nulled, omitted], headers=HEADERS)
    assert answers.status_code == 200, answers.text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model.project.tracking_uri)
    pipeline = load_registered(trained_model.model_name, alias="production").pipeline
    frame = pd.DataFrame([{**nulled}, {**omitted, names[1]: np.nan}], columns=names).astype(float)
    expected = [dict(zip(map(str, pipeline.classes_), p)) for p in pipeline.predict_proba(frame)]
    got = [row["probabilities"] for row in answers.json()["predictions"]]
    assert all(abs(g[c] - e[c]) <= 1e-6 for g, e in zip(got, expected) for c in e)


def test_limits_and_errors_on_the_wire(live, trained_model):
    big = json.dumps([trained_model.request] * 120).encode()  # ~100 kB, over the 64 kB limit
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    chunked = httpx.post(f"{live.url}/predict", content=chunks, headers=HEADERS)
    sized = httpx.post(f"{live.url}/predict", content=big, headers=HEADERS)
    for answer in (chunked, sized):
        assert answer.status_code == 413 and "limit is 65536 bytes" in answer.json()["detail"]
    malformed = httpx.post(f"{live.url}/predict", content=b'{"mean_radius": ', headers=HEADERS)
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    too_many = httpx.post(f"{live.url}/predict", json=[trained_model.request] * 51, headers=HEADERS)
    assert too_many.status_code == 422 and "at most 50 items" in too_many.json()["detail"][0]["msg"]
    assert httpx.post(f"{live.url}/predict", json=trained_model.request).status_code == 401


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, tmp_path):
    """Every check (5xx, response schemas, status codes, auth enforced, schema-valid data accepted,
    invalid data refused...) over the examples, coverage and fuzzing phases; 30 examples per operation."""
    # The CLI, not @schema.parametrize: its lazy pytest loader does not run under pytest 9.
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{live.url}/openapi.json",
        "--header", f"TOKEN: {EXAMPLE_TOKEN}", "--checks", "all", "--max-examples", "30",
        "--request-timeout", "30", "--report-dir", str(tmp_path),
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-6000:]


def test_it_refuses_to_start_without_a_token(trained_model, tmp_path):
    config = write_config(tmp_path / "config.json", trained_model.model_name)
    env = server_env(trained_model.project.tracking_uri, config, tmp_path / "cache")
    env.pop("API_TOKEN")
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(free_port())]
    invoke = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "serve", "--port", str(free_port())]
    for command, extra in ((uvicorn, {}), (invoke, {"API_TOKEN": ""})):  # "" so app.env's example does not fill it
        result = subprocess.run(command, cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "error: API_TOKEN is not set or empty" in result.stderr and "Traceback" not in result.stderr


def test_a_new_version_swaps_in_under_load_without_a_failed_request(trained_model, tmp_path, model_cache):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    name = trained_model.model_name
    config = write_config(tmp_path / "config.json", name)
    server = start_server(tmp_path, server_env(store.uri, config, model_cache, MODEL_REFRESH_INTERVAL="0"))
    results: list[tuple] = []
    stop = threading.Event()

    def post_until_stopped():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = client.post("/predict", json=trained_model.request, headers={"TOKEN": "test-token-3f9a"})
                    results.append((answer.status_code, answer.json().get("model_version"), answer.headers.get("X-Model-Version")))
                except httpx.HTTPError as exc:
                    results.append(("error", repr(exc), None))

    clients = [threading.Thread(target=post_until_stopped) for _ in range(1)]
    try:
        for thread in clients:
            thread.start()
        wait_until(lambda: len(results) >= 20, 60, "the first answers")
        data = str(example_csv())
        new = train_version(store, tiny_config(data_path=data, seed=7), tmp_path / "work")  # trained while clients post
        store.set_alias(name, "production", new)
        update = httpx.post(f"{server.url}/update-model", headers={"TOKEN": "test-token-3f9a"}, timeout=120)
        mark = len(results)
        wait_until(lambda: len(results) >= mark + 40, 60, "answers after the swap")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        server.stop()
    assert update.status_code == 200 and update.json() == {"version": new, "previous": 1}
    assert [r for r in results if r[0] != 200] == []
    assert all(str(version) == header for _, version, header in results)
    assert {version for _, version, _ in results} == {1, new}
    assert {version for _, version, _ in results[mark + len(clients):]} == {new}  # requests sent after the swap


def test_two_workers_converge_on_the_moved_alias(trained_model, tmp_path, model_cache):
    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    name = trained_model.model_name
    config = write_config(tmp_path / "config.json", name)
    env = server_env(store.uri, config, model_cache, MODEL_REFRESH_INTERVAL="1")
    command = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "serve", "--workers", "2"]
    server = start_server(tmp_path, env, command=command)
    token = {"TOKEN": "test-token-3f9a"}
    try:
        new = store.register_again(name, 1)
        store.set_alias(name, "production", new)
        streak = [0]

        def two_hundred_in_a_row_from_the_new_version():
            # A new connection per request, so both workers answer (a kept-alive one sticks to one worker).
            answer = httpx.post(f"{server.url}/predict", json=trained_model.request, headers={**token, "Connection": "close"})
            assert answer.status_code == 200, answer.text
            streak[0] = streak[0] + 1 if answer.json()["model_version"] == new else 0
            return streak[0] >= 200

        wait_until(two_hundred_in_a_row_from_the_new_version, 120, "200 consecutive answers from the new version", interval=0)
    finally:
        server.stop()
    assert server.log().count(f"serving {name} version {new}") == 2  # each worker converged on its own
