"""Tasks that read what training wrote about a version: its model card."""

from __future__ import annotations

from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from cli.common import known_errors, load_env, whole_number

FORMATS = ("html", "md")


def card_target(name: str, alias: str, version: int | None) -> tuple[int, str]:
    """(version, run id) of `version`, or of the version `alias` points to."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tand.errors import RegistryError

    client = MlflowClient()
    try:
        found = client.get_model_version(name, str(version)) if version is not None else client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        which = f"version {version}" if version is not None else f"alias {alias!r}"
        raise RegistryError(f"model {name!r} has no {which} in the registry ({str(exc).splitlines()[0][:160]})") from None
    return int(found.version), found.run_id or ""


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
