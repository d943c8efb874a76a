"""The API's settings, read once from the environment (and the config file for defaults).

`invoke serve` loads env_files/app.env first; a variable already in the environment wins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tand.config import DEFAULT_TRACKING_URI, EXAMPLE_TOKEN
from tand.errors import TandError

_ALIAS = re.compile(r"^[A-Za-z][\w-]*$")


class SettingsError(TandError):
    """The environment cannot start the API; the message names the variable and the fix."""


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may cost the server before the app sees a request (app/http_limits.py applies them)."""

    max_header_bytes: int = 64 * 1024  # request line and headers together; over it: 431 and close
    header_timeout: float = 10.0  # seconds from connection (or a request's first byte) to complete headers
    body_timeout: float = 30.0  # seconds from complete headers to the end of the body (chunked included)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> HttpLimits:
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            max_header_bytes=_number(env, "MAX_HEADER_BYTES", default.max_header_bytes, int, minimum=1024),
            header_timeout=_number(env, "HEADER_TIMEOUT", default.header_timeout, float, minimum=0.1),
            body_timeout=_number(env, "BODY_TIMEOUT", default.body_timeout, float, minimum=0.1),
        )


@dataclass(frozen=True)
class PredictionLogSettings:
    """Where /predict's answers are logged (app/predict/prediction_log.py): a folder or a PostgreSQL URL."""

    path: Path | None = None
    url: str | None = field(default=None, repr=False)  # may hold a password
    format: str = "jsonl"  # of the files in `path`: jsonl or parquet
    sample: float = 1.0  # share of requests logged, decided per request id
    exclude: tuple[str, ...] = ()  # features left out of the entries
    queue_rows: int = 100_000  # entries waiting beyond which new ones are dropped (and counted)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise SettingsError("the prediction log needs a folder (path) or a postgresql:// URL (url), exactly one")
        if not 0 <= self.sample <= 1:
            raise SettingsError(f"the prediction log's sample {self.sample} must be between 0 and 1")


@dataclass(frozen=True)
class Settings:
    api_token: str = field(repr=False)
    model_name: str
    model_alias: str = "production"
    tracking_uri: str = DEFAULT_TRACKING_URI
    refresh_interval: float = 60.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_rows: int = 10_000
    cache_dir: Path | None = None  # compiled-model snapshots for fast cold starts; None = off
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    metrics_public: bool = False  # GET /metrics without the token (a scraper on a private network)
    # prometheus_client's multiprocess folder, for several workers (invoke serve makes one); None: one process
    metrics_dir: Path | None = None
    prediction_log: PredictionLogSettings | None = None  # None: off

    def __post_init__(self) -> None:
        _require_token(self.api_token)
        if not _ALIAS.match(self.model_alias):
            raise SettingsError(f"MODEL_ALIAS {self.model_alias!r} is not a registry alias (letters, digits, _ and -)")
        if not self.model_name:
            raise SettingsError("MODEL_NAME is empty; set it or mlflow.model_name in the config file")

    @property
    def uses_example_token(self) -> bool:
        return self.api_token == EXAMPLE_TOKEN

    @classmethod
    def from_env(cls, environ: dict | None = None) -> Settings:
        env = os.environ if environ is None else environ
        _require_token(env.get("API_TOKEN", ""))  # checked first: it is what an operator must fix first
        config = _app_defaults(env)
        return cls(
            api_token=env.get("API_TOKEN", ""),
            model_name=env.get("MODEL_NAME") or config["model_name"],
            model_alias=_alias(env, config["alias"]),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
            refresh_interval=_number(env, "MODEL_REFRESH_INTERVAL", config["refresh_interval"], float),
            max_body_bytes=_number(env, "MAX_BODY_BYTES", config["max_body_bytes"], int, minimum=1024),
            max_batch_rows=_number(env, "MAX_BATCH_ROWS", config["max_batch_rows"], int, minimum=1),
            cache_dir=_cache_dir(env),
            # Read here too so a bad value stops the start-up with one line, not the first connection.
            http_limits=HttpLimits.from_env(env),
            metrics_public=_flag(env, "METRICS_PUBLIC"),
            metrics_dir=_metrics_dir(env),
            prediction_log=_prediction_log(env, config["prediction_log"]),
        )


