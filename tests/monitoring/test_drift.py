"""invoke drift: a real tiny model's reference profile against logged traffic, through the real server and
its prediction log (JSONL), and against log files written in the log's format (JSONL, Parquet, PostgreSQL)."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from app_support import Store, auth, mixed_dataset, server_env, start_server, train_version, wait_until
from conftest import INVOKE, load_registered, tiny_sklearn_config

from tand.monitoring import drift, live_log, profile

MODEL = "drift-classifier"
SHIFTED, UNCHANGED = "mean_radius", "clinic"
ROWS = 300


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One store with a tiny classifier on data with numeric and categorical features (version 1, production)."""
    root = tmp_path_factory.mktemp("drift")
    store = Store(root / "store")
    store.path.mkdir()
    data = mixed_dataset(root / "mixed.csv")
    config = tiny_sklearn_config(MODEL, data_path=str(data))
    version = train_version(store, config, root / "work")
    (root / "config.json").write_text(json.dumps(config))
    return store, root, pd.read_csv(data), version


def traffic(frame: pd.DataFrame, shift: bool, seed: int) -> list[dict]:
    """ROWS rows drawn from the data; with `shift`, mean_radius moved up by three standard deviations."""
    rows = frame.drop(columns=["diagnosis"]).sample(ROWS, random_state=seed, replace=True).reset_index(drop=True)
    if shift:
        rows[SHIFTED] = rows[SHIFTED] + 3 * frame[SHIFTED].std()
    return json.loads(rows.to_json(orient="records"))


