"""The one validated configuration object, loaded from config.json.

Every section forbids unknown keys, so a typo is an error that names the key;
choices are ``Literal`` so the error lists the valid values. Nothing else in the
project reads config.json.
"""

from __future__ import annotations

import codecs
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tand.config_errors import describe, did_you_mean
from tand.errors import ConfigError
from tand.models.catalog import known_models

DEFAULT_CONFIG_PATH = "config.json"
SCHEMA_FILE = "config.schema.json"
# The embedded store, relative to the project folder (env_files/*.env say the same).
DEFAULT_TRACKING_URI = "sqlite:///database.db"
# The API token the env files ship: accepted with a loud warning by the API, refused by deploy-eb.
EXAMPLE_TOKEN = "change-me-example-token"
# Cells read as missing (README "Your data" lists them): pandas' own markers, plus the ones spreadsheets and
# survey exports use ("?", "-", "n/a?"), so a numeric column with a few of them stays numeric.
MISSING_MARKERS = (
    "", "NA", "N/A", "n/a", "na", "n/a?", "NaN", "nan", "-nan", "NULL", "null", "Null", "None", "none",
    "#N/A", "#NA", "<NA>", "?", "-", "--",
)  # fmt: skip
# What `auto` and `tune` may optimise, per task; the first is the default (TrainConfig.selection_metric).
SELECTION_METRICS = {
    "classification": ("roc_auc", "log_loss", "average_precision", "balanced_accuracy", "accuracy", "f1"),
    "regression": ("rmse", "mae", "r2"),
}
# Keys that only the PyTorch MLP reads: present with framework "sklearn", they are named in a warning.
PYTORCH_KEYS = (
    "epochs", "batch_size", "hidden_dim", "dropout", "lr", "weight_decay", "patience",
    "validation_fraction", "log_every", "device",
)  # fmt: skip

log = logging.getLogger(__name__)


