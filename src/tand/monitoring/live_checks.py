"""`invoke drift` and `invoke evaluate-live` against a registered version: each one function the task calls.

`check_drift`: the version (given, or the one the alias serves, or the one the log's entries name), its
reference profile from its run, the log's entries of that version, the comparison (tand.monitoring.drift),
and the report and PSI values logged to that run (drift/<time>/report.html and drift.json; metrics
drift_psi_<feature>). `evaluate_live`: outcomes that arrived later (request id, row, actual label) joined
with the log, the training's own metrics (tand.training.evaluate) computed on them and logged to the
version's run as live_<metric>.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tand.errors import ConfigError, DataError, RegistryError
from tand.monitoring import drift, live_log
from tand.monitoring.profile import PROFILE_FILE
from tand.tracking.stores import redact

DRIFT_DIR = "drift"
SCHEMA_FILE = "feature_schema.json"


@dataclass
class Target:
    model_name: str
    version: int
    run_id: str


@dataclass
class DriftCheck:
    result: drift.DriftResult
    target: Target
    artifact_path: str  # where in the run the report went


@dataclass
class LiveEvaluation:
    target: Target
    matched: int
    unmatched: int
    metrics: dict[str, float]


def find_version(model_name: str, alias: str, version: int | None) -> Target | None:
    """`version`, or the version `alias` points to (None when no version holds the alias)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tand.errors import NOT_FOUND_CODES

    client = MlflowClient()
    try:
        found = client.get_model_version(model_name, str(version)) if version is not None else client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if version is None and exc.error_code in NOT_FOUND_CODES:
            return None
        which = f"version {version}" if version is not None else f"alias {alias!r}"
        raise RegistryError(f"model {model_name!r} has no {which} in the registry ({str(exc).splitlines()[0][:160]})") from None
    return Target(model_name, int(found.version), found.run_id or "")


def resolve_version(model_name: str, alias: str, version: int | None, entries: pd.DataFrame) -> Target:
    """`version`, else the one `alias` serves, else the one version the log's entries name."""
    target = find_version(model_name, alias, version)
    if target is not None:
        return target
    seen = sorted(set(entries["model_version"])) if len(entries) else []
    if len(seen) != 1:
        found = f"the log holds versions {', '.join(map(str, seen))}" if seen else "the log holds no entries"
        raise ConfigError(f"model {model_name!r} has no alias {alias!r} and {found}; pass --version N")
    return find_version(model_name, alias, int(seen[0]))


def _run_json(target: Target, name: str) -> dict | None:
    """A JSON artifact of the version's run, None when the run has none."""
    from tand.tracking.runs import read_run_text

    text = read_run_text(target.run_id, name) if target.run_id else None
    return None if text is None else json.loads(text)


def _entries(source: str, since, model_name: str, alias: str, version: int | None) -> tuple[Target, pd.DataFrame, str]:
    """(the version, its entries, a hint naming the other versions the log holds when it holds them)."""
    everything = live_log.read(source, since, version, model_name)
    target = resolve_version(model_name, alias, version, everything)
    mine = everything["model_version"] == target.version
    others = sorted(set(everything.loc[~mine, "model_version"]))
    hint = f" (the log also holds version {', '.join(map(str, others))}: pass --version N for one)" if others else ""
    return target, everything[mine].reset_index(drop=True), hint


def _where(source: str, since) -> str:
    return redact(source) + (f" since {since.strftime('%Y-%m-%dT%H:%M:%SZ')}" if since is not None else "")


def check_drift(cfg, source: str, since=None, version: int | None = None) -> DriftCheck:
    """Compare the log's entries of the served (or given) version with its reference profile; log the report."""
    target, entries, hint = _entries(source, since, cfg.mlflow.model_name, cfg.mlflow.alias, version)
    profile = _run_json(target, PROFILE_FILE)
    if profile is None:
        raise RegistryError(
            f"version {target.version} of {target.model_name} has no reference profile ({PROFILE_FILE}; it was trained "
            "before profiles were written): train it again, or pass --version N of a newer one"
        )
    if len(entries) < cfg.monitor.min_rows:
        raise DataError(
            f"only {len(entries)} logged rows of {target.model_name} version {target.version} in {_where(source, since)}{hint}; "
            f"drift needs at least {cfg.monitor.min_rows} (monitor.min_rows): wait for more traffic or widen --since"
        )
    result = drift.compare(profile, entries, target.version, cfg.monitor.psi_threshold)
    return DriftCheck(result, target, _log_drift(result, target))