def invoke(root: Path, store: Store, *args: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREDICTION_LOG"))}
    full.update(MLFLOW_TRACKING_URI=store.uri, MLFLOW_DISABLE_TELEMETRY="true", **env)
    return subprocess.run(
        [*INVOKE, *args, "--config", str(root / "config.json")],
        cwd=root, env=full, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def drift_runs(store: Store, version: int) -> list[str]:
    run_id = store.client().get_model_version(MODEL, str(version)).run_id
    return [f.path for f in store.client().list_artifacts(run_id, "drift")]


def logged_lines(folder: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in folder.glob("predictions-*.jsonl"))


# -- the whole path: training's profile, the live server's log, invoke drift, the report in MLflow ------


@pytest.mark.slow  # a live uvicorn and invoke as a subprocess
def test_shifted_traffic_through_the_server_drifts_and_unshifted_does_not(trained, tmp_path):
    store, root, frame, version = trained
    folder = tmp_path / "log"
    env = server_env(store.uri, root / "config.json", tmp_path / "cache", PREDICTION_LOG=str(folder))
    server = start_server(tmp_path, env)
    try:
        def send(rows: list[dict]) -> None:
            for start in range(0, len(rows), 50):
                answer = httpx.post(f"{server.url}/predict", json=rows[start : start + 50], headers=auth(), timeout=30)
                assert answer.status_code == 200, answer.text

        send(traffic(frame, shift=False, seed=1))
        wait_until(lambda: logged_lines(folder) == ROWS, 30, f"{ROWS} logged rows")
        steady = invoke(root, store, "drift", PREDICTION_LOG=str(folder))
        assert steady.returncode == 0, steady.stderr + steady.stdout
        assert "no drift" in steady.stdout and "DRIFTED" not in steady.stdout

        since = datetime.now(UTC).isoformat()
        send(traffic(frame, shift=True, seed=2))
        wait_until(lambda: logged_lines(folder) == 2 * ROWS, 30, f"{2 * ROWS} logged rows")
    finally:
        server.stop()
    moved = invoke(root, store, "drift", "--log", str(folder), "--since", since)
    assert moved.returncode == 2, moved.stderr + moved.stdout
    verdict = moved.stderr.strip().splitlines()[-1]
    assert verdict.startswith("drifted (PSI > 0.2):") and SHIFTED in verdict and UNCHANGED not in verdict
    assert f"{ROWS:,} logged rows" in moved.stdout
    lines = {line.split()[0]: line for line in moved.stdout.splitlines() if line.startswith("  ")}
    assert "DRIFTED" in lines[SHIFTED] and "DRIFTED" not in lines[UNCHANGED]

    # Both checks are in the version's run: the report, its data and the PSI values as metrics.
    client = store.client()
    run_id = client.get_model_version(MODEL, str(version)).run_id
    checks = drift_runs(store, version)
    assert len(checks) == 2
    latest = max(checks)
    files = {Path(f.path).name for f in client.list_artifacts(run_id, latest)}
    assert files == {"report.html", "drift.json"}
    local = Path(client.download_artifacts(run_id, latest, str(tmp_path / "got")))
    data = json.loads((local / "drift.json").read_text())
    assert data["drifted"][0] == SHIFTED and data["rows"] == ROWS
    page = (local / "report.html").read_text()
    assert SHIFTED in page and page.count("data:image/png;base64,") == len(data["features"]) + 1
    history = {m.value for m in client.get_metric_history(run_id, f"drift_psi_{SHIFTED}")}
    assert len(history) == 2 and max(history) > 0.2 > min(history)


# -- the pieces, on log files written in the log's format ---------------------------------------------


def entries(frame: pd.DataFrame, shift: bool, seed: int, version: int) -> list[dict]:
    """Log entries as the API writes them, with the registered pipeline's own answers."""
    rows = traffic(frame, shift, seed)
    model = load_registered(MODEL, version=version)
    X = pd.DataFrame(rows)[model.schema.names]
    proba = model.pipeline.predict_proba(X)
    classes = [str(c) for c in model.pipeline.classes_]
    labels = model.pipeline.predict(X)
    start = datetime.now(UTC).timestamp()
    return [
        {"request_id": f"r{seed}-{i // 10}", "row": i % 10,
         "time": datetime.fromtimestamp(start + i / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
         "model_name": MODEL, "model_version": version, "features": row, "prediction": str(label),
         "probabilities": dict(zip(classes, map(float, p))), "latency_ms": 1.5}
        for i, (row, label, p) in enumerate(zip(rows, labels, proba))
    ]  # fmt: skip


def write_jsonl(folder: Path, items: list[dict], cut_last: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e) + "\n" for e in items)
    if cut_last:
        text += json.dumps(items[0])[:40]  # a writer killed mid-line
    (folder / f"predictions-20261203T000000-1-{uuid.uuid4().hex[:6]}.jsonl").write_text(text)


@pytest.fixture(scope="module")
def tracked(trained):
    store, root, frame, version = trained
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store.uri
    try:
        yield store, root, frame, version
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if saved is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", saved)


def test_training_logs_a_reference_profile_of_every_feature_and_the_predictions(tracked, tmp_path):
    store, root, frame, version = tracked
    run_id = store.client().get_model_version(MODEL, str(version)).run_id
    saved = json.loads(Path(store.client().download_artifacts(run_id, profile.PROFILE_FILE, str(tmp_path))).read_text())
    assert set(saved["features"]) == set(frame.columns) - {"diagnosis"}
    numeric = saved["features"][SHIFTED]
    assert numeric["kind"] == "numeric" and len(numeric["edges"]) == 9 and abs(sum(numeric["shares"]) - 1) < 1e-9
    clinic = saved["features"][UNCHANGED]
    assert clinic["kind"] == "categorical" and set(clinic["categories"]) == {"north", "south", "east"}
    assert clinic["known"] == ["east", "north", "south"] and clinic["missing"] == 0
    assert saved["prediction"]["categories"] == ["malignant", "benign"]
    assert saved["train_rows"] + saved["test_rows"] == len(frame)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0
    small, large = drift.psi([0.5, 0.5], [0.45, 0.55]), drift.psi([0.5, 0.5], [0.1, 0.9])
    assert 0 < small < 0.2 < large
    assert np.isfinite(drift.psi([1.0, 0.0], [0.0, 1.0]))  # empty bins: large, not infinite


def test_unseen_and_missing_shares_and_open_ended_bins():
    reference = profile.categorical_profile(pd.Series(["a"] * 60 + ["b"] * 40))
    shift = drift.categorical_shift("c", reference, pd.Series(["a"] * 50 + ["zzz"] * 25 + [None] * 25))
    assert shift.unseen == pytest.approx(25 / 75) and shift.missing_live == pytest.approx(0.25)
    assert shift.bins == ["a", "b", "(other)", "(missing)"] and shift.live == pytest.approx([0.5, 0, 0.25, 0.25])
    numbers = profile.numeric_profile(pd.Series(np.arange(100.0)))
    far = drift.numeric_shift("x", numbers, pd.Series([-1e9, 1e9, np.nan, 50.0]))
    assert far.live[0] == 0.25 and far.live[-2] == 0.25 and far.live[-1] == 0.25  # below, above, missing


def test_jsonl_with_a_cut_last_line_and_parquet_beside_a_part_file(tracked, tmp_path):
    store, root, frame, version = tracked
    items = entries(frame, shift=False, seed=3, version=version)
    write_jsonl(tmp_path / "log", items[:150], cut_last=True)
    table = pd.DataFrame(items[150:])
    table["features"] = table["features"].map(json.dumps)
    table["probabilities"] = table["probabilities"].map(json.dumps)
    table["time"] = pd.to_datetime(table["time"], utc=True).astype("datetime64[us, UTC]")
    table.to_parquet(tmp_path / "log" / "predictions-20261203T000000-2-1.parquet")
    table.head(5).to_parquet(tmp_path / "log" / "predictions-20261203T000000-2-2.parquet.part")  # still being written
    read = live_log.read(str(tmp_path / "log"))
    assert len(read) == ROWS and read["features"].map(type).eq(dict).all()
    assert read["time"].dt.tz is not None and read["time"].is_monotonic_increasing
    result = drift.compare(profile_of(store, version, tmp_path), read, version, 0.2)
    assert result.drifted == [] and result.rows == ROWS


def profile_of(store: Store, version: int, folder: Path) -> dict:
    run_id = store.client().get_model_version(MODEL, str(version)).run_id
    return json.loads(Path(store.client().download_artifacts(run_id, profile.PROFILE_FILE, str(folder))).read_text())


@pytest.mark.slow  # invoke as a subprocess
def test_drift_on_log_files_exit_codes_too_few_rows_and_a_version_without_profile(tracked, tmp_path):
    store, root, frame, version = tracked
    write_jsonl(tmp_path / "moved", entries(frame, shift=True, seed=4, version=version))
    moved = invoke(root, store, "drift", "--log", str(tmp_path / "moved"))
    assert moved.returncode == 2 and SHIFTED in moved.stderr.splitlines()[-1], moved.stderr
    write_jsonl(tmp_path / "few", entries(frame, shift=False, seed=5, version=version)[:40])
    few = invoke(root, store, "drift", "--log", str(tmp_path / "few"))
    assert few.returncode == 1
    assert few.stderr.strip().splitlines() == [
        f"error: only 40 logged rows of {MODEL} version {version} in {tmp_path / 'few'}; drift needs at least 100 "
        "(monitor.min_rows): wait for more traffic or widen --since"
    ]
    # A version whose run has no profile (trained before profiles existed): one line.
    client = store.client()
    old = client.get_model_version(MODEL, str(version))
    bare = client.create_run(client.get_run(old.run_id).info.experiment_id).info.run_id
    client.set_terminated(bare)
    os.environ["MLFLOW_TRACKING_URI"] = store.uri
    legacy = client.create_model_version(MODEL, old.source, run_id=bare).version
    result = invoke(root, store, "drift", "--log", str(tmp_path / "moved"), "--version", str(legacy))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: version {legacy} of {MODEL} has no reference profile (reference_profile.json; it was trained before "
        "profiles were written): train it again, or pass --version N of a newer one"
    ]
    missing = invoke(root, store, "drift", "--log", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: prediction log") and "Traceback" not in missing.stderr


@pytest.mark.postgres
def test_the_postgresql_log_is_read_with_since_and_version(tracked, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking" / "team"))
    from team_support import pg_admin, pg_uri, require_postgres

    from tand.monitoring.log_format import CREATE_TABLE

    require_postgres()
    store, root, frame, version = tracked
    schema = f"drift_{uuid.uuid4().hex[:10]}"
    items = entries(frame, shift=False, seed=6, version=version)
    with pg_admin("test") as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute(CREATE_TABLE)
        with conn.cursor().copy(f"COPY {schema}.prediction_log ({', '.join(live_log.COLUMNS)}) FROM STDIN") as copy:
            for e in items:
                copy.write_row([e["request_id"], e["row"], e["time"], e["model_name"], e["model_version"], json.dumps(e["features"]),
                                json.dumps(e["prediction"]), json.dumps(e["probabilities"]), e["latency_ms"]])  # fmt: skip
    try:
        url = f"{pg_uri('test')}?options=-csearch_path%3D{schema}"
        read = live_log.read(url, version=version)
        assert len(read) == ROWS and read.loc[0, "features"] == items[0]["features"]
        assert read.loc[0, "prediction"] == items[0]["prediction"]
        later = live_log.read(url, since=live_log.parse_since(items[100]["time"]))
        assert len(later) == ROWS - 100
        assert live_log.read(url, version=version + 5).empty
        assert len(live_log.read(url, model_name=MODEL)) == ROWS and live_log.read(url, model_name="another-model").empty
        result = drift.compare(profile_of(store, version, tmp_path), read, version, 0.2)
        assert result.drifted == []
    finally:
        with pg_admin("test") as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_since_takes_iso_times_and_spans():
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert live_log.parse_since("24h", now) == datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert live_log.parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert live_log.parse_since("2026-12-01T08:00:00Z", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert live_log.parse_since("2026-12-01T09:00+01:00", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)  # an offset: converted
    assert live_log.parse_since("2026-12-01T08:00", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)  # no zone: UTC
    assert live_log.parse_since("90m", now) == datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    from tand.errors import ConfigError

    with pytest.raises(ConfigError, match="--since 'yesterday'"):
        live_log.parse_since("yesterday", now)


def test_a_postgresql_log_that_cannot_be_read_is_one_error_without_the_password():
    from tand.errors import ConfigError

    assert live_log.is_url("postgres://u@db/x") and live_log.is_url("postgresql+psycopg://u@db/x") and not live_log.is_url("logs/predictions")
    with pytest.raises(ConfigError, match=r"prediction log postgresql://logger:\*\*\*@127\.0\.0\.1:1/logs: cannot read table prediction_log") as caught:
        live_log.read("postgresql://logger:s3cret@127.0.0.1:1/logs")
    assert "s3cret" not in str(caught.value)


def test_numeric_bins_come_from_trainings_seeded_sample_and_every_category_seen_is_known():
    from tand.schema import Feature, FeatureSchema
    from tand.training.evaluate import Predictions
    from tand.training.fitting import SAMPLE_ROWS, bounded_sample

    rng = np.random.default_rng(1)
    rows = SAMPLE_ROWS + 10_000
    X = pd.DataFrame({"x": rng.exponential(size=rows), "city": rng.choice(["a", "b"], rows)})
    sampled, _ = bounded_sample(X, X["x"])
    rare = X.index.difference(sampled.index)[0]  # a row outside the sample
    X.loc[rare, "city"] = "only-once"
    schema = FeatureSchema((Feature("x", "numeric", "number"), Feature("city", "categorical", "string")), "regression", "y")
    built = profile.build(X, schema, Predictions(None, rng.normal(size=100), None, None))
    assert built["train_rows"] == rows
    assert built["features"]["x"] == profile.numeric_profile(sampled["x"]) != profile.numeric_profile(X["x"])
    assert built["features"]["city"]["known"] == ["a", "b", "only-once"]


def test_a_regression_profile_bins_the_predicted_numbers_and_compares_them():
    from tand.schema import Feature, FeatureSchema
    from tand.training.evaluate import Predictions

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=500), "grade": rng.integers(1, 4, 500)})
    X.loc[:49, "x"] = np.nan
    schema = FeatureSchema((Feature("x", "numeric", "number"), Feature("grade", "categorical", "integer")), "regression", "y")
    built = profile.build(X, schema, Predictions(None, rng.normal(10, 2, 200), None, None))
    assert built["prediction"]["kind"] == "numeric" and len(built["prediction"]["edges"]) == 9
    assert built["features"]["x"]["missing"] == pytest.approx(0.1) and built["features"]["grade"]["known"] == ["1", "2", "3"]
    live = pd.DataFrame({
        "time": pd.Timestamp.now(tz="UTC"),
        "features": [{"x": None if i < 30 else float(v), "grade": float(g)} for i, (v, g) in enumerate(zip(rng.normal(size=300), rng.integers(1, 4, 300)))],
        "prediction": rng.normal(14, 2, 300),
    })  # fmt: skip
    result = drift.compare(built, live, 1, 0.2)
    assert result.drifted == ["(prediction)"]  # the answers moved; the inputs did not (grade 2.0 is "2")
    x = next(s for s in result.features if s.name == "x")
    assert x.missing_reference == pytest.approx(0.1) and x.missing_live == pytest.approx(0.1) and x.psi < 0.2
    live["features"] = [{**f, "x": 0.0 if f["x"] is None else f["x"]} for f in live["features"]]
    assert "x" in drift.compare(built, live, 1, 0.2).drifted  # no missing value any more: a shift too


def test_an_excluded_feature_is_not_compared_and_a_bad_line_mid_file_is_named(tracked, tmp_path):
    store, root, frame, version = tracked
    items = entries(frame, shift=False, seed=8, version=version)
    for e in items:
        del e["features"][UNCHANGED]  # app.prediction_log.exclude leaves the key out
    result = drift.compare(profile_of(store, version, tmp_path), live_log.read(_written(tmp_path / "ex", items)), version, 0.2)
    assert result.not_logged == [UNCHANGED] and UNCHANGED not in [s.name for s in result.features] and result.drifted == []
    folder = tmp_path / "bad"
    write_jsonl(folder, items[:20])
    path = next(folder.glob("*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:5], "{not json\n", *lines[5:]]))
    with pytest.raises(Exception, match=rf"prediction log {re.escape(str(path))}, line 6: not a JSON entry; remove that line"):
        live_log.read(str(folder))


def _written(folder: Path, items: list[dict]) -> str:
    write_jsonl(folder, items)
    return str(folder)


def test_without_the_alias_the_version_is_the_one_the_entries_name(tracked):
    from tand.errors import ConfigError
    from tand.monitoring.live_checks import resolve_version

    store, root, frame, version = tracked
    one = pd.DataFrame({"model_version": [version] * 3})
    assert resolve_version(MODEL, "no-such-alias", None, one).version == version
    with pytest.raises(ConfigError, match=r"has no alias 'no-such-alias' and the log holds versions 1, 2; pass --version N"):
        resolve_version(MODEL, "no-such-alias", None, pd.DataFrame({"model_version": [1, 2]}))
    from cli.monitoring import card_target  # invoke model-card: the same lookup, without a log to fall back on
    from tand.errors import RegistryError

    run_id = store.client().get_model_version(MODEL, str(version)).run_id
    assert card_target(MODEL, "production", None) == card_target(MODEL, "no-such-alias", version) == (version, run_id)
    with pytest.raises(RegistryError, match=r"model 'drift-classifier' has no alias 'no-such-alias' in the registry; pass --version N"):
        card_target(MODEL, "no-such-alias", None)


def test_times_of_any_iso_precision_are_read_and_an_unreadable_file_or_bad_time_is_one_error():
    from tand.errors import DataError

    def entry(i: int, time: str) -> dict:
        return {"request_id": f"t{i}", "row": 0, "time": time, "model_name": MODEL, "model_version": 1,
                "features": {"x": i}, "prediction": "a", "probabilities": None, "latency_ms": 1.0}  # fmt: skip

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "log"
        write_jsonl(folder, [entry(0, "2026-12-03T10:00:00.123456Z"), entry(1, "2026-12-03T10:00:01Z"), entry(2, "2026-12-03T11:00:02+01:00")])
        table = pd.DataFrame([entry(3, "2026-12-03T10:00:03.5Z")])
        table["features"] = table["features"].map(json.dumps)
        table["time"] = pd.to_datetime(table["time"], utc=True)
        table.to_parquet(folder / "predictions-20261203T100000-2-1.parquet")
        read = live_log.read(str(folder))
        assert list(read["request_id"]) == ["t0", "t1", "t2", "t3"]  # oldest first: 11:00:02+01:00 is 10:00:02Z
        assert str(read["time"].dt.tz) == "UTC" and read["time"].iloc[2] == pd.Timestamp("2026-12-03T10:00:02Z")

        write_jsonl(folder, [entry(4, "yesterday")])
        with pytest.raises(DataError, match=r"an entry's time 'yesterday' is not an ISO 8601 time"):
            live_log.read(str(folder))

        timeless = Path(tmp) / "timeless"
        write_jsonl(timeless, [entry(5, "2026-12-03T10:00:00Z"), {k: v for k, v in entry(6, "").items() if k != "time"}])
        with pytest.raises(DataError, match=r"1 of 2 entries have no 'time'; every entry needs request_id, row, time"):
            live_log.read(str(timeless))

        other = Path(tmp) / "other"
        (other / "predictions-20261203T100000-1-1.jsonl").mkdir(parents=True)  # not a readable file
        with pytest.raises(DataError, match=r"predictions-20261203T100000-1-1.jsonl: cannot read it \(Is a directory\)"):
            live_log.read(str(other))


def test_a_log_of_another_version_only_is_named_in_the_error(tracked, tmp_path):
    from tand.config import parse_config
    from tand.errors import DataError
    from tand.monitoring.live_checks import check_drift

    store, root, frame, version = tracked
    items = [{**e, "model_version": version + 4} for e in entries(frame, shift=False, seed=9, version=version)]
    cfg = parse_config(json.loads((root / "config.json").read_text()))
    with pytest.raises(DataError, match=rf"only 0 logged rows of {MODEL} version {version} in .* \(the log also holds version {version + 4}: pass --version N"):
        check_drift(cfg, _written(tmp_path / "other", items))


def test_multiclass_a_constant_feature_an_all_missing_live_column_and_a_new_category():
    from tand.schema import Feature, FeatureSchema
    from tand.training.evaluate import Predictions

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"flat": np.full(400, 5.0), "level": rng.integers(1, 4, 400), "size": rng.normal(size=400)})
    schema = FeatureSchema(
        (Feature("flat", "numeric", "number"), Feature("level", "categorical", "integer"), Feature("size", "numeric", "number")),
        "classification", "y", classes=("low", "mid", "high"),
    )  # fmt: skip
    built = profile.build(X, schema, Predictions(None, rng.choice(["low", "mid", "high"], 200), None, None))
    assert built["features"]["flat"]["edges"] == [5.0] and built["features"]["flat"]["shares"] == [0.0, 1.0]
    same = pd.DataFrame({
        "time": pd.Timestamp.now(tz="UTC"),
        "features": [{"flat": 5.0, "level": int(v), "size": float(s)} for v, s in zip(rng.integers(1, 4, 300), rng.normal(size=300))],
        "prediction": rng.choice(["low", "mid", "high"], 300),
    })  # fmt: skip
    steady = drift.compare(built, same, 1, 0.2)
    assert steady.drifted == [] and {s.name: s.psi for s in steady.features}["flat"] == 0.0
    assert steady.prediction.bins == ["low", "mid", "high", "(other)", "(missing)"]

    moved = same.copy()
    moved["features"] = [{"flat": 5.0, "level": 7 if i % 2 else f["level"], "size": None} for i, f in enumerate(same["features"])]
    moved["prediction"] = ["high"] * 300
    result = drift.compare(built, moved, 1, 0.2)
    shifts = {s.name: s for s in result.features}
    assert shifts["level"].unseen == pytest.approx(0.5) and shifts["level"].drifted  # 7: never seen in training
    assert shifts["size"].missing_live == 1.0 and shifts["size"].drifted and np.isfinite(shifts["size"].psi)  # all missing
    assert not shifts["flat"].drifted and result.prediction.drifted
    assert set(result.drifted) == {"level", "size", "(prediction)"}
