"""The model card of a version (Mitchell et al., "Model Cards for Model Reporting", 2019), written at training.

What the model predicts, the data it learnt from (rows, feature types, missing shares, class balance, the
file's SHA-256), how it was trained, how well it does on the test split (each metric with a seeded
bootstrap interval, tand.monitoring.bootstrap; the confusion matrix or residual plots the run renders;
metrics per value of the features `model_card.slice_by` names), what it is for and where it is not
(free text from config.json's `model_card`), and the library versions. `build` gathers it in the
training process from what the run has at hand; `log_card` renders it (tand.monitoring.card_render:
Markdown, and HTML with the plots embedded) into the run's artifacts once the version number is known;
`read_card` reads it back for `GET /model/card` and `invoke model-card`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tand.errors import ConfigError

CARD_DIR = "model_card"
FILES = {"html": "model_card.html", "md": "model_card.md"}
# The run's plots a reviewer reads on the card, in this order (those the run rendered).
CARD_PLOTS = {
    "confusion_matrix.png": "Confusion matrix (test split)",
    "roc_curves.png": "ROC curve (test split)",
    "predicted_vs_actual.png": "Predicted against actual (test split)",
    "residuals.png": "Residuals (test split)",
    "feature_importance.png": "Feature importance",
}
HEADLINE = {
    "classification": ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "log_loss"),
    "regression": ("r2", "rmse", "mae", "mape"),
}
PER_CLASS = ("precision", "recall", "f1", "specificity")
SLICE_METRICS = {"classification": ("accuracy", "balanced_accuracy", "roc_auc"), "regression": ("mae", "rmse", "r2")}
MAX_SLICE_VALUES = 30  # the most frequent values of a slice feature get a row each
LIBRARIES = ("numpy", "pandas", "scikit-learn", "mlflow", "matplotlib")
MISSING = "(missing)"
PERFORMANCE = "Performance"


@dataclass
class Section:
    title: str
    # Blocks in order: ("text", str), ("pairs", [(key, value)]), ("table", header, rows, note),
    # ("plots", [(caption, file name, png bytes)]).
    blocks: list[tuple] = field(default_factory=list)


@dataclass
class Card:
    model_name: str
    run_id: str
    created: str
    summary: list[tuple[str, str]]
    sections: list[Section]
    version: int | None = None


def check_slices(card_config, schema) -> None:
    """Before the run: every `model_card.slice_by` names a categorical feature."""
    for name in card_config.slice_by:
        if name not in schema.names:
            raise ConfigError(f"model_card.slice_by: {name!r} is not a feature; features are: {', '.join(schema.names)}")
        if name not in schema.categorical:
            raise ConfigError(
                f"model_card.slice_by: {name!r} is numeric; name a categorical feature: {', '.join(schema.categorical) or '(none)'}"
            )


def build(cfg, dataset, parts, evaluation, schema, run_id: str, digest: Future | None = None) -> Card:
    """The card's content from what the training run has at hand (the version is set when logging), without
    the plots: `invoke train` builds it while its worker renders them (attach_plots adds them after).
    `digest`: the data file's SHA-256 from digest_beside (else it is computed here)."""
    from tand.monitoring import bootstrap

    p = evaluation.predictions
    ci = bootstrap.intervals(p, cfg.model_card.bootstrap_resamples, cfg.train.seed)
    sections = [
        _predicts(schema),
        _intended_use(cfg.model_card),
        _data(cfg, dataset, parts, digest),
        _training(cfg, schema, evaluation),
        _performance(schema, evaluation.metrics, ci, cfg.model_card.bootstrap_resamples),
    ]
    if cfg.model_card.slice_by:
        sections.append(_slices(cfg.model_card.slice_by, parts.X_test, p, schema))
    sections.append(_software(cfg))
    task = schema.task
    summary = [("predicts", f"{schema.label} ({task})"), ("model", f"{schema.framework} {schema.model}")]
    summary += [(k.replace("_", " "), _metric(evaluation.metrics[f"test_{k}"])) for k in HEADLINE[task][:3] if f"test_{k}" in evaluation.metrics]
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Card(cfg.mlflow.model_name, run_id, created, summary, sections)