def _integral_float(value: Any) -> Any:
    """50.0 is a whole number to anyone writing JSON; 50.5 and "50" still fail the strict check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A whole number in config.json: strict (no strings, no booleans), but 50.0 counts.
WholeNumber = Annotated[int, BeforeValidator(_integral_float)]


class _Section(BaseModel):
    # strict: "epochs": "50" or "lr": "0.1" stop with the key named instead of being converted quietly
    # (an integer for a float is still accepted: JSON users do not tell 1 from 1.0).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    help: str | None = Field(default=None, alias="__help", description="Free text for humans; ignored.")


class CsvConfig(_Section):
    separator: str | None = Field(
        None, min_length=1, max_length=1, description="Column separator, e.g. ';' or a tab. Default: detected from the header line (, ; tab |)."
    )
    encoding: str = Field("utf-8", description="Text encoding of the file, e.g. latin-1 or cp1252 (a UTF-8 byte-order mark is fine).")
    decimal: str = Field(".", min_length=1, max_length=1, description="Decimal mark of numbers: '.' or ','.")
    missing_values: list[str] = Field(
        default_factory=lambda: list(MISSING_MARKERS), description="Cell values read as missing (replaces the default list)."
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; use e.g. 'utf-8', 'latin-1' or 'cp1252'") from None
        return value

    @model_validator(mode="after")
    def _distinct_marks(self) -> CsvConfig:
        if self.separator in ('"', "\n", "\r"):
            raise ValueError(f"separator {self.separator!r} cannot separate columns; use e.g. ',', ';' or a tab")
        if self.separator is not None and self.separator == self.decimal:
            raise ValueError(f"separator and decimal are both {self.decimal!r}; with decimal ',' use separator ';'")
        return self


class TrainConfig(_Section):
    data_path: str = Field("data/data.csv", description="CSV or Parquet file (.parquet, .pq) with one row per example, relative to the project root.")
    csv: CsvConfig = Field(default_factory=CsvConfig, description="How to read the CSV: separator, encoding, decimal, missing values.")
    labels_column: str = Field(description="Column of the CSV that holds the label to predict.")
    labels: list[str] | None = Field(
        None,
        description="Names for integer classes 0..k-1, in order. Optional when the label column holds strings.",
    )
    to_drop: list[str] = Field(default_factory=list, description="Columns removed before training (ids, leaks).")
    framework: Literal["sklearn", "pytorch", "auto"] | None = Field(
        None,
        description="Which library trains the model. Default: pytorch without `model` (or model 'mlp'), auto for "
        "model 'auto', else sklearn (scikit-learn's models and the scikit-learn APIs of LightGBM, XGBoost, CatBoost).",
    )
    task: Literal["classification", "regression"] = "classification"
    model: str | None = Field(
        None, description="Model name, e.g. lightgbm, catboost, random_forest, or 'auto' (cross-validated selection)."
    )
    model_args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the model (its own parameter names).")
    metric: str | None = Field(
        None, description="What `auto` and `tune` optimise, cross-validated. Default: roc_auc (classification), rmse (regression)."
    )
    time_budget: float = Field(60, gt=0, description="Seconds `model: auto` may spend selecting a model (the refit comes after).")
    cv_folds: WholeNumber = Field(3, ge=2, le=20, description="Cross-validation folds for `auto` and `tune`.")
    threshold: float | Literal["auto"] | None = Field(
        "auto",
        description="Binary classification: probability of the positive (minority) class above which it is predicted. "
        "'auto': chosen on out-of-fold predictions of the training split when the classes are imbalanced; null: 0.5.",
    )
    categorical: list[str] | None = Field(None, description="Columns to one-hot encode. Default: inferred.")
    numeric: list[str] | None = Field(None, description="Columns to impute and scale. Default: inferred.")
    max_categories: WholeNumber | None = Field(
        None, ge=2, description="Per categorical column, the most frequent categories kept; the rarer ones become one (OneHotEncoder's max_categories)."
    )
    memory_limit_gb: float | None = Field(
        None, gt=0, description="Stop before fitting when the encoded training matrix would pass this size. Default: half the available memory."
    )
    test_size: float = Field(0.2, gt=0, lt=1, description="Fraction of rows held out for evaluation.")
    seed: WholeNumber = Field(42, description="Seed for the split, the model and the PyTorch weights.")
    # PyTorch MLP
    epochs: WholeNumber = Field(50, ge=1)
    batch_size: WholeNumber = Field(32, ge=1)
    hidden_dim: WholeNumber | list[WholeNumber] = Field(256, description="Hidden layer size, or a list of sizes (one per layer).")
    dropout: float = Field(0.1, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0, description="Learning rate (Adam).")
    weight_decay: float = Field(0.0, ge=0)
    patience: WholeNumber = Field(10, ge=0, description="Early stopping: epochs without improvement on the validation split; 0 = off.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Part of the training rows used for early stopping.")
    log_every: WholeNumber = Field(250, ge=1, description="Refresh the progress bar's running loss every N batches.")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$", description="cpu, cuda, cuda:N or mps.")

    @field_validator("hidden_dim", mode="before")
    @classmethod
    def _sizes_are_numbers(cls, value: Any) -> Any:
        # One message instead of pydantic's one per member of the union (hidden_dim.int, hidden_dim.list[int]).
        sizes = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in sizes):
            raise ValueError(f"expected a whole number or a list of them, e.g. 256 or [128, 64]; got {json.dumps(value)}")
        return value

    @field_validator("hidden_dim")
    @classmethod
    def _positive_sizes(cls, value: int | list[int]) -> int | list[int]:
        sizes = [value] if isinstance(value, int) else value
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError("hidden sizes must be positive integers, e.g. 256 or [128, 64]")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task", "classification")
        framework = info.data.get("framework")
        if value is not None and value != "auto" and (framework == "sklearn" or (framework is None and value != "mlp")):
            names = known_models(task)
            if value not in names:
                choices = [*names, "mlp", "auto"]
                raise ValueError(f"unknown {task} model {value!r}{did_you_mean(value, choices)}; known models: {', '.join(choices)}")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task", "classification")
        names = SELECTION_METRICS[task]
        if value is not None and value not in names:
            raise ValueError(f"unknown {task} metric {value!r}{did_you_mean(value, list(names))}; one of: {', '.join(names)}")
        return value

    @field_validator("threshold")
    @classmethod
    def _probability(cls, value):
        if isinstance(value, float | int) and not 0 < value < 1:
            raise ValueError(f"a threshold is a probability between 0 and 1 (exclusive); got {value}")
        return value

    @model_validator(mode="after")
    def _resolve_framework(self) -> TrainConfig:
        if self.model == "auto" and self.framework not in (None, "auto"):
            raise ValueError(f"`model` 'auto' chooses the framework itself; remove `framework` ({self.framework!r})")
        if self.framework == "auto" and self.model not in (None, "auto"):
            raise ValueError(f"`framework` 'auto' selects the model itself; remove `model` ({self.model!r}) or the framework")
        if self.framework == "auto" or self.model == "auto":
            self.framework, self.model = "auto", "auto"
        if self.framework == "pytorch" and self.model not in (None, "mlp"):
            raise ValueError(
                f"`model` {self.model!r} is a scikit-learn model but `framework` is 'pytorch' (which trains the MLP); "
                "set framework to 'sklearn' (or remove it) to train that model, or remove `model` to train the MLP"
            )
        if self.framework is None:
            self.framework = "sklearn" if self.model not in (None, "mlp") else "pytorch"
        if self.framework == "sklearn" and self.model is None:
            raise ValueError(f"framework 'sklearn' needs `model`; one of: {', '.join(known_models(self.task))}")
        if self.task == "regression" and self.labels:
            raise ValueError("`labels` names classes; remove it for task 'regression'")
        return self

    @property
    def selection_metric(self) -> str:
        """The metric `auto` and `tune` optimise (`metric`, or the task's default)."""
        return self.metric or ("roc_auc" if self.task == "classification" else "rmse")

    def ignored_keys(self) -> list[str]:
        """Keys written in config.json that the chosen framework does not read."""
        if self.framework == "sklearn":
            return [key for key in PYTORCH_KEYS if key in self.model_fields_set]
        if self.framework == "auto":
            return [key for key in ("model_args", *PYTORCH_KEYS) if key in self.model_fields_set]
        return ["model_args"] if self.model_args else []

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.hidden_dim] if isinstance(self.hidden_dim, int) else list(self.hidden_dim)


