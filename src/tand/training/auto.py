"""`model: "auto"`: choose the model family by cross-validated score on the training split, within a time budget.

    select(train_cfg, schema, X_train, y_train, report=None) -> Selection

The candidates (CANDIDATES, cheapest first: each is started only while `train.time_budget` seconds are
not spent) are a linear model (logistic regression / ridge), scikit-learn's hist-gradient-boosting,
LightGBM, XGBoost, a random forest, CatBoost and the PyTorch MLP; a name the model catalog does not know
here (a boosting library that is not installed) is left out. Each one is built by the template's own
pipeline (tand.training.pipeline.build_pipeline) with its library defaults, not the user's `model_args`
or PyTorch keys (the config names those as ignored), and scored by tand.training.crossval on
`train.cv_folds` seeded folds (stratified for classification) by `train.metric`.

Bounds on the cost, so the budget holds on big data:
- at most SELECTION_ROWS training rows are cross-validated (a seeded, stratified sample, the same rows for
  every candidate: scores stay comparable); the winner is then refitted on the whole training split;
- above LARGE_ROWS selection rows the random forest and the MLP are not tried: their fits there take
  several times a boosting library's (a forest of full-depth trees, an epoch loop in Python);
- the MLP is cross-validated with at most MLP_SELECTION_EPOCHS epochs (early stopping stays on); the
  refit of a winning MLP trains the full default epochs;
- a candidate whose remaining folds would end past the budget, at the pace of its folds so far, is
  stopped and cannot win ("over budget" in the leaderboard); the first candidate always completes, so
  there is always a winner.

Ties keep the cheaper candidate (the earlier in the order). A candidate that fails is listed with its
error, and the others compete; when every candidate fails, the first error is raised.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from tand.config import PYTORCH_KEYS, TrainConfig

CANDIDATES = {
    "classification": (
        "logistic_regression", "hist_gradient_boosting", "lightgbm", "xgboost", "random_forest", "catboost", "mlp",
    ),
    "regression": ("ridge", "hist_gradient_boosting", "lightgbm", "xgboost", "random_forest", "catboost", "mlp"),
}  # fmt: skip
SELECTION_ROWS = 50_000
LARGE_ROWS = 20_000
SLOW_ON_LARGE = frozenset({"random_forest", "mlp"})
MLP_SELECTION_EPOCHS = 30


@dataclass
class Candidate:
    """One row of the leaderboard."""

    model: str
    framework: str
    status: str = "not started"  # "done", "over budget", "failed", "not started", "skipped"
    score: object = None  # tand.training.crossval.CVScore (the folds done, for "over budget")
    started_at: float | None = None  # epoch seconds
    seconds: float = 0.0  # wall-clock, building and all folds
    error: str | None = None


@dataclass
class Selection:
    metric: str
    winner: TrainConfig  # the user's train section with the winner's model and framework
    candidates: list[Candidate]
    rows: int  # training rows the folds were drawn from
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def winner_name(self) -> str:
        return self.winner.model or "mlp"


def candidate_names(task: str) -> list[str]:
    from tand.models.catalog import known_models

    known = set(known_models(task)) | {"mlp"}
    return [name for name in CANDIDATES[task] if name in known]


def candidate_config(train: TrainConfig, name: str, selection: bool = False) -> TrainConfig:
    """The train section for one candidate: its model and framework, library defaults for everything the
    user set for one model only (model_args, PyTorch keys); `selection`: fewer MLP epochs."""
    defaults = {key: TrainConfig.model_fields[key].default for key in PYTORCH_KEYS}
    update = {**defaults, "model_args": {}, "model": name, "framework": "pytorch" if name == "mlp" else "sklearn"}
    if selection and name == "mlp":
        update["epochs"] = min(defaults["epochs"], MLP_SELECTION_EPOCHS)
    return train.model_copy(update=update)


def _sample(X, y, schema, rows: int, seed: int):
    if len(X) <= rows:
        return X, y
    from sklearn.model_selection import train_test_split

    stratify = np.asarray(y, dtype=str) if schema.task == "classification" else None
    if stratify is not None and np.unique(stratify, return_counts=True)[1].min() < 2:
        stratify = None  # a class of one row cannot be stratified; cross_validate then says so
    X_sample, _, y_sample, _ = train_test_split(X, y, train_size=rows, random_state=seed, stratify=stratify)
    return X_sample, y_sample


def _better(a: float, b: float, metric: str) -> bool:
    from tand.training.crossval import greater_is_better

    return a > b if greater_is_better(metric) else a < b


def best(candidates: list[Candidate], metric: str) -> Candidate | None:
    """The completed candidate with the best mean score (NaN never wins; ties keep the earlier)."""
    winner = None
    for candidate in candidates:
        if candidate.status != "done" or not np.isfinite(candidate.score.mean):
            continue
        if winner is None or _better(candidate.score.mean, winner.score.mean, metric):
            winner = candidate
    return winner


def describe(candidate: Candidate) -> str:
    """One progress line: candidate, score ± std, seconds."""
    head = f"auto: {candidate.model:<22}"
    if candidate.score is not None and candidate.status in ("done", "over budget"):
        s = candidate.score
        tail = "" if candidate.status == "done" else f"  over budget after {s.folds} fold(s), cannot win"
        return f"{head} {s.metric} {s.mean:.4f} ± {s.std:.4f}  {candidate.seconds:6.1f} s{tail}"
    return f"{head} {candidate.status}{': ' + candidate.error if candidate.error else ''}"


def stderr_report(candidate: Candidate) -> None:
    print(describe(candidate), file=sys.stderr, flush=True)


def _run_candidate(candidate: Candidate, train: TrainConfig, schema, X, y, deadline) -> None:
    from tand.training.crossval import OverBudget, cross_validate
    from tand.training.pipeline import build_pipeline

    candidate.started_at = time.time()
    started = time.perf_counter()
    try:
        pipeline = build_pipeline(schema, candidate_config(train, candidate.model, selection=True), progress=False)
        candidate.score = cross_validate(pipeline, X, y, schema, train.selection_metric, train.cv_folds, train.seed, deadline=deadline)
        candidate.status = "done"
    except OverBudget as over:
        candidate.status, candidate.score = "over budget", over.partial
    except Exception as exc:  # noqa: BLE001 - shown in the leaderboard and re-raised when no candidate is left
        candidate.status, candidate.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        candidate.score = exc
    candidate.seconds = time.perf_counter() - started


def select(train: TrainConfig, schema, X, y, report=None) -> Selection:
    """Cross-validate the candidates cheapest first within `train.time_budget`; the best completed one wins.
    `report(candidate)` is called once per candidate as it ends (stderr_report prints one line)."""
    started = time.perf_counter()
    deadline = started + train.time_budget
    metric = train.selection_metric
    X_cv, y_cv = _sample(X, y, schema, SELECTION_ROWS, train.seed)
    notes = [] if len(X_cv) == len(X) else [f"cross-validated on a sample of {len(X_cv)} of {len(X)} training rows"]
    candidates = []
    for name in candidate_names(schema.task):
        candidate = Candidate(name, "pytorch" if name == "mlp" else "sklearn")
        candidates.append(candidate)
        if len(X_cv) > LARGE_ROWS and name in SLOW_ON_LARGE:
            candidate.status = "skipped"
            candidate.error = f"more than {LARGE_ROWS} rows"
        elif candidates[0] is candidate or time.perf_counter() < deadline:
            # The first candidate always completes (no deadline): there is always a winner.
            _run_candidate(candidate, train, schema, X_cv, y_cv, None if candidates[0] is candidate else deadline)
        if report is not None:
            report(candidate)
    winner = best(candidates, metric) or next((c for c in candidates if c.status == "done"), None)
    if winner is None:  # every candidate that ran failed
        raise next(c.score for c in candidates if c.status == "failed")
    for candidate in candidates:
        if candidate.status == "failed":
            candidate.score = None  # the exception was kept only to re-raise it
    return Selection(metric, candidate_config(train, winner.model), candidates, len(X_cv), time.perf_counter() - started, notes)