def _require_token(token: str) -> None:
    if not token:
        raise SettingsError(
            "API_TOKEN is not set or empty; the API refuses to start without one. "
            'Set it, e.g. export API_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )


def _app_defaults(env) -> dict:
    """Defaults from the config file; it may be absent when MODEL_NAME is set (a bare container)."""
    from tand.config import AppConfig, MlflowConfig, load_config

    path = Path(env.get("TAND_CONFIG") or "config.json")
    if path.is_file() or not env.get("MODEL_NAME"):
        try:
            cfg = load_config(path)
        except TandError as exc:
            hint = "" if env.get("TAND_CONFIG") else " (set TAND_CONFIG to the config path, or MODEL_NAME)"
            raise SettingsError(f"{exc}{hint}") from None
        app, mlflow = cfg.app, cfg.mlflow
    else:
        app, mlflow = AppConfig(), MlflowConfig()
    return {
        "model_name": mlflow.model_name,
        "alias": mlflow.alias,
        "refresh_interval": app.refresh_interval,
        "max_body_bytes": app.max_body_bytes,
        "max_batch_rows": app.max_batch_rows,
        "prediction_log": app.prediction_log,
    }


def _alias(env, default: str) -> str:
    # MODEL_STAGE is the seed's name (MLflow stages, e.g. "Production"); stages became aliases in MLflow 3.
    if env.get("MODEL_ALIAS", "").strip():
        return env["MODEL_ALIAS"].strip()
    if env.get("MODEL_STAGE", "").strip():
        return env["MODEL_STAGE"].strip().lower()
    return default


def _number(env, name: str, default, kind, minimum=0):
    raw = env.get(name, "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
    if value < minimum or value != value:  # value != value: NaN
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _cache_dir(env) -> Path | None:
    if "MODEL_CACHE_DIR" in env:
        raw = env["MODEL_CACHE_DIR"].strip()
        return Path(raw).expanduser() if raw else None
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tand" / "models"


def _flag(env, name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={env[name]!r} is not a yes/no value (true or false)")


def _prediction_log(env, configured) -> PredictionLogSettings | None:
    """app.prediction_log, with PREDICTION_LOG (a folder or a postgresql:// URL) in place of its path/url and
    PREDICTION_LOG_SAMPLE in place of its sample; off when neither the config nor PREDICTION_LOG asks for it."""
    from tand.config import PredictionLogConfig

    raw = env.get("PREDICTION_LOG", "").strip()
    if not raw and configured is None:
        return None
    base = configured or PredictionLogConfig()
    path, url = base.path, base.url
    from tand.tracking.stores import redact, scheme

    if raw and scheme(raw) in ("postgresql", "postgres"):
        path, url = None, raw
    elif raw and "://" in raw:
        raise SettingsError(f"PREDICTION_LOG={redact(raw)!r} is neither a folder nor a postgresql:// URL")
    elif raw:
        path, url = raw, None
    if not path and not url:
        raise SettingsError("app.prediction_log names no sink: give it path (a folder) or url (postgresql://...), or set PREDICTION_LOG")
    sample = _number(env, "PREDICTION_LOG_SAMPLE", base.sample, float)
    if sample > 1:
        raise SettingsError(f"PREDICTION_LOG_SAMPLE={env['PREDICTION_LOG_SAMPLE']!r} must be between 0 and 1 (the share of requests logged)")
    return PredictionLogSettings(
        path=Path(path).expanduser() if path else None, url=url or None, format=base.format, sample=sample,
        exclude=tuple(base.exclude), queue_rows=base.queue_rows,
    )  # fmt: skip


def _metrics_dir(env) -> Path | None:
    # prometheus_client reads the same variable itself when first imported; checked here so a missing
    # folder stops the start-up with one line instead of failing the first request.
    raw = env.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_dir():
        raise SettingsError(
            f"PROMETHEUS_MULTIPROC_DIR={raw!r} is not a folder; create an empty one for this start "
            "(invoke serve --workers N does) or unset it"
        )
    return path