def _log_drift(result: drift.DriftResult, target: Target) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tand.monitoring.drift_report import to_html
    from tand.training.evaluate import metric_key

    now = datetime.now(UTC)
    path = f"{DRIFT_DIR}/{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    stamp = int(time.time() * 1000)
    metrics = [Metric(f"drift_psi_{metric_key(s.name)}", s.psi, stamp, 0) for s in result.features]
    metrics += [
        Metric("drift_psi_prediction", result.prediction.psi, stamp, 0),
        Metric("drift_rows", float(result.rows), stamp, 0),
        Metric("drift_drifted", float(len(result.drifted)), stamp, 0),
    ]
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as folder:
        page = to_html(result, target.model_name, target.run_id, now.strftime("%Y-%m-%d %H:%M UTC"))
        (Path(folder) / "report.html").write_text(page, encoding="utf-8")
        (Path(folder) / "drift.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        client.log_artifacts(target.run_id, folder, path)
    client.log_batch(target.run_id, metrics=metrics)
    return path


def read_outcomes(path: str | Path, label_column: str) -> pd.DataFrame:
    """request_id (text), row (optional), and the label column of a CSV or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--outcomes {path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={"request_id": str}, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"--outcomes {path}: cannot read it ({str(exc).splitlines()[0][:160]})") from None
    missing = [c for c in ("request_id", label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"--outcomes {path}: no column {', '.join(map(repr, missing))}; columns are: {', '.join(map(str, frame.columns))}"
            + (" (name the label's with --label-column)" if label_column in missing else "")
        )
    keep = ["request_id", *(["row"] if "row" in frame.columns else []), label_column]
    frame = frame[keep].dropna(subset=[label_column])
    frame["request_id"] = frame["request_id"].astype(str)
    if "row" in frame.columns:
        rows = pd.to_numeric(frame["row"], errors="coerce")
        wrong = (rows.isna() & frame["row"].notna()) | (rows.notna() & ((rows % 1 != 0) | (rows < 0)))
        if wrong.any():
            raise DataError(
                f"--outcomes {path}: data row {_line(frame, wrong)} has row {frame['row'][wrong].tolist()[0]!r}; "
                "give the row within its request as a whole number (0 for the first)"
            )
        frame["row"] = rows.fillna(0).astype(int)  # an empty row: the request's only (first) row
    keys = [c for c in ("request_id", "row") if c in frame.columns]
    frame = frame.drop_duplicates(subset=[*keys, label_column])  # the same outcome twice is one outcome
    if "row" in frame.columns:  # without it, _join decides (a request of several rows needs it)
        _refuse_conflicts(frame, keys, f"--outcomes {path}")
    return frame


def _refuse_conflicts(frame: pd.DataFrame, keys: list[str], where: str) -> None:
    twice = frame.duplicated(subset=keys, keep=False)
    if twice.any():
        which = ", ".join(f"{k} {frame.loc[twice, k].tolist()[0]!r}" for k in keys)
        raise DataError(
            f"{where}: {int(frame[twice].duplicated(subset=keys).sum())} row(s) have two different labels "
            f"(first: {which}, data row {_line(frame, twice)}); keep one label per request row"
        )


def _line(frame: pd.DataFrame, mask: pd.Series) -> int:
    """The file's data row (1 = the first) of the first row of `frame` where `mask` holds."""
    return int(frame.index[mask.to_numpy()][0]) + 1


def _join(outcomes: pd.DataFrame, entries: pd.DataFrame) -> pd.DataFrame:
    keys = ["request_id", "row"] if "row" in outcomes.columns else ["request_id"]
    logged = entries.drop_duplicates(subset=["request_id", "row"], keep="last")
    if keys == ["request_id"]:
        several = logged["request_id"].duplicated(keep=False)
        batch_ids = set(logged.loc[several, "request_id"]) & set(outcomes["request_id"])
        if batch_ids:
            raise DataError(
                f"--outcomes: {len(batch_ids)} request(s) answered several rows (e.g. {sorted(batch_ids)[0]!r}); "
                "add a `row` column (0 for the first row of a request) to say which row each label is for"
            )
        _refuse_conflicts(outcomes, keys, "--outcomes")
    return outcomes.merge(logged, on=keys, how="inner")


def evaluate_live(cfg, source: str, outcomes_path: str | Path, label_column: str | None = None, version: int | None = None,
                  since=None) -> LiveEvaluation:  # fmt: skip
    from tand.schema import FeatureSchema

    label = label_column or cfg.train.labels_column
    outcomes = read_outcomes(outcomes_path, label)
    target, entries, hint = _entries(source, since, cfg.mlflow.model_name, cfg.mlflow.alias, version)
    schema_dict = _run_json(target, SCHEMA_FILE)
    if schema_dict is None:
        raise RegistryError(f"version {target.version} of {target.model_name}: its run has no {SCHEMA_FILE}; was it trained by this template?")
    schema = FeatureSchema.from_dict(schema_dict)
    joined = _join(outcomes, entries)
    if joined.empty:
        raise DataError(
            f"none of the {len(outcomes)} outcomes matches a logged request of {target.model_name} version {target.version} "
            f"in {_where(source, since)}{hint}; check the request ids (and --version)"
        )
    metrics = _live_metrics(joined, label, schema, cfg.train)
    _log_live(target, metrics, len(joined))
    return LiveEvaluation(target, len(joined), len(outcomes) - len(joined), metrics)


def _live_metrics(joined: pd.DataFrame, label: str, schema, train_config) -> dict[str, float]:
    from tand.training.evaluate import Predictions, compute_metrics

    if schema.task == "regression":
        y_true = pd.to_numeric(joined[label].reset_index(drop=True), errors="coerce")
        if not np.isfinite(y_true.to_numpy(dtype=float)).all():
            bad = joined[label].reset_index(drop=True)[~np.isfinite(y_true.to_numpy(dtype=float))].iloc[0]
            raise DataError(f"--outcomes: label {bad!r} in {label!r} is not a number; a regression's outcomes are numbers")
        return compute_metrics(Predictions(y_true.to_numpy(dtype=float), pd.to_numeric(joined["prediction"]).to_numpy(dtype=float), None, None))
    coded = bool(train_config.labels) and tuple(train_config.labels) == tuple(schema.classes)
    y_true = actual_classes(joined[label].reset_index(drop=True), schema.classes, label, coded)
    y_pred = joined["prediction"].astype(str).to_numpy()
    probabilities = list(joined["probabilities"])
    if any(not isinstance(p, dict) for p in probabilities):  # a model that answers labels only: the label metrics
        return compute_metrics(Predictions(y_true.to_numpy(dtype=str), y_pred, None, schema.classes, schema.positive_class))
    proba = np.array([[float(p.get(c, 0.0)) for c in schema.classes] for p in probabilities])
    proba /= np.where(proba.sum(axis=1, keepdims=True) > 0, proba.sum(axis=1, keepdims=True), 1.0)  # a float32 model's sum is 1 ± 1e-7
    return compute_metrics(Predictions(y_true.to_numpy(dtype=str), y_pred, proba, schema.classes, schema.positive_class))


def actual_classes(values: pd.Series, classes, label: str, coded: bool) -> pd.Series:
    """The outcomes' labels as the version's class names: the names themselves (3.0 read as "3"), or, when
    `coded` (train.labels names the classes), integer codes 0..k-1 in that order, as in the training data.
    A label that is neither: one error naming it and the classes."""
    from tand.monitoring.profile import as_text

    classes = tuple(classes)
    text = as_text(values)
    if text.isin(classes).all():
        return text
    codes = pd.to_numeric(values, errors="coerce")
    is_code = (codes % 1 == 0) & codes.between(0, len(classes) - 1) if coded else pd.Series(False, index=values.index)
    if is_code.all():
        return codes.astype(int).map(dict(enumerate(classes)))
    bad = values[~is_code if text.isin(classes).sum() == 0 else ~text.isin(classes)].tolist()[0]
    raise DataError(
        f"--outcomes: label {bad!r} in {label!r} is not a class of this version; give one of "
        f"{', '.join(classes)}" + (f" (or its number, 0..{len(classes) - 1}, in that order)" if coded else "")
    )


def _log_live(target: Target, metrics: dict[str, float], rows: int) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    logged = [Metric(f"live_{k}", float(v), stamp, 0) for k, v in metrics.items() if np.isfinite(v)]
    logged.append(Metric("live_rows", float(rows), stamp, 0))
    MlflowClient().log_batch(target.run_id, metrics=logged)
