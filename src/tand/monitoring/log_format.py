"""The prediction log's format: what the API writes (app/predict/log_sinks.py) and `invoke drift` and
`invoke evaluate-live` read back (tand.monitoring.live_log). One entry per answered row; no pandas here,
so the API imports it without the data stack."""

from __future__ import annotations

ENV_VAR = "PREDICTION_LOG"  # a folder or a postgresql:// URL; overrides app.prediction_log's path/url
COLUMNS = ("request_id", "row", "time", "model_name", "model_version", "features", "prediction", "probabilities", "latency_ms")
REQUIRED = ("request_id", "row", "time", "model_name", "model_version", "features")  # probabilities may be null
TABLE = "prediction_log"
CREATE_TABLE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    request_id text NOT NULL, row int NOT NULL, time timestamptz NOT NULL, model_name text NOT NULL,
    model_version int NOT NULL, features jsonb NOT NULL, prediction jsonb NOT NULL, probabilities jsonb,
    latency_ms double precision NOT NULL)"""
