"""GET /metrics: counts after known traffic, parsed with prometheus_client's own parser; two workers summed."""

from __future__ import annotations

import sys
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.metrics import Metrics
from app_support import model_cache  # noqa: F401 - a fixture
from app_support import REPO, TOKEN, auth, server_env, settings, start_server, wait_until, write_config


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} for every sample of a scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, sample: str, **labels) -> float | None:
    """The sample's value; None when the scrape has no such sample (a renamed metric must fail, not read 0)."""
    return scraped.get((sample, frozenset(labels.items())))


def requests(scraped: dict, route: str, status: int) -> float:
    return value(scraped, "tand_http_requests_total", route=route, status=str(status))


def class_counts(scraped: dict) -> dict[str, float]:
    return {dict(labels)["class"]: v for (name, labels), v in scraped.items() if name == "tand_predictions_total"}


@pytest.mark.slow
def test_two_workers_are_summed_after_known_traffic(trained_model, tmp_path, model_cache):  # noqa: F811
    name, row = trained_model.model_name, trained_model.request
    scratch = tmp_path / "tmp"  # invoke serve makes its metrics folder here (TMPDIR) and must remove it
    scratch.mkdir()
    config = write_config(tmp_path / "config.json", name)
    env = server_env(trained_model.project.tracking_uri, config, model_cache, TMPDIR=str(scratch))
    command = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "serve", "--workers", "2"]
    server = start_server(tmp_path, env, command=command)
    close = {"Connection": "close"}  # a new connection per request, so both workers answer
    try:
        assert [p.name for p in scratch.iterdir()][0].startswith("tand-metrics-")
        predicted = Counter()
        for body in [row] * 6 + [[row, row, row]] * 2:
            answer = httpx.post(f"{server.url}/predict", json=body, headers={**auth(), **close})
            assert answer.status_code == 200, answer.text
            answers = answer.json()["predictions"] if isinstance(body, list) else [answer.json()]
            predicted.update(a["prediction"] for a in answers)
        for _ in range(3):
            assert httpx.post(f"{server.url}/predict", json=row, headers=close).status_code == 401
        for _ in range(4):
            bad = httpx.post(f"{server.url}/predict", json={**row, next(iter(row)): "not a number"}, headers={**auth(), **close})
            assert bad.status_code == 422
        refused = httpx.get(f"{server.url}/metrics", headers=close)
        assert refused.status_code == 401 and "detail" in refused.json()

        def scrape_once_both_workers_loaded():  # readiness is one worker's; the other may still be loading
            scraped = samples(httpx.get(f"{server.url}/metrics", headers={**auth(), **close}).text)
            return scraped if value(scraped, "tand_model_reloads_total") == 2 else None

        scraped = wait_until(scrape_once_both_workers_loaded, 60, "both workers' model loads in /metrics")
    finally:
        server.stop()
    assert requests(scraped, "/predict", 200) == 8
    assert requests(scraped, "/predict", 401) == 3
    assert requests(scraped, "/predict", 422) == 4
    assert requests(scraped, "/metrics", 401) == 1
    assert value(scraped, "tand_predict_rows_count") == 8 and value(scraped, "tand_predict_rows_sum") == 12
    assert value(scraped, "tand_predict_rows_bucket", le="1.0") == 6
    assert value(scraped, "tand_http_request_duration_seconds_count", route="/predict") == 15
    assert class_counts(scraped) == dict(predicted)
    assert value(scraped, "tand_model_info", name=name, version=str(trained_model.version)) == 1
    assert value(scraped, "tand_model_reload_failures_total") == 0
    assert list(scratch.iterdir()) == []  # the metrics folder went with the server


@pytest.fixture
def make_client(trained_model, tmp_path):
    clients = []

    def make(**overrides) -> TestClient:
        app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache", **overrides))
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_metrics_need_the_token_unless_public(make_client, trained_model):
    private = make_client()
    assert private.get("/metrics").status_code == 401
    assert private.post("/predict", json=trained_model.request, headers=auth()).status_code == 200
    private.app.state.metrics.count_log_drops(5)
    scraped = samples(private.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text)
    assert requests(scraped, "/predict", 200) == 1 and requests(scraped, "/metrics", 401) == 1
    assert sum(class_counts(scraped).values()) == 1
    assert value(scraped, "tand_prediction_log_dropped_total") == 5
    assert value(scraped, "tand_model_info", name=trained_model.model_name, version=str(trained_model.version)) == 1

    public = make_client(metrics_public=True)
    answer = public.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert value(samples(answer.text), "tand_model_reloads_total") == 1  # its own app's counts, not the other's
    assert "security" not in public.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "security" in private.get("/openapi.json").json()["paths"]["/metrics"]["get"]


def test_a_failed_load_is_counted_and_unknown_paths_share_one_label(make_client):
    client = make_client(model_alias="nowhere")
    assert client.get("/no/such/path").status_code == 404
    scraped = samples(client.get("/metrics", headers=auth()).text)
    assert value(scraped, "tand_model_reload_failures_total") == 1 and value(scraped, "tand_model_reloads_total") == 0
    assert requests(scraped, "unmatched", 404) == 1
    assert not [labels for (name, labels) in scraped if name == "tand_model_info"]


def test_a_regression_batch_is_bucketed_as_one_observation_per_row():
    values = [-2e6, -3.5, -0.001, 0.0, 0.0005, 1.0, 7.25, 42.0, 1e3, 5e7] * 5
    batched, one_by_one = Metrics(), Metrics()
    batched.predicted([{"prediction": v} for v in values], classification=False)
    for v in values:
        one_by_one._observe_values([v])
    def histogram(metrics):
        return {k: v for k, v in samples(metrics.exposition().decode()).items() if k[0].startswith("tand_predicted_value")
                and not k[0].endswith("_created")}
    assert histogram(batched) == histogram(one_by_one) and value(histogram(batched), "tand_predicted_value_count") == 50
