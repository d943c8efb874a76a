"""Moving a registry alias on purpose: promote a version, roll back, list versions.

The registry keeps the history, so any machine can roll back: when the alias moves,
`previous-<alias>` is pointed at the version that held it. Rolling back swaps the two
aliases (a second rollback undoes the first). Both aliases move in one step, and only if
neither moved since they were read: on a database store one transaction with compare-and-set
(tand.tracking.sql.move_aliases), so of two racing promotes exactly one succeeds and the other
is refused with one line, and a process killed mid-way changes nothing. On a tracking server
(HTTP) MLflow offers no such step: see _move_with_client. An alias only ever points at a registered
version in status READY, and a version is registered after its run has logged every
artifact: a promotion racing a training run lands on a complete version or is refused.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tand.tracking import registry, sql
from tand.tracking.stores import redact
from tand.errors import NOT_FOUND_CODES, RegistryError
from tand.schema import FeatureSchema



@dataclass(frozen=True)
class VersionInfo:
    version: int
    run_id: str
    status: str
    aliases: tuple[str, ...]
    created: datetime
    metrics: dict[str, float]
    framework: str = ""  # from the run's params: what `invoke models` shows to tell versions apart
    model: str = ""


@dataclass(frozen=True)
class Move:
    """One alias change: `old` is None when the alias pointed nowhere."""

    model_name: str
    alias: str
    old: VersionInfo | None
    new: VersionInfo
    changed: bool
    schema_note: str | None = None  # set when --force moved the alias across a schema change


def previous_alias(alias: str) -> str:
    return f"previous-{alias}"


def _registry_call(what: str, call, *args, **kwargs):
    """Run one MlflowClient call; a missing object or an unreachable store becomes one RegistryError line."""
    try:
        return call(*args, **kwargs)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
            raise RegistryError(f"{what} does not exist in {redact(registry.tracking_uri())}") from None
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.error_code
        raise RegistryError(
            f"registry at {redact(registry.tracking_uri())} failed on {what}: {first}"
        ) from None


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _versions(client: MlflowClient, name: str, run_id: str | None = None) -> list[ModelVersion]:
    where = f"name = {_quoted(name)}" + (f" and run_id = {_quoted(run_id)}" if run_id else "")
    found = _registry_call(f"the versions of model {name!r}", client.search_model_versions, where)
    return sorted(found, key=lambda mv: int(mv.version))


def _aliases_by_version(client: MlflowClient, name: str) -> dict[int, tuple[str, ...]]:
    model = _registry_call(f"registered model {name!r}", client.get_registered_model, name)
    by_version: dict[int, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(int(version), []).append(alias)
    return {version: tuple(sorted(aliases)) for version, aliases in by_version.items()}


def _info(client: MlflowClient, mv: ModelVersion, aliases: dict[int, tuple[str, ...]]) -> VersionInfo:
    metrics, params = {}, {}
    if mv.run_id:
        data = _registry_call(f"run {mv.run_id}", client.get_run, mv.run_id).data
        metrics, params = dict(data.metrics), data.params
    created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=timezone.utc)
    status = mv.status or "READY"
    framework = params.get("train.framework", "")
    # The MLP is the PyTorch framework's only model, and its config leaves `model` unset.
    model = params.get("train.model") or ("mlp" if framework == "pytorch" else "")
    number = int(mv.version)
    return VersionInfo(number, mv.run_id or "", status, aliases.get(number, ()), created, metrics, framework, model)


def list_versions(name: str) -> list[VersionInfo]:
    """Every version of the model, oldest first, with its aliases, run metrics and creation date."""
    registry.check_reachable()
    client = MlflowClient()
    versions = _versions(client, name)
    if not versions:
        raise RegistryError(
            f"model {name!r} has no versions in {redact(registry.tracking_uri())}; train one with `invoke train`"
        )
    aliases = _aliases_by_version(client, name)
    return [_info(client, mv, aliases) for mv in versions]


def _resolve(client: MlflowClient, name: str, version: int | None, run_id: str | None) -> ModelVersion:
    """The version to promote: by number, by the run that registered it, or else the newest ready one."""
    if version is not None:
        existing = [int(mv.version) for mv in _versions(client, name)]
        if version not in existing:
            known = ", ".join(map(str, existing)) or "none"
            raise RegistryError(f"model {name!r} has no version {version} (its versions: {known})")
        mv = _registry_call(f"version {version} of {name!r}", client.get_model_version, name, str(version))
    elif run_id is not None:
        found = _versions(client, name, run_id)
        if not found:
            run = _registry_call(f"run {run_id!r}", client.get_run, run_id)
            still = " yet: it is still running" if run.info.status == "RUNNING" else ""
            raise RegistryError(f"run {run_id} registered no version of model {name!r}{still}")
        if len(found) > 1:
            listed = ", ".join(mv.version for mv in found)
            raise RegistryError(
                f"run {run_id} registered several versions of {name!r} ({listed}); pick one with --version"
            )
        mv = found[0]
    else:
        ready = [mv for mv in _versions(client, name) if (mv.status or "READY") == "READY"]
        if not ready:
            raise RegistryError(f"model {name!r} has no ready version to promote; train one with `invoke train`")
        mv = ready[-1]
    if (mv.status or "READY") != "READY":
        raise RegistryError(
            f"model {name!r} version {mv.version} is {mv.status}, not READY; retry once its registration completes"
        )
    return mv


def version_schema(name: str, version: int) -> FeatureSchema:
    """The feature schema stored in the version's MLmodel metadata (downloads that one small file)."""
    with tempfile.TemporaryDirectory() as folder:
        path = _registry_call(
            f"the MLmodel file of {name!r} version {version}",
            mlflow.artifacts.download_artifacts,
            artifact_uri=f"models:/{name}/{version}/MLmodel",
            dst_path=folder,
        )
        return registry.read_schema(path)