class PredictionLogConfig(_Section):
    """`app.prediction_log`: opt-in record of every answer of /predict, for `invoke drift` and `invoke evaluate-live`.
    The environment variable PREDICTION_LOG (a folder or a postgresql:// URL) overrides `path`/`url`."""

    path: str | None = Field(None, min_length=1, description="Folder of rotating log files (JSONL, or Parquet with format 'parquet').")
    url: str | None = Field(
        None, pattern=r"^postgres(ql)?(\+\w+)?://", description="PostgreSQL URL: entries go to the table `prediction_log`."
    )
    format: Literal["jsonl", "parquet"] = Field("jsonl", description="File format in `path`.")
    sample: float = Field(1.0, ge=0, le=1, description="Share of requests logged (seeded per request id).")
    exclude: list[str] = Field(default_factory=list, description="Feature columns left out of the log (personal data).")
    queue_rows: WholeNumber = Field(
        100_000, ge=1, description="Entries waiting to be written beyond which new ones are dropped (and counted)."
    )

    @model_validator(mode="after")
    def _one_sink(self) -> PredictionLogConfig:
        if self.path and self.url:
            raise ValueError("give either path (a folder) or url (PostgreSQL), not both")
        return self


class AppConfig(_Section):
    prediction_log: PredictionLogConfig | None = Field(
        None, description="Log each prediction (request id, time, version, features, answer, latency); off when absent."
    )
    max_batch_rows: WholeNumber = Field(10_000, ge=1, description="Largest JSON array accepted by /predict.")
    max_body_bytes: WholeNumber = Field(8 * 1024 * 1024, ge=1024, description="Largest request body in bytes (413 above).")
    refresh_interval: float = Field(
        60, ge=0, description="Seconds between each process's check of the registry alias; 0 turns it off."
    )


class MlflowConfig(_Section):
    model_name: str = Field("tabular-model", min_length=1, description="Registered model name.")
    experiment_name: str = Field("tabular-experiment", min_length=1)
    alias: str = Field("production", pattern=r"^[A-Za-z][\w-]*$", description="Registry alias that is served.")