def _number(value) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _metric(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _predicts(schema) -> Section:
    if schema.task == "regression":
        text = f"Predicts the number `{schema.label}` (regression) from {len(schema.features)} features."
        return Section("What it predicts", [("text", text)])
    classes = ", ".join(f"`{c}`" for c in schema.classes)
    blocks = [("text", f"Classifies rows into the {len(schema.classes)} classes of `{schema.label}`: {classes}.")]
    if schema.positive_class is not None:
        rule = (
            f"probability of `{schema.positive_class}` ≥ {schema.threshold:.4g}" if schema.threshold is not None
            else "the most probable class (no threshold)"
        )
        blocks.append(("pairs", [("positive class (the minority)", schema.positive_class), ("decision", rule)]))
    return Section("What it predicts", blocks)


def _intended_use(card_config) -> Section:
    unset = "Not stated: set `model_card.{}` in config.json."
    pairs = [
        ("intended use", card_config.intended_use or unset.format("intended_use")),
        ("limitations", card_config.limitations or unset.format("limitations")),
    ]
    if card_config.owners:
        pairs.append(("owners", ", ".join(card_config.owners)))
    return Section("Intended use and limitations", [("pairs", pairs)])


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256; for a folder (a partitioned Parquet data set), of its files' names and contents in order."""
    path = Path(path)
    if not path.is_dir():
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    digest = hashlib.sha256()
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{member.relative_to(path).as_posix()}\0{file_sha256(member)}\n".encode())
    return digest.hexdigest()


def digest_beside(data_path: str) -> Future | None:
    """The training file's file_sha256, computed in a thread from now on (hashing and reading release the GIL:
    it takes the core that reading the data leaves idle; 0.3 s for 80 MB); None for a glob of files."""
    import glob

    from tand.training.workers import in_thread

    return None if glob.has_magic(data_path) else in_thread(file_sha256, data_path)


def _files(data_path: str, digest: Future | None = None) -> list[tuple[str, str]]:
    import glob

    if not glob.has_magic(data_path):
        path = Path(data_path)
        size = "" if path.is_dir() else f" ({path.stat().st_size:,} bytes)"
        sha = digest.result() if digest is not None else file_sha256(path)
        return [("training file", f"`{data_path}`{size}"), ("SHA-256", f"`{sha}`")]
    files = sorted(glob.glob(data_path))
    return [("training files", f"`{data_path}`: {len(files)} files ({sum(Path(f).stat().st_size for f in files):,} bytes)")]


def _data(cfg, dataset, parts, digest: Future | None = None) -> Section:
    import numpy as np

    X, y, schema = dataset.X, dataset.y, dataset.schema
    # A Dask cluster's data: a glob of files; its X and X_train are samples, `rows` and `train_rows` the counts.
    rows, train_rows = getattr(dataset, "rows", len(X)), getattr(parts, "train_rows", len(parts.X_train))
    pairs = [
        *_files(cfg.train.data_path, digest),
        ("rows", f"{rows:,} ({train_rows:,} train, {len(parts.X_test):,} test; seed {cfg.train.seed})"),
        ("features", f"{len(schema.features)} ({len(schema.numeric)} numeric, {len(schema.categorical)} categorical)"),
    ]
    if schema.dropped:
        pairs.append(("dropped columns", ", ".join(schema.dropped)))
    blocks = [("pairs", pairs)]
    if schema.task == "classification":
        counts, test = y.value_counts(), parts.y_test.value_counts()
        rows = [[c, f"{counts.get(c, 0):,}", f"{counts.get(c, 0) / len(y):.1%}", f"{test.get(c, 0):,}"] for c in schema.classes]
        blocks.append(("table", ["class", "rows", "share", "test rows"], rows, "Class balance"))
    else:
        q = np.percentile(y, [5, 50, 95])
        values = [_number(float(v)) for v in (y.mean(), y.std(), *q)]
        blocks.append(("table", ["mean", "sd", "5th pct", "median", "95th pct"], [values], f"Label `{schema.label}`"))
    rows = []
    for feature in schema.features:
        column = X[feature.name]
        if feature.kind == "numeric":
            summary = f"mean {_number(float(column.mean()))}, sd {_number(float(column.std()))}"
        else:
            shown = ", ".join(map(str, feature.categories[:6])) + (" …" if len(feature.categories) > 6 else "")
            summary = f"{len(feature.categories)} values: {shown}"
        rows.append([feature.name, feature.kind, feature.dtype, f"{column.isna().mean():.1%}", summary])
    blocks.append(("table", ["feature", "kind", "type", "missing", "values"], rows, "Features"))
    return Section("Data", blocks)


def _training(cfg, schema, evaluation) -> Section:
    from tand.config import PYTORCH_KEYS

    train = cfg.train
    estimator = type(evaluation.pipeline[-1])
    pairs = [
        ("framework", train.framework),
        ("model", f"{train.model} (`{estimator.__module__}.{estimator.__name__}`)"),
        ("seed", str(train.seed)),
        ("test share", f"{train.test_size:g}"),
        ("model_args", f"`{json.dumps(train.model_args, default=str)}`" if train.model_args else "(library defaults)"),
    ]
    if train.framework == "pytorch":
        pairs.append(("network", ", ".join(f"{key} {getattr(train, key)}" for key in PYTORCH_KEYS if key not in ("log_every",))))
        if evaluation.history:
            pairs.append(("epochs trained", str(len(evaluation.history))))
    if schema.task == "classification" and len(schema.classes) == 2:
        chosen = f"{schema.threshold:.4g}" if schema.threshold is not None else "none (argmax)"
        pairs.append(("decision threshold", f"{chosen} (configured: {train.threshold})"))
    return Section("Training", [("pairs", pairs)])


def attach_plots(card: Card, plots: dict[str, bytes]) -> None:
    """The run's plots a reviewer reads (CARD_PLOTS, those rendered) at the end of the Performance section."""
    shown = [(caption, name, plots[name]) for name, caption in CARD_PLOTS.items() if name in plots]
    if shown:
        next(s for s in card.sections if s.title == PERFORMANCE).blocks.append(("plots", shown))


def _performance(schema, metrics: dict, ci: dict, resamples: int) -> Section:
    def cell(name: str) -> str:
        low_high = ci.get(name)
        return f"{low_high[0]:.4f} – {low_high[1]:.4f}" if low_high else "–"

    how = (
        f"Measured on the held-out test split; 95% intervals: percentile bootstrap over {resamples} seeded "
        "resamples of the test rows' predictions." if resamples else "Measured on the held-out test split."
    )
    rows = [[k, _metric(metrics.get(f"test_{k}")), cell(k), _metric(metrics.get(f"train_{k}"))]
            for k in HEADLINE[schema.task] if f"test_{k}" in metrics]  # fmt: skip
    blocks = [("text", how), ("table", ["metric", "test", "95% interval", "train"], rows, "Metrics")]
    if schema.task == "classification":
        from tand.training.evaluate import metric_key

        per_class = []
        for name in schema.classes:
            key = metric_key(name)
            per_class.append([name, *(f"{_metric(metrics.get(f'test_{m}_{key}'))} ({cell(f'{m}_{key}')})" for m in PER_CLASS)])
        blocks.append(("table", ["class", *PER_CLASS], per_class, "Per class (test, with 95% intervals)"))
    return Section(PERFORMANCE, blocks)


def _slices(features: list[str], X_test, p, schema) -> Section:
    import numpy as np

    from tand.monitoring import bootstrap

    names = SLICE_METRICS[schema.task]
    blocks = [("text", "Test metrics for the rows holding each value (a slice of few rows says little).")]
    for feature in features:
        values = X_test[feature].astype(object).where(X_test[feature].notna(), MISSING).astype(str).to_numpy()
        kinds, counts = np.unique(values, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_SLICE_VALUES]
        masks = np.stack([values == kinds[i] for i in order]).astype(float)
        got = bootstrap.weighted_metrics(p, masks)
        rows = [[kinds[i], f"{counts[i]:,}", *(_metric(float(got[m][j])) if np.isfinite(got[m][j]) else "–" for m in names)]
                for j, i in enumerate(order)]  # fmt: skip
        note = f"`{feature}`" + (f" (the {MAX_SLICE_VALUES} most frequent of {len(kinds)} values)" if len(kinds) > MAX_SLICE_VALUES else "")
        blocks.append(("table", ["value", "test rows", *names], rows, note))
    return Section("Slices", blocks)


def _software(cfg) -> Section:
    from importlib.metadata import PackageNotFoundError, version

    from tand.models.catalog import BOOSTING_DISTRIBUTIONS

    packages = [*LIBRARIES]
    if cfg.train.framework == "pytorch":
        packages.append("torch")
    if cfg.train.model in BOOSTING_DISTRIBUTIONS:
        packages.append(BOOSTING_DISTRIBUTIONS[cfg.train.model])
    rows = [["python", platform.python_version()]]
    for name in packages:
        try:
            rows.append([name, version(name)])
        except PackageNotFoundError:
            continue
    return Section("Software", [("table", ["package", "version"], rows, f"Trained on {platform.platform(terse=True)}")])


def log_card(card: Card, run_id: str, version: int) -> None:
    """Render the card for `version` (Markdown and HTML) into the run's artifacts, under model_card/."""
    from mlflow import MlflowClient

    from tand.monitoring.card_render import to_html, to_markdown

    card.version = version
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / FILES["md"]).write_text(to_markdown(card), encoding="utf-8")
        (Path(folder) / FILES["html"]).write_text(to_html(card), encoding="utf-8")
        MlflowClient().log_artifacts(run_id, folder, CARD_DIR)


def read_card(tracking_uri: str, run_id: str, fmt: str = "html") -> str | None:
    """A run's card as text, None when the run has none (trained before cards existed); RegistryError
    when the store cannot be read."""
    if not run_id:  # a version registered from no run
        return None
    from tand.tracking.runs import read_run_text

    return read_run_text(run_id, f"{CARD_DIR}/{FILES[fmt]}", tracking_uri, what="the model card")
