"""Tasks that read what training wrote about a version: its model card, and its reference profile against live traffic."""

from __future__ import annotations

from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from cli.common import known_errors, load_env, whole_number

FORMATS = ("html", "md")


def card_target(name: str, alias: str, version: int | None) -> tuple[int, str]:
    """(version, run id) of `version`, or of the version `alias` points to."""
    from tand.errors import RegistryError
    from tand.monitoring.live_checks import find_version

    found = find_version(name, alias, version)
    if found is None:
        raise RegistryError(f"model {name!r} has no alias {alias!r} in the registry; pass --version N")
    return found.version, found.run_id


@task(
    help={
        "version": "Version whose card to write (default: the one the alias points to, mlflow.alias in the config).",
        "output": "File to write (default: model_card_v<VERSION>.<FORMAT> in the current folder).",
        "format": "html (one self-contained page, plots embedded) or md (Markdown; its plots link ../plots/ in the run).",
        "config": "Config file naming the model (default: config.json).",
    }
)
def model_card(c, version=None, output=None, format="html", config="config.json"):
    """Write a version's model card (what it predicts, data, training, test metrics with intervals, intended use) to a file."""
    if format not in FORMATS:
        raise Exit(f"error: --format {format!r}: choose html or md", code=1)
    number = whole_number("--version", version)
    load_env("train.env")
    with known_errors():
        from tand.config import load_config
        from tand.monitoring.model_card import read_card
        from tand.tracking import registry

        cfg = load_config(config)
        number, run_id = card_target(cfg.mlflow.model_name, cfg.mlflow.alias, number)
        text = read_card(registry.tracking_uri(), run_id, format)
    if text is None:
        raise Exit(f"error: version {number} of {cfg.mlflow.model_name} has no model card (trained before cards existed); train it again", code=1)
    target = Path(output or f"model_card_v{number}.{format}")
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise Exit(f"error: cannot write {target}: {exc.strerror}", code=1) from None
    print(f"wrote {target} (model card of {cfg.mlflow.model_name} version {number}, run {run_id})")


@task(
    help={
        "log": "Prediction log to read: a folder (JSONL or Parquet files) or a postgresql:// URL "
        "(default: PREDICTION_LOG, else app.prediction_log in the config).",
        "since": "Only entries from this time on: ISO 8601 (2026-12-01, 2026-12-01T08:00Z, 2026-12-01T09:00+01:00; UTC when "
        "it names no zone) or a span back from now (30m, 24h, 7d, 2w).",
        "version": "Version to check (default: the one the alias serves, mlflow.alias; else the one the log's entries name).",
        "config": "Config file (default: config.json): model name, alias, monitor.psi_threshold and min_rows.",
    }
)
def drift(c, log=None, since=None, version=None, config="config.json"):
    """Compare logged requests with the served version's training profile (PSI per feature); exit 2 when one drifted."""

    number = whole_number("--version", version)
    load_env("train.env")
    with known_errors():
        from tand.config import load_config
        from tand.monitoring import live_checks, live_log

        cfg = load_config(config)
        source = live_log.source_from(log, cfg.app.prediction_log)
        checked = live_checks.check_drift(cfg, source, live_log.parse_since(since), number)
    result, target = checked.result, checked.target
    print(f"drift: {target.model_name} version {target.version}, {result.rows:,} logged rows ({result.first} to {result.last})")
    for shift in [*result.features, result.prediction]:
        notes = [f"missing {shift.missing_reference:.1%} -> {shift.missing_live:.1%}"] if shift.missing_reference or shift.missing_live else []
        notes += [f"unseen values {shift.unseen:.1%}"] if shift.unseen else []
        mark = "DRIFTED" if shift.drifted else ""
        print(f"  {shift.name:<28} PSI {shift.psi:7.3f}  {mark:<7}  {', '.join(notes)}".rstrip())
    if result.not_logged:
        print(f"  not in the log (app.prediction_log.exclude), not compared: {', '.join(result.not_logged)}")
    print(f"report: {checked.artifact_path}/report.html in run {target.run_id}")
    if result.drifted:
        raise Exit(f"drifted (PSI > {result.threshold:g}): {', '.join(result.drifted)}", code=2)
    print(f"no drift: every PSI is at most {result.threshold:g}")


@task(
    help={
        "outcomes": "CSV or Parquet file of outcomes that arrived later: request_id, row (optional, 0 = a request's first row) and the actual label.",
        "label_column": "Column of the outcomes holding the actual label (default: train.labels_column).",
        "log": "Prediction log to read: a folder or a postgresql:// URL (default: PREDICTION_LOG, else app.prediction_log).",
        "since": "Only log entries from this time on: ISO 8601 or a span back from now (30m, 24h, 7d).",
        "version": "Version to evaluate (default: the one the alias serves, mlflow.alias).",
        "config": "Config file (default: config.json).",
    }
)
def evaluate_live(c, outcomes, label_column=None, log=None, since=None, version=None, config="config.json"):
    """Join later outcomes with the prediction log and log the live metrics (live_<metric>) to the version's run."""

    number = whole_number("--version", version)
    load_env("train.env")
    with known_errors():
        from tand.config import load_config
        from tand.monitoring import live_checks, live_log

        cfg = load_config(config)
        source = live_log.source_from(log, cfg.app.prediction_log)
        done = live_checks.evaluate_live(cfg, source, outcomes, label_column, number, live_log.parse_since(since))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in done.metrics.items() if "_" not in k or k in ("balanced_accuracy", "roc_auc", "log_loss", "average_precision"))
    print(
        f"evaluate-live: {done.target.model_name} version {done.target.version}: {done.matched:,} outcomes matched, "
        f"{done.unmatched:,} unmatched; {shown}; logged as live_<metric> to run {done.target.run_id}"
    )