class DeployConfig(_Section):
    min_instances: WholeNumber = Field(2, ge=1)
    max_instances: WholeNumber = Field(10, ge=1)
    instance_types: str = Field("t3.micro,t3.small", description="Comma-separated EC2 instance types.")
    refresh_schedule: str = Field("*-*-* 03:00:00", description="systemd OnCalendar for the model refresh.")
    single_instance: bool = Field(
        False, description="One instance and no load balancer (the cheapest set-up; no scaling). Fixed at creation."
    )
    workers: WholeNumber = Field(2, ge=1, description="Uvicorn worker processes per instance (WEB_CONCURRENCY).")
    scale_up_latency: float = Field(
        1.0, gt=0, description="Seconds of average response time (5 minutes) above which an instance is added."
    )
    scale_down_latency: float = Field(
        0.2, gt=0, description="Seconds of average response time (5 minutes) below which an instance is removed."
    )

    @model_validator(mode="after")
    def _ordered(self) -> DeployConfig:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        if self.scale_down_latency >= self.scale_up_latency:
            raise ValueError("scale_down_latency must be below scale_up_latency")
        return self


class TuneConfig(_Section):
    """`invoke tune`: an Optuna study; its flags override these."""

    model: str | None = Field(None, description="Model to tune. Default: train.model (the MLP when unset).")
    trials: WholeNumber = Field(30, ge=1, description="Trials this worker runs (each worker of a shared study runs its own).")
    timeout: float | None = Field(None, gt=0, description="Seconds after which this worker starts no new trial.")
    study: str | None = Field(None, min_length=1, description="Study name. Default: <model_name>-<model>.")
    storage: str | None = Field(
        None, description="Optuna storage URL shared by workers, e.g. postgresql://host/db. Default: a SQLite file in the project."
    )
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Search space per model: {model: {param: {\"low\": .., \"high\": .., \"log\": true} | [choices]}}; "
        "replaces the catalog's range for the parameters it names.",
    )


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ModelCardConfig(_Section):
    """The model card written with each version (tand.monitoring.model_card): the text only people know."""

    intended_use: str | None = Field(None, description="What the model is for, and for whom (shown on the model card).")
    limitations: str | None = Field(None, description="Where it should not be used, known weak spots, caveats (shown on the card).")
    owners: list[str] = Field(default_factory=list, description="Who answers for the model: names or team addresses.")
    slice_by: Annotated[list[str], BeforeValidator(_one_or_more)] = Field(
        default_factory=list, description="Categorical feature(s) whose every value gets its own test metrics on the card."
    )
    bootstrap_resamples: WholeNumber = Field(
        200, ge=0, le=10_000, description="Seeded resamples of the test predictions for the metrics' 95% intervals; 0: none."
    )


class MonitorConfig(_Section):
    """`invoke drift` and `invoke evaluate-live`: live traffic compared with the training data."""

    psi_threshold: float = Field(
        0.2, gt=0, description="Population stability index above which a feature (or the predictions) counts as drifted: exit 2."
    )
    min_rows: WholeNumber = Field(100, ge=1, description="Logged rows below which `invoke drift` refuses to judge.")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    schema_: str | None = Field(default=None, alias="$schema")
    train: TrainConfig
    app: AppConfig = Field(default_factory=AppConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    model_card: ModelCardConfig = Field(default_factory=ModelCardConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    test: _Section | None = Field(default=None, description="Accepted for TanD configs; unused.")


def parse_config(raw: dict, source: str = DEFAULT_CONFIG_PATH) -> Config:
    """The validated config; keys the chosen framework does not read are named in a warning (logged)."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(describe(e, Config) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    ignored = config.train.ignored_keys()
    if ignored:
        keys = ", ".join(f"train.{key}" for key in ignored)
        if config.train.framework == "sklearn":
            why = f"PyTorch settings, ignored with framework 'sklearn' (model {config.train.model!r})"
        elif config.train.framework == "auto":
            why = "settings of one model, ignored by model 'auto' (each candidate uses its own defaults; `invoke tune` searches them)"
        else:
            why = "read by scikit-learn models only, ignored with framework 'pytorch'"
        log.warning("warning: %s: %s: %s; remove %s to silence this", source, keys, why, "it" if len(ignored) == 1 else "them")
    return config


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> Config:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass --config PATH or create config.json") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object with a 'train' section")
    return parse_config(raw, str(path))


def json_schema() -> dict:
    schema = Config.model_json_schema(by_alias=True)
    schema["title"] = "Train-and-deploy template config.json"
    return schema