def _difference(name: str, current: int, candidate: int, force: bool) -> str:
    try:
        return version_schema(name, current).describe_difference(version_schema(name, candidate))
    except RegistryError as exc:
        if not force:
            raise
        return f"not compared: {exc}"  # --force: a version without a readable schema may still be promoted


def promote(
    name: str, alias: str = "production", version: int | None = None, run_id: str | None = None, force: bool = False
) -> Move:
    """Point `alias` at a version; the version it leaves gets `previous-<alias>`."""
    if version is not None and run_id is not None:
        raise RegistryError("give --version or --run-id, not both")
    registry.check_reachable()
    client = MlflowClient()
    target = _resolve(client, name, version, run_id)
    current = registry.alias_version(name, alias)
    new_version = int(target.version)
    note = None
    if current is not None and current != new_version:
        difference = _difference(name, current, new_version, force)
        if difference and not force:
            raise RegistryError(
                f"version {new_version} takes different inputs than version {current} ('{alias}'): {difference}; "
                "clients would break, so it is refused (--force promotes it anyway; running APIs keep serving "
                f"version {current} until restarted)"
            )
        note = difference or None
    if current != new_version:
        moves = [(alias, current, new_version)]
        if current is not None:  # history first (it matters only where the moves are not one transaction)
            moves.insert(0, (previous_alias(alias), registry.alias_version(name, previous_alias(alias)), current))
        _move_aliases(client, name, moves)
    return _move(client, name, alias, current, new_version, note)


def _set_alias(client, name: str, alias: str, version: int) -> None:
    _registry_call(f"alias {alias!r}", client.set_registered_model_alias, name, alias, str(version))


def _move_aliases(client: MlflowClient, name: str, moves: list[tuple[str, int | None, int]]) -> None:
    """Apply (alias, version read, new version) for each alias together, or refuse with one line when
    another writer moved one of them since it was read."""
    uri = registry.tracking_uri()
    moved = None
    if sql.queried_directly(uri):
        try:
            moved = sql.move_aliases(uri, name, moves)
        except sql.UnknownSchema:  # tables of another MLflow version: its client, as on a server
            pass
    if moved is None:
        moved = _move_with_client(client, name, moves)
    if not moved:
        now = {alias: registry.alias_version(name, alias) for alias, _, _ in moves}
        shown = ", ".join(f"'{alias}' is on {f'version {v}' if v is not None else 'no version'}" for alias, v in now.items())
        raise RegistryError(
            f"another promote or rollback of {name!r} moved its aliases meanwhile ({shown}); this one changed "
            "nothing: check `invoke models` and try again if it is still wanted"
        )


def _move_with_client(client: MlflowClient, name: str, moves: list[tuple[str, int | None, int]]) -> bool:
    """The tracking-server (HTTP) fallback, NOT atomic: MLflow's REST API sets one alias per call,
    unconditionally. All aliases are re-read just before they are set (a race seen there changes
    nothing) and again afterwards (a race seen there is reported), but a writer between the re-read
    and the writes still wins silently, and a process killed between the two calls leaves
    `previous-<alias>` on the version `<alias>` still holds (the older rollback target is lost)."""
    if any(registry.alias_version(name, alias) != old for alias, old, _ in moves):
        return False
    for alias, _, new in moves:
        _set_alias(client, name, alias, new)
    return all(registry.alias_version(name, alias) == new for alias, _, new in moves)


def rollback(name: str, alias: str = "production") -> Move:
    """Move `alias` back to the version that held it before; a second rollback undoes the first."""
    registry.check_reachable()
    client = MlflowClient()
    current = registry.alias_version(name, alias)
    previous = registry.alias_version(name, previous_alias(alias))
    if previous is None:
        held = f"version {current}" if current is not None else "no version"
        raise RegistryError(
            f"nothing to roll back to: '{alias}' of {name!r} is on {held} and no version held it before "
            f"(the registry has no alias '{previous_alias(alias)}'; it is set by `invoke promote`)"
        )
    if previous == current:
        raise RegistryError(f"'{alias}' of {name!r} is already on version {current}, the version that held it before")
    moves = [(alias, current, previous)]
    if current is not None:
        moves.append((previous_alias(alias), previous, current))
    _move_aliases(client, name, moves)
    return _move(client, name, alias, current, previous, None)


def _move(client: MlflowClient, name: str, alias: str, old: int | None, new: int, note: str | None) -> Move:
    aliases = _aliases_by_version(client, name)

    def info(number: int) -> VersionInfo:
        return _info(
            client,
            _registry_call(f"version {number} of {name!r}", client.get_model_version, name, str(number)),
            aliases,
        )

    return Move(name, alias, info(old) if old is not None else None, info(new), old != new, note)
