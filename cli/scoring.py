"""`invoke predict`: score a file with a registered version, as the API would answer each row."""

from __future__ import annotations

import os
import time
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from cli.common import known_errors, load_env, whole_number


@task(
    help={
        "input": "CSV or Parquet file of rows to score (.parquet / .pq: Parquet; anything else: CSV).",
        "output": "File to write the answers to: CSV, or Parquet by its extension. Refused rows (number, column, reason) go to "
        "<its name without extension>.errors.csv beside it (scored.csv: scored.errors.csv).",
        "version": "Version to score with (default: the one the alias points to).",
        "alias": "Alias whose version scores (default: mlflow.alias in the config, production).",
        "keep": "Comma-separated input columns copied to the output beside each answer (ids), e.g. customer_id,date.",
        "chunk_rows": "Rows read, validated and predicted at a time (default 20000): memory stays bounded whatever the file's size.",
        "config": "Config file naming the model (default: config.json).",
        "quiet": "No progress bar.",
    }
)
def predict(c, input, output, version=None, alias=None, keep=None, chunk_rows=20000, config="config.json", quiet=False):
    """Score a CSV or Parquet file with a registered version, through the API's validation and predictor."""
    load_env("app.env")
    if version is not None and alias is not None:
        raise Exit("error: give --version or --alias, not both", code=1)
    version = whole_number("--version", version)
    chunk_rows = whole_number("--chunk-rows", chunk_rows)
    if chunk_rows < 1:
        raise Exit("error: --chunk-rows must be at least 1", code=1)
    from app.predict.scoring import score_file
    from tand.config import DEFAULT_TRACKING_URI, load_config
    from tand.tracking.lookup import lookup_alias

    started = time.perf_counter()
    with known_errors():
        cfg = load_config(Path(config))
        name = os.environ.get("MODEL_NAME") or cfg.mlflow.model_name
        uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        alias = (alias or os.environ.get("MODEL_ALIAS") or cfg.mlflow.alias).strip()
        if version is None:
            version = lookup_alias(uri, name, alias).version
        schema, predictor = load_version(uri, name, version)
        columns = [k.strip() for k in (keep or "").split(",") if k.strip()]
        summary = score_file(Path(input), Path(output), schema, predictor, name, version, columns, chunk_rows, progress=not quiet)
    seconds = time.perf_counter() - started
    rate = summary.rows / summary.seconds if summary.seconds > 0 else 0.0
    refused = f", {summary.refused} refused (their row numbers and reasons: {summary.errors_path})" if summary.refused else ""
    print(
        f"scored {summary.scored} of {summary.rows} rows with {name} version {version} into {output}{refused}; "
        f"{seconds:.1f} s in all, {rate:,.0f} rows/s scoring"
    )
    if summary.scored == 0:
        raise Exit(f"error: no row of {input} could be scored" + (f"; see {summary.errors_path}" if summary.errors_path else ""), code=1)


def load_version(uri: str, name: str, version: int):
    """(schema, predictor) as the API loads the version (app.store.serving.load_version: the compiled file logged
    with it, else MLflow), with one BLAS thread, as in each API worker: the comparison with the API is per core."""
    from threadpoolctl import threadpool_limits

    from app.store import serving
    from tand.tracking.lookup import AliasTarget

    loaded = serving.load_version(uri, name, AliasTarget(version, ""))
    threadpool_limits(limits=1, user_api="blas")
    return loaded.schema, loaded.predictor
