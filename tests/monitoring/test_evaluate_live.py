"""invoke evaluate-live: outcomes that arrived later joined with the prediction log; the template's own
metrics on them logged to the version's run as live_<metric>."""

from __future__ import annotations

import pandas as pd
import pytest
from test_drift import MODEL, ROWS, entries, invoke, tracked, trained, write_jsonl  # noqa: F401 - fixtures too

from tand.config import parse_config
from tand.errors import DataError
from tand.monitoring import live_checks
from tand.training.evaluate import Predictions, compute_metrics

SEED = 7


def logged(tracked, folder):  # noqa: F811
    """ROWS logged entries (requests of 10 rows) and the actual labels of their rows (0 malignant, 1 benign)."""
    store, root, frame, version = tracked
    items = entries(frame, shift=False, seed=SEED, version=version)
    write_jsonl(folder, items)
    actual = frame["diagnosis"].sample(ROWS, random_state=SEED, replace=True).to_numpy()  # the rows `entries` drew
    return items, actual


def outcomes_file(path, items, actual, keep: int, unknown: int, with_row: bool = True):
    rows = [{"request_id": e["request_id"], "row": e["row"], "diagnosis": int(a)} for e, a in zip(items[:keep], actual[:keep])]
    rows += [{"request_id": f"never-logged-{i}", "row": 0, "diagnosis": 1} for i in range(unknown)]
    frame = pd.DataFrame(rows)
    (frame if with_row else frame.drop(columns=["row"])).to_csv(path, index=False)
    return path


def expected(items, actual, keep: int) -> dict:
    names = ["malignant", "benign"]
    p = Predictions(
        pd.Series(actual[:keep]).map(dict(enumerate(names))).to_numpy(dtype=str),
        pd.Series([e["prediction"] for e in items[:keep]]).to_numpy(dtype=str),
        pd.DataFrame([e["probabilities"] for e in items[:keep]])[names].to_numpy(),
        tuple(names),
        "malignant",
    )
    return compute_metrics(p)


def test_outcomes_join_the_log_and_the_live_metrics_go_to_the_run(tracked, tmp_path):  # noqa: F811
    store, root, frame, version = tracked
    items, actual = logged(tracked, tmp_path / "log")
    path = outcomes_file(tmp_path / "outcomes.csv", items, actual, keep=250, unknown=10)
    cfg = parse_config(__import__("json").loads((root / "config.json").read_text()))
    done = live_checks.evaluate_live(cfg, str(tmp_path / "log"), path)
    assert (done.matched, done.unmatched, done.target.version) == (250, 10, version)
    want = expected(items, actual, 250)
    assert done.metrics["accuracy"] == pytest.approx(want["accuracy"]) and done.metrics["roc_auc"] == pytest.approx(want["roc_auc"])
    metrics = store.client().get_run(done.target.run_id).data.metrics
    assert metrics["live_accuracy"] == pytest.approx(want["accuracy"]) and metrics["live_rows"] == 250
    assert metrics["live_log_loss"] == pytest.approx(want["log_loss"])


def test_outcomes_of_batch_requests_need_the_row(tracked, tmp_path):  # noqa: F811
    store, root, frame, version = tracked
    items, actual = logged(tracked, tmp_path / "log")
    path = outcomes_file(tmp_path / "outcomes.csv", items, actual, keep=50, unknown=0, with_row=False)
    cfg = parse_config(__import__("json").loads((root / "config.json").read_text()))
    with pytest.raises(DataError, match=r"add a `row` column"):
        live_checks.evaluate_live(cfg, str(tmp_path / "log"), path)


