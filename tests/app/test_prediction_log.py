"""The prediction log through a live server: entries equal the answers, X-Request-ID, exclude, sample,
Parquet, PostgreSQL, and a stalled sink (a table locked from another connection) that drops and counts
while /predict keeps answering."""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
from test_metrics import samples

from app_support import model_cache  # noqa: F401 - a fixture
from app_support import TOKEN, auth, server_env, start_server, wait_until, write_config
from app.predict.prediction_log import request_id
from app.settings import Settings, SettingsError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking" / "team"))
from team_support import pg_admin, pg_uri, require_postgres  # noqa: E402

FILE_NAME = re.compile(r"^predictions-\d{8}T\d{6}-(\d+)-(\d+)\.(jsonl|parquet)$")


def dropped(server) -> float:
    scraped = samples(httpx.get(f"{server.url}/metrics", headers=auth()).text)
    return scraped.get(("tand_prediction_log_dropped_total", frozenset()), 0.0)


def jsonl_entries(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def serve(trained_model, tmp_path, cache, prediction_log: dict | None = None, **env):
    config = write_config(tmp_path / "config.json", trained_model.model_name, **({"prediction_log": prediction_log} if prediction_log else {}))
    return start_server(tmp_path, server_env(trained_model.project.tracking_uri, config, cache, **env))


def varied_rows(request: dict, n: int) -> list[dict]:
    """n distinct rows (each feature scaled a little), so that a mix-up of rows would show."""
    return [{k: (round(v * (1 + 0.05 * i), 6) if isinstance(v, float) else v) for k, v in request.items()} for i in range(n)]


def expected_entries(rid: str, rows: list[dict], answers: list[dict], excluded: str, version: int) -> list[dict]:
    return [
        {"request_id": rid, "row": i, "model_version": version, "prediction": a["prediction"], "probabilities": a["probabilities"],
         "features": {k: v for k, v in row.items() if k != excluded}}
        for i, (row, a) in enumerate(zip(rows, answers))
    ]  # fmt: skip


def comparable(entry: dict) -> dict:
    return {k: entry[k] for k in ("request_id", "row", "model_version", "prediction", "probabilities", "features")}


# -- settings and request ids (no server) -----------------------------------------------------------


def test_prediction_log_settings_from_config_and_environment(tmp_path, trained_model):
    config = write_config(tmp_path / "config.json", trained_model.model_name, prediction_log={"path": "logs", "exclude": ["a"], "sample": 0.5})
    base = {"API_TOKEN": TOKEN, "TAND_CONFIG": str(config)}
    configured = Settings.from_env(base).prediction_log
    assert (configured.path, configured.url, configured.exclude, configured.sample) == (Path("logs"), None, ("a",), 0.5)
    url = "postgresql://someone:secret@127.0.0.1/test"
    overridden = Settings.from_env({**base, "PREDICTION_LOG": url, "PREDICTION_LOG_SAMPLE": "1"}).prediction_log
    assert (overridden.path, overridden.url, overridden.exclude, overridden.sample) == (None, url, ("a",), 1.0)
    assert "secret" not in repr(overridden)
    assert Settings.from_env({**base, "PREDICTION_LOG": str(tmp_path / "x")}).prediction_log.path == tmp_path / "x"
    plain = write_config(tmp_path / "plain.json", trained_model.model_name)
    assert Settings.from_env({"API_TOKEN": TOKEN, "TAND_CONFIG": str(plain)}).prediction_log is None
    assert Settings.from_env({"API_TOKEN": TOKEN, "TAND_CONFIG": str(plain), "PREDICTION_LOG": "logs"}).prediction_log.sample == 1.0
    with pytest.raises(SettingsError, match="neither a folder nor a postgresql:// URL") as refused:
        Settings.from_env({**base, "PREDICTION_LOG": "mysql://u:secret@h/db"})
    assert "secret" not in str(refused.value)
    with pytest.raises(SettingsError, match="PREDICTION_LOG_SAMPLE='2' must be between 0 and 1"):
        Settings.from_env({**base, "PREDICTION_LOG_SAMPLE": "2"})
    no_sink = write_config(tmp_path / "no-sink.json", trained_model.model_name, prediction_log={"sample": 0.5})
    with pytest.raises(SettingsError, match="names no sink"):
        Settings.from_env({"API_TOKEN": TOKEN, "TAND_CONFIG": str(no_sink)})


def test_request_id_is_the_clients_when_printable_and_short_else_a_new_uuid():
    assert request_id([(b"x-request-id", b"order-17/a b")]) == "order-17/a b"
    for bad in (b"x" * 129, b"tab\there", "é".encode(), b""):
        generated = request_id([(b"x-request-id", bad)])
        assert uuid.UUID(hex=generated).version == 4 and len(generated) == 32
    assert request_id([]) != request_id([])


def test_new_request_ids_are_distinct_uuid4s_across_batches_and_in_a_forked_child():
    """Ids are made ID_BATCH at a time: past a batch's end they stay distinct uuid4s, and a child forked after
    its parent made a batch makes its own (they would otherwise be the parent's next ids)."""
    import os
    import select
    import signal

    from app.predict.prediction_log import ID_BATCH, new_request_id

    ids = [new_request_id() for _ in range(2 * ID_BATCH + 10)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(hex=i).version == 4 and uuid.UUID(hex=i).variant == uuid.RFC_4122 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent; whatever happens, it leaves here
        try:
            os.close(read)
            os.write(write, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    try:  # bounded: a child forked from this (threaded) process must not hang the suite
        answered, _, _ = select.select([read], [], [], 60)
        child = os.read(read, 64).decode() if answered else ""
    finally:
        os.close(read)
        if not answered:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert child, "the forked child gave no id within 60 s"
    assert uuid.UUID(hex=child).version == 4 and child not in {new_request_id() for _ in range(ID_BATCH)}


# -- live server ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_entries_match_the_answers_and_never_hold_the_token(trained_model, tmp_path, model_cache):  # noqa: F811
    folder = tmp_path / "log"
    excluded = list(trained_model.request)[0]
    server = serve(trained_model, tmp_path, model_cache, {"path": str(folder), "exclude": [excluded]})
    try:
        one = varied_rows(trained_model.request, 1)[0]
        single = httpx.post(f"{server.url}/predict", json=one, headers={**auth(), "X-Request-ID": "client-42"})
        batch_rows = varied_rows(trained_model.request, 3)
        batch = httpx.post(f"{server.url}/predict", json=batch_rows, headers={"Authorization": f"Bearer {TOKEN}"})
        long_id = httpx.post(f"{server.url}/predict", json=one, headers={**auth(), "X-Request-ID": "y" * 200})
        refused = httpx.post(f"{server.url}/predict", json={**one, excluded: "not a number"}, headers=auth())
        assert [r.status_code for r in (single, batch, long_id, refused)] == [200, 200, 200, 422]
        assert single.headers["x-request-id"] == "client-42"
        assert len(batch.headers["x-request-id"]) == 32 and len(long_id.headers["x-request-id"]) == 32
        wait_until(lambda: len(jsonl_entries(folder)) >= 5, 30, "5 entries in the log")
    finally:
        server.stop()
    entries = jsonl_entries(folder)
    version = trained_model.version
    single_answer = {k: v for k, v in single.json().items() if k != "model_version"}
    expected = [
        *expected_entries("client-42", [one], [single_answer], excluded, version),
        *expected_entries(batch.headers["x-request-id"], batch_rows, batch.json()["predictions"], excluded, version),
        *expected_entries(long_id.headers["x-request-id"], [one], [single_answer], excluded, version),
    ]
    assert [comparable(e) for e in entries] == expected  # the 422 is not logged
    assert all(e["model_name"] == trained_model.model_name and e["time"].endswith("Z") and e["latency_ms"] > 0 for e in entries)
    assert all(set(e) == {"request_id", "row", "time", "model_name", "model_version", "features", "prediction", "probabilities",
                          "latency_ms"} for e in entries)  # fmt: skip
    files = list(folder.iterdir())
    assert files and all(FILE_NAME.match(p.name) and FILE_NAME.match(p.name).group(1) == str(server.process.pid) for p in files)
    assert all(TOKEN not in p.read_text() for p in files)


@pytest.mark.slow
def test_sample_zero_logs_nothing_and_parquet_files_are_renamed_when_closed(trained_model, tmp_path, model_cache):  # noqa: F811
    folder, parquet = tmp_path / "sampled", tmp_path / "parquet"
    # PREDICTION_LOG and PREDICTION_LOG_SAMPLE override the config's folder and sample.
    server = serve(trained_model, tmp_path, model_cache, {"path": str(tmp_path / "unused")}, PREDICTION_LOG=str(folder), PREDICTION_LOG_SAMPLE="0")
    try:
        answers = [httpx.post(f"{server.url}/predict", json=trained_model.request, headers=auth()) for _ in range(5)]
        assert all(a.status_code == 200 and a.headers["x-request-id"] for a in answers)
    finally:
        server.stop()  # the writer writes what is waiting at shutdown: nothing
    assert jsonl_entries(folder) == [] and not (tmp_path / "unused").exists()

    (tmp_path / "pq").mkdir()
    server = serve(trained_model, tmp_path / "pq", model_cache, {"path": str(parquet), "format": "parquet"})
    try:
        rows = varied_rows(trained_model.request, 4)
        answer = httpx.post(f"{server.url}/predict", json=rows, headers=auth())
        assert answer.status_code == 200
        assert not list(parquet.glob("*.parquet"))  # renamed from .parquet.part only when the file is closed
    finally:
        server.stop()
    import pyarrow.parquet as pq

    (path,) = parquet.iterdir()
    assert FILE_NAME.match(path.name)
    table = pq.read_table(path)
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    logged = table.to_pylist()
    assert [(e["request_id"], e["row"], e["prediction"], json.loads(e["probabilities"]), json.loads(e["features"])) for e in logged] == [
        (answer.headers["x-request-id"], i, a["prediction"], a["probabilities"], row) for i, (row, a) in enumerate(zip(rows, answer.json()["predictions"]))
    ]  # fmt: skip


@pytest.fixture
def pg_schema():
    """A schema of its own in the database `test`, dropped afterwards; the URL puts it first in the search_path."""
    require_postgres()
    name = f"predlog_{uuid.uuid4().hex[:10]}"
    with pg_admin("test") as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name, f"{pg_uri('test')}?options=-csearch_path%3D{name}"
    finally:
        with pg_admin("test") as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def table_rows(schema: str) -> list[tuple]:
    """The logged rows; none while the writer (its own thread) has not created the table yet."""
    with pg_admin("test") as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.prediction_log",)).fetchone()[0] is None:
            return []
        return conn.execute(
            f"SELECT request_id, row, model_version, prediction, probabilities, features, time, latency_ms FROM {schema}.prediction_log"
            " ORDER BY time, row"
        ).fetchall()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_sink_and_a_locked_table_drops_and_counts_without_slowing_answers(trained_model, tmp_path, model_cache, pg_schema):  # noqa: F811
    schema, url = pg_schema
    queue_rows = 5
    server = serve(trained_model, tmp_path, model_cache, {"url": url, "queue_rows": queue_rows})
    try:
        rows = varied_rows(trained_model.request, 3)
        answer = httpx.post(f"{server.url}/predict", json=rows, headers={**auth(), "X-Request-ID": "pg-batch"})
        assert answer.status_code == 200
        wait_until(lambda: len(table_rows(schema)) == 3, 30, "3 rows in the table")
        logged = table_rows(schema)
        assert [r[:6] for r in logged] == [
            ("pg-batch", i, trained_model.version, a["prediction"], a["probabilities"], row)
            for i, (row, a) in enumerate(zip(rows, answer.json()["predictions"]))
        ]
        assert all(r[6].tzinfo is not None and r[7] > 0 for r in logged)

        # Another connection locks the table: the writer's COPY waits on it; the queue fills, then drops.
        with pg_admin("test") as locker:
            locker.autocommit = False
            locker.execute(f"LOCK TABLE {schema}.prediction_log IN ACCESS EXCLUSIVE MODE")
            sent = 40
            statuses = [httpx.post(f"{server.url}/predict", json=trained_model.request, headers=auth()).status_code for _ in range(sent)]
            assert statuses == [200] * sent
            lost = dropped(server)
            assert lost >= sent - queue_rows
            locker.rollback()  # the lock is released: the writer's COPY goes through
        wait_until(lambda: len(table_rows(schema)) == 3 + sent - lost, 30, f"{3 + sent - lost} rows once the lock is gone")
        assert dropped(server) == lost
    finally:
        server.stop()
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_an_unreachable_sink_at_start_up_serves_logs_one_error_and_counts_drops(trained_model, tmp_path, model_cache):  # noqa: F811
    server = serve(trained_model, tmp_path, model_cache, PREDICTION_LOG="postgresql://postgres:hunter2@127.0.0.1:1/test")
    try:
        for _ in range(3):
            assert httpx.post(f"{server.url}/predict", json=trained_model.request, headers=auth()).status_code == 200
        wait_until(lambda: dropped(server) >= 3, 30, "3 dropped entries")
    finally:
        server.stop()
    errors = [line for line in server.log().splitlines() if "prediction log:" in line and line.startswith("ERROR")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0] and "hunter2" not in server.log(), server.log()[-2000:]


def test_entries_of_a_regression_batch_with_an_excluded_column():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import msgspec

    from app.predict.prediction_log import _Columns, entries

    served = SimpleNamespace(name="m", version=3, schema=SimpleNamespace(names=["a", "b c", "d"]), predictor=SimpleNamespace(class_names=None))
    answered = datetime(2026, 12, 3, 12, 0, 1, 250, tzinfo=UTC)
    made = entries("r1", served, [(1.5, "x", None), (2, "y", 4.0)], [{"prediction": 0.25}, {"prediction": -1.0}], 2.5, _Columns(frozenset({"a"})), answered)
    lines = [msgspec.json.decode(line) for line in msgspec.json.Encoder().encode_lines(made).splitlines()]
    assert [(e["row"], e["features"], e["prediction"], e["probabilities"], e["model_version"]) for e in lines] == [
        (0, {"b c": "x", "d": None}, 0.25, None, 3), (1, {"b c": "y", "d": 4.0}, -1.0, None, 3)
    ]
    assert lines[0]["time"] == lines[1]["time"] == "2026-12-03T12:00:01.000250Z"
    one_kept = entries("r2", served, [(1.5, "x", None)], [{"prediction": 1.0}], 1.0, _Columns(frozenset({"a", "d"})), answered)
    assert msgspec.json.decode(msgspec.json.encode(one_kept[0].features)) == {"b c": "x"}


def test_entries_of_a_classification_request_hold_the_probabilities_by_class():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import msgspec

    from app.predict.prediction_log import _Columns, entries

    served = SimpleNamespace(name="m", version=1, schema=SimpleNamespace(names=["a", "b"]), predictor=SimpleNamespace(class_names=["no", "yes"]))
    answers = [{"prediction": "yes", "probabilities": {"no": 0.25, "yes": 0.75}}]
    (entry,) = entries("r", served, [(1.0, 2.0)], answers, 0.5, _Columns(frozenset()), datetime.now(UTC))
    line = msgspec.json.decode(msgspec.json.encode(entry))
    assert (line["features"], line["prediction"], line["probabilities"], line["row"]) == ({"a": 1.0, "b": 2.0}, "yes", {"no": 0.25, "yes": 0.75}, 0)


def test_an_entrys_time_is_the_utc_clock_read_at_most_once_a_millisecond(tmp_path, monkeypatch):
    """Entries answered within a millisecond share one clock reading (the clock is read when the last reading
    is a millisecond old, on the monotonic clock); times are UTC, in order, between the requests' start and end."""
    import asyncio
    import time
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import app.predict.prediction_log as prediction_log
    from app.metrics import Metrics
    from app.predict.prediction_log import PredictionLog
    from app.settings import PredictionLogSettings

    log = PredictionLog(PredictionLogSettings(path=tmp_path / "clock"), Metrics())
    ticks = iter([100.0, 100.0009, 100.0011, 100.0015, 100.0025])
    monkeypatch.setattr(prediction_log, "_monotonic", lambda: next(ticks))
    readings = [log._clock() for _ in range(5)]
    assert readings[0] is readings[1] and readings[2] is readings[3] and readings[1] is not readings[2] is not readings[4]
    monkeypatch.undo()
    log = PredictionLog(PredictionLogSettings(path=tmp_path / "clock"), Metrics())  # its clock on the real monotonic clock

    features = [SimpleNamespace(name="a", dtype="number")]
    served = SimpleNamespace(name="m", version=1, schema=SimpleNamespace(names=["a"], features=features), predictor=SimpleNamespace(class_names=None))

    async def requests() -> None:
        for i in range(3):
            log.add(f"r{i}", served, [(float(i),)], [{"prediction": 1.0}], 1.0)
        await asyncio.sleep(0.01)
        log.add("later", served, [(3.0,)], [{"prediction": 1.0}], 1.0)
        deadline = time.monotonic() + 30
        while log.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    before = datetime.now(UTC)
    log.start()
    asyncio.run(requests())
    log.stop()
    after = datetime.now(UTC)
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in jsonl_entries(tmp_path / "clock")]
    assert len(times) == 4 and times == sorted(times) and before <= times[0] and times[-1] <= after
    assert times[3] > times[0]  # 10 ms later: a new reading


def test_the_log_seals_entries_on_the_event_loop_and_its_thread_writes_them_in_order(tmp_path):
    """More than SEAL_ROWS single-row requests and a batch, through the real log, JSONL folder and Parquet:
    sealed by count and by the timer (no request after the last), written by the thread, in order."""
    import asyncio
    import time
    from types import SimpleNamespace

    import pyarrow.parquet as pq

    from app.metrics import Metrics
    from app.predict.prediction_log import SEAL_ROWS, PredictionLog
    from app.settings import PredictionLogSettings

    features = [SimpleNamespace(name="a", dtype="number"), SimpleNamespace(name="b", dtype="string")]
    schema = SimpleNamespace(names=["a", "b"], features=features)
    served = SimpleNamespace(name="m", version=2, schema=schema, predictor=SimpleNamespace(class_names=["no", "yes"]))
    n = SEAL_ROWS * 2 + 5

    async def requests(log: PredictionLog) -> None:
        for i in range(n):
            log.add(f"r{i}", served, [(float(i), "x")], [{"prediction": "yes", "probabilities": {"no": 0.5, "yes": 0.5}}], 1.0)
        log.add("batch", served, [(1.0, "p"), (2.0, "q")], [{"prediction": "no", "probabilities": {"no": 1.0, "yes": 0.0}}] * 2, 2.0)
        deadline = time.monotonic() + 30
        while log.waiting and time.monotonic() < deadline:  # the timer seals the last ones, the thread writes them
            await asyncio.sleep(0.05)
        assert log.waiting == 0

    for fmt in ("jsonl", "parquet"):
        folder = tmp_path / fmt
        log = PredictionLog(PredictionLogSettings(path=folder, format=fmt), Metrics())
        log.start()
        asyncio.run(requests(log))
        log.stop()
        if fmt == "jsonl":
            lines = jsonl_entries(folder)
        else:
            lines = [{**e, "features": json.loads(e["features"]), "probabilities": json.loads(e["probabilities"])}
                     for path in sorted(folder.glob("*.parquet")) for e in pq.read_table(path).to_pylist()]  # fmt: skip
        assert [(e["request_id"], e["row"], e["features"]["a"]) for e in lines] == [(f"r{i}", 0, float(i)) for i in range(n)] + [
            ("batch", 0, 1.0), ("batch", 1, 2.0)
        ]
        assert lines[0]["probabilities"] == {"no": 0.5, "yes": 0.5} and lines[-1]["features"] == {"a": 2.0, "b": "q"}
        assert all(e["model_name"] == "m" and e["model_version"] == 2 for e in lines)


def test_a_single_row_body_is_its_entrys_features_only_where_it_says_what_the_validated_row_says(tmp_path):
    """The body copied as it is (no number formatted again) when every feature is a number, string or boolean;
    encoded anew from the validated row for an integer feature (3.0 validates to 3), a body with a line break,
    and an exclusion. Both read back by drift's reader (live_log) as the same feature frame."""
    import asyncio
    import time
    from types import SimpleNamespace

    from app.metrics import Metrics
    from app.predict.prediction_log import PredictionLog, log_body
    from app.settings import PredictionLogSettings
    from tand.monitoring import live_log

    def served(dtypes: dict, version: int):
        features = [SimpleNamespace(name=n, dtype=d) for n, d in dtypes.items()]
        schema = SimpleNamespace(names=list(dtypes), features=features)
        return SimpleNamespace(name="m", version=version, schema=schema, predictor=SimpleNamespace(class_names=["no", "yes"]))

    plain = served({"a": "number", "b": "string", "c": "number"}, 1)
    counted = served({"a": "number", "b": "string", "c": "integer"}, 2)
    answer = [{"prediction": "yes", "probabilities": {"no": 0.25, "yes": 0.75}}]
    cases = [  # (model, body as sent, validated row, features the entry must hold)
        (plain, b'{"b": "caf\\u00e9", "a": 5, "c": 0.1}', (5.0, "café", 0.1), {"b": "café", "a": 5, "c": 0.1}),
        (plain, b'{"a": 1.5,\n "b": "x"}', (1.5, "x", None), {"a": 1.5, "b": "x", "c": None}),
        (counted, b'{"a": 1.5, "b": "x", "c": 3.0}', (1.5, "x", 3), {"a": 1.5, "b": "x", "c": 3}),
    ]

    async def requests(log: PredictionLog) -> None:
        for i, (model, body, row, _) in enumerate(cases):
            log.add(f"r{i}", model, [row], answer, 1.0, log_body(body, batch=False))
        deadline = time.monotonic() + 30
        while log.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    for fmt in ("jsonl", "parquet"):
        folder = tmp_path / fmt
        log = PredictionLog(PredictionLogSettings(path=folder, format=fmt), Metrics())
        log.start()
        asyncio.run(requests(log))
        log.stop()
        if fmt == "jsonl":  # the first body as sent; the other two encoded anew, on one line each
            text = b"".join(path.read_bytes() for path in folder.glob("*.jsonl"))
            assert b'"features":' + cases[0][1] + b"," in text and text.count(b"\n") == 3
            assert b'"features":{"a":1.5,"b":"x","c":null}' in text and b'"features":{"a":1.5,"b":"x","c":3}' in text
        read = live_log.read(str(folder)).sort_values("request_id", ignore_index=True)
        assert [f if isinstance(f, dict) else json.loads(f) for f in read["features"]] == [want for *_, want in cases], fmt
        frame = live_log.feature_frame(read, ["a", "b", "c"])
        assert frame["a"].tolist() == [5.0, 1.5, 1.5] and frame["b"].tolist() == ["café", "x", "x"], fmt
        assert frame["c"].iloc[0] == 0.1 and pd.isna(frame["c"].iloc[1]) and frame["c"].iloc[2] == 3, fmt

    excluding = PredictionLog(PredictionLogSettings(path=tmp_path / "excluding", exclude=["c"]), Metrics())
    excluding.start()
    asyncio.run(requests(excluding))
    excluding.stop()
    kept = live_log.read(str(tmp_path / "excluding")).sort_values("request_id", ignore_index=True)["features"].tolist()
    assert kept == [{"a": 5.0, "b": "café"}, {"a": 1.5, "b": "x"}, {"a": 1.5, "b": "x"}]


def test_a_parquet_log_takes_a_classifier_then_a_regressor_and_a_sink_bug_loses_a_batch_not_the_log(tmp_path, monkeypatch, caplog):
    """Entries of a classifier and of a regressor in one row group (the API refuses to hot-swap tasks today;
    the sink is ready should one be served in the same process): both are written (a file per schema) and read back. A sink that fails with an error it was not written to expect (a bug, not a
    SinkError) loses that batch, counted; the writer thread lives on and writes the next ones."""
    import asyncio
    import time
    from types import SimpleNamespace

    from app.metrics import Metrics
    from app.predict import prediction_log
    from app.predict.log_sinks import open_sink
    from app.predict.prediction_log import PredictionLog
    from app.settings import PredictionLogSettings
    from tand.monitoring import live_log

    def served(version: int, classes):
        schema = SimpleNamespace(names=["a"], features=[SimpleNamespace(name="a", dtype="number")])
        return SimpleNamespace(name="m", version=version, schema=schema, predictor=SimpleNamespace(class_names=classes))

    classifier, regressor = served(1, ["no", "yes"]), served(2, None)

    async def requests(log: PredictionLog, batches) -> None:
        for model, answer, first in batches:
            for i in range(first, first + 3):
                log.add(f"r{i}", model, [(float(i),)], [answer], 1.0)
            deadline = time.monotonic() + 30
            while log.waiting and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    folder = tmp_path / "parquet"
    log = PredictionLog(PredictionLogSettings(path=folder, format="parquet"), Metrics())
    log.start()
    asyncio.run(requests(log, [(classifier, {"prediction": "yes", "probabilities": {"no": 0.4, "yes": 0.6}}, 0), (regressor, {"prediction": 2.5}, 3)]))
    log.stop()
    read = live_log.read(str(folder)).sort_values("request_id", ignore_index=True)
    assert list(read["prediction"]) == ["yes"] * 3 + [2.5] * 3 and list(read["model_version"]) == [1, 1, 1, 2, 2, 2]
    assert len(list(folder.glob("*.parquet"))) == 2  # one schema a file

    class Buggy:  # the real sink, whose first opening's write fails as a bug would (not a SinkError)
        opened = 0

        def __init__(self, settings):
            Buggy.opened += 1
            self.real, self.first = open_sink(settings), Buggy.opened == 1

        def write(self, *args):
            if self.first:
                raise KeyError("a bug")
            return self.real.write(*args)

        def describe(self):
            return self.real.describe()

        def close(self):
            self.real.close()

    monkeypatch.setattr(prediction_log, "RETRY_SECONDS", 0.1)
    caplog.set_level("INFO", logger="app")
    metrics = Metrics()
    folder = tmp_path / "jsonl"
    log = PredictionLog(PredictionLogSettings(path=folder), metrics, open_sink=Buggy)
    log.start()
    answer = {"prediction": "no", "probabilities": {"no": 0.9, "yes": 0.1}}
    asyncio.run(requests(log, [(classifier, answer, 0), (classifier, answer, 3)]))
    assert log._thread.is_alive()
    log.stop()
    assert [e["request_id"] for e in jsonl_entries(folder)] == ["r3", "r4", "r5"]
    assert metrics.registry.get_sample_value("tand_prediction_log_dropped_total") == 3
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert said == [f"prediction log: the folder {folder} (jsonl) failed: KeyError: 'a bug'; entries are dropped "
                    "(counted in tand_prediction_log_dropped) until it works again"], said  # once, naming the sink and the error
    assert any(r.getMessage() == f"prediction log: writing to the folder {folder} (jsonl) again" for r in caplog.records)