@pytest.mark.slow  # invoke as a subprocess
def test_invoke_evaluate_live_prints_the_counts_and_errors_are_one_line(tracked, tmp_path):  # noqa: F811
    store, root, frame, version = tracked
    items, actual = logged(tracked, tmp_path / "log")
    path = outcomes_file(tmp_path / "outcomes.csv", items, actual, keep=120, unknown=3)
    pd.read_csv(path).rename(columns={"diagnosis": "actual"}).to_parquet(tmp_path / "outcomes.parquet")
    done = invoke(root, store, "evaluate-live", "--outcomes", str(tmp_path / "outcomes.parquet"), "--label-column", "actual",
                  "--log", str(tmp_path / "log"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith(f"evaluate-live: {MODEL} version {version}: 120 outcomes matched, 3 unmatched;")
    assert f"accuracy {expected(items, actual, 120)['accuracy']:.4f}" in line
    wrong = invoke(root, store, "evaluate-live", "--outcomes", str(path), "--label-column", "label", "--log", str(tmp_path / "log"))
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines() == [
        f"error: --outcomes {path}: no column 'label'; columns are: request_id, row, diagnosis (name the label's with --label-column)"
    ]
    none = invoke(root, store, "evaluate-live", "--outcomes", str(outcomes_file(tmp_path / "none.csv", items, actual, 0, 5)),
                  "--log", str(tmp_path / "log"))  # fmt: skip
    assert none.returncode == 1 and none.stderr.startswith("error: none of the 5 outcomes matches a logged request")


def test_regression_outcomes_get_the_regression_metrics():
    from tand.schema import Feature, FeatureSchema

    cfg = parse_config({"train": {"labels_column": "price", "task": "regression", "model": "ridge"}})
    schema = FeatureSchema((Feature("x", "numeric", "number"),), "regression", "price")
    joined = pd.DataFrame({"price": ["10", "20", "30"], "prediction": [11.0, 19.0, 33.0], "probabilities": [None] * 3})
    got = live_checks._live_metrics(joined, "price", schema, cfg.train)
    assert got["mae"] == pytest.approx(5 / 3) and got["rmse"] == pytest.approx((11 / 3) ** 0.5) and "r2" in got


@pytest.mark.slow  # a live uvicorn and invoke as a subprocess
def test_outcomes_of_requests_answered_by_the_live_server(tracked, tmp_path):  # noqa: F811
    import httpx

    from app_support import auth, server_env, start_server, wait_until
    from test_drift import logged_lines, traffic

    store, root, frame, version = tracked
    folder = tmp_path / "log"
    server = start_server(tmp_path, server_env(store.uri, root / "config.json", tmp_path / "cache", PREDICTION_LOG=str(folder)))
    rows, actual = traffic(frame, shift=False, seed=SEED), frame["diagnosis"].sample(ROWS, random_state=SEED, replace=True).to_numpy()
    outcomes, answers = [], []
    try:
        for start in range(0, ROWS, 25):
            answer = httpx.post(f"{server.url}/predict", json=rows[start : start + 25], headers=auth(), timeout=30)
            assert answer.status_code == 200, answer.text
            rid = answer.headers["x-request-id"]
            answers += answer.json()["predictions"]
            outcomes += [{"request_id": rid, "row": i, "diagnosis": int(a)} for i, a in enumerate(actual[start : start + 25])]
        wait_until(lambda: logged_lines(folder) == ROWS, 30, f"{ROWS} logged rows")
    finally:
        server.stop()
    pd.DataFrame(outcomes[:280]).to_csv(tmp_path / "outcomes.csv", index=False)
    done = invoke(root, store, "evaluate-live", "--outcomes", str(tmp_path / "outcomes.csv"), PREDICTION_LOG=str(folder))
    assert done.returncode == 0, done.stderr
    assert f"version {version}: 280 outcomes matched, 0 unmatched;" in done.stdout
    names = ["malignant", "benign"]
    truth = [names[a] for a in actual[:280]]
    accuracy = sum(a["prediction"] == t for a, t in zip(answers, truth)) / 280
    metrics = store.client().get_run(store.client().get_model_version(MODEL, str(version)).run_id).data.metrics
    assert metrics["live_accuracy"] == pytest.approx(accuracy) and metrics["live_rows"] == 280


def test_outcome_labels_must_be_the_versions_classes_or_their_codes():
    names = ("malignant", "benign")
    assert list(live_checks.actual_classes(pd.Series([0, 1, 1]), names, "y", coded=True)) == ["malignant", "benign", "benign"]
    assert list(live_checks.actual_classes(pd.Series(["benign", "malignant"]), names, "y", coded=True)) == ["benign", "malignant"]
    with pytest.raises(DataError, match=r"label 'unknown' in 'y' is not a class of this version; give one of malignant, benign \(or its number, 0..1"):
        live_checks.actual_classes(pd.Series(["benign", "unknown"]), names, "y", coded=True)
    with pytest.raises(DataError, match=r"label 2 in 'y' is not a class"):
        live_checks.actual_classes(pd.Series([0, 2]), names, "y", coded=True)
    with pytest.raises(DataError, match=r"label 0 in 'y' is not a class of this version; give one of malignant, benign$"):
        live_checks.actual_classes(pd.Series([0, 1]), names, "y", coded=False)  # no train.labels: 0 is no name
    # Integer classes are their own names (3.0 is "3"), never codes into the list.
    assert list(live_checks.actual_classes(pd.Series([1.0, 3.0]), ("1", "2", "3"), "y", coded=False)) == ["1", "3"]
    with pytest.raises(DataError, match=r"label 0 in 'y'"):
        live_checks.actual_classes(pd.Series([0, 0]), ("1", "2", "3"), "y", coded=False)


def test_conflicting_duplicate_outcomes_and_a_bad_row_number_are_refused(tmp_path):
    frame = pd.DataFrame({"request_id": ["a", "a", "b", "b", "c"], "row": [0, 0, 0, 1, 0], "y": [1, 1, 0, 1, 0]})
    frame.to_csv(tmp_path / "same.csv", index=False)
    assert len(live_checks.read_outcomes(tmp_path / "same.csv", "y")) == 4  # the same outcome twice counts once
    frame.loc[[0, 1], "row"] = None
    frame.to_csv(tmp_path / "empty_row.csv", index=False)
    assert live_checks.read_outcomes(tmp_path / "empty_row.csv", "y")["row"].tolist() == [0, 0, 1, 0]  # empty: row 0
    frame.loc[[0, 1], "row"] = 0
    frame.loc[4, ["request_id", "row"]] = ["b", 1]
    frame.to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(DataError, match=r"1 row\(s\) have two different labels \(first: request_id 'b', row 1, data row 4\)"):
        live_checks.read_outcomes(tmp_path / "twice.csv", "y")
    frame["row"] = frame["row"].astype(object)
    frame.loc[2, "row"] = "first"
    frame.to_csv(tmp_path / "row.csv", index=False)
    with pytest.raises(DataError, match=r"data row 3 has row 'first'; give the row within its request as a whole number"):
        live_checks.read_outcomes(tmp_path / "row.csv", "y")


def test_a_regression_label_that_is_no_number_is_named():
    from tand.schema import Feature, FeatureSchema

    cfg = parse_config({"train": {"labels_column": "price", "task": "regression", "model": "ridge"}})
    schema = FeatureSchema((Feature("x", "numeric", "number"),), "regression", "price")
    joined = pd.DataFrame({"price": ["10", "n/a"], "prediction": [11.0, 19.0], "probabilities": [None] * 2})
    with pytest.raises(DataError, match=r"label 'n/a' in 'price' is not a number"):
        live_checks._live_metrics(joined, "price", schema, cfg.train)


def test_without_row_two_labels_for_one_single_row_request_are_refused():
    outcomes = pd.DataFrame({"request_id": ["a", "a", "b"], "y": [1, 0, 1]})
    logged = pd.DataFrame({"request_id": ["a", "b"], "row": [0, 0]})
    with pytest.raises(DataError, match=r"--outcomes: 1 row\(s\) have two different labels \(first: request_id 'a', data row 1\)"):
        live_checks._join(outcomes, logged)


def test_a_float32_models_probabilities_give_no_sum_warning():
    import warnings

    from tand.schema import Feature, FeatureSchema

    cfg = parse_config({"train": {"labels_column": "y", "labels": ["no", "yes"]}})
    schema = FeatureSchema((Feature("x", "numeric", "number"),), "classification", "y", classes=("no", "yes"), positive_class="yes")
    p = [0.00004788815931533463, 0.9999520778656006]  # as a float32 MLP answers: the sum is 1 + 3e-8
    joined = pd.DataFrame({"y": [1, 0, 1], "prediction": ["yes", "yes", "no"],
                           "probabilities": [dict(zip(("no", "yes"), p)), dict(zip(("no", "yes"), p)), dict(zip(("no", "yes"), p[::-1]))]})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = live_checks._live_metrics(joined, "y", schema, cfg.train)
    assert got["accuracy"] == pytest.approx(1 / 3)


def test_a_model_that_logs_labels_only_gets_the_label_metrics():
    from tand.schema import Feature, FeatureSchema

    cfg = parse_config({"train": {"labels_column": "y", "labels": ["no", "yes"]}})
    schema = FeatureSchema((Feature("x", "numeric", "number"),), "classification", "y", classes=("no", "yes"), positive_class="yes")
    joined = pd.DataFrame({"y": ["yes", "yes", "no", "no"], "prediction": ["yes", "no", "no", "no"], "probabilities": [None] * 4})
    got = live_checks._live_metrics(joined, "y", schema, cfg.train)
    assert got["accuracy"] == pytest.approx(3 / 4) and got["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["recall_yes"] == pytest.approx(1 / 2) and got["precision_yes"] == 1.0 and got["precision_no"] == pytest.approx(2 / 3)
    assert not {"log_loss", "roc_auc", "average_precision", "average_precision_yes"} & set(got)  # no probabilities to rank by
