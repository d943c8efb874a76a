"""Logged requests against a version's reference profile (tand.monitoring.profile): has the input moved?

Per feature, the population stability index over the profile's bins, PSI = Σ (live − ref) · ln(live / ref),
with a missing bin of its own and shares floored at EPSILON so an empty bin counts as a large shift, not
an infinite one; the same for the predictions. Above `threshold` (monitor.psi_threshold, 0.2 by default,
the usual line for a significant shift) a feature counts as drifted. Categorical features also get the
share of values training never saw. A feature no entry holds (left out of the log by
`app.prediction_log.exclude`) is not compared, rather than counted as all missing. `compare` returns plain data: the task prints it, the report
(tand.monitoring.drift_report) draws it, and both are logged to the version's run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from tand.monitoring import profile as profiles
from tand.monitoring.live_log import feature_frame

EPSILON = 1e-4


@dataclass
class Shift:
    name: str
    kind: str  # numeric | categorical
    psi: float
    missing_reference: float
    missing_live: float
    bins: list[str]
    reference: list[float]  # shares per bin, the missing bin last
    live: list[float]
    unseen: float | None = None  # categorical: share of present live values training never saw
    drifted: bool = False


@dataclass
class DriftResult:
    version: int
    rows: int
    threshold: float
    first: str  # time of the oldest and newest entry compared (ISO, UTC)
    last: str
    features: list[Shift]
    prediction: Shift
    drifted: list[str] = field(default_factory=list)  # names of drifted features ("(prediction)" for the answers)
    not_logged: list[str] = field(default_factory=list)  # in no entry (app.prediction_log.exclude): not compared

    def to_dict(self) -> dict:
        return asdict(self)


def psi(reference, live, epsilon: float = EPSILON) -> float:
    ref = np.clip(np.asarray(reference, dtype=float), epsilon, None)
    now = np.clip(np.asarray(live, dtype=float), epsilon, None)
    return float(np.sum((now - ref) * np.log(now / ref)))


def _edge_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all values"]
    short = [f"{e:.4g}" for e in edges]
    return [f"< {short[0]}", *(f"{a} – {b}" for a, b in zip(short, short[1:])), f"≥ {short[-1]}"]


def numeric_shift(name: str, reference: dict, values: pd.Series) -> Shift:
    numbers = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    finite = np.isfinite(numbers)
    counts = profiles.numeric_counts(numbers[finite], reference["edges"])
    live = [*(counts / len(numbers)), 1 - finite.mean()]
    missing = reference["missing"]
    ref = [*(np.asarray(reference["shares"]) * (1 - missing)), missing]
    return Shift(name, "numeric", psi(ref, live), missing, float(live[-1]), [*_edge_labels(reference["edges"]), profiles.MISSING],
                 [float(v) for v in ref], [float(v) for v in live])  # fmt: skip


def categorical_shift(name: str, reference: dict, values: pd.Series) -> Shift:
    counts = profiles.text_counts(values)
    present = int(counts.sum())
    kept = reference["categories"]
    live_counts = [int(counts.get(c, 0)) for c in kept]
    live_counts.append(present - sum(live_counts))
    total = len(values)
    live = [*(np.asarray(live_counts, dtype=float) / total), 1 - present / total]
    missing = reference["missing"]
    ref = [*(np.asarray(reference["shares"]) * (1 - missing)), missing]
    known = reference.get("known")
    unseen = None if known is None else float(counts[~counts.index.isin(known)].sum() / present) if present else 0.0
    return Shift(name, "categorical", psi(ref, live), missing, float(live[-1]), [*map(str, kept), profiles.OTHER, profiles.MISSING],
                 [float(v) for v in ref], [float(v) for v in live], unseen)  # fmt: skip


def _shift(name: str, reference: dict, values: pd.Series) -> Shift:
    return numeric_shift(name, reference, values) if reference["kind"] == "numeric" else categorical_shift(name, reference, values)


def compare(profile: dict, entries: pd.DataFrame, version: int, threshold: float) -> DriftResult:
    """Each profiled feature and the predictions of `entries` (tand.monitoring.live_log.read) against `profile`."""
    logged = set()
    for features in entries["features"]:
        if isinstance(features, dict) and not logged.issuperset(features):
            logged.update(features)
    names = [name for name in profile["features"] if name in logged]
    live = feature_frame(entries, names)
    shifts = [_shift(name, profile["features"][name], live[name]) for name in names]
    answers = entries["prediction"]
    if profile["task"] == "classification":
        answers = answers.map(lambda v: v if v is None else str(v))
    prediction = _shift("(prediction)", profile["prediction"], answers)
    for shift in (*shifts, prediction):
        shift.drifted = shift.psi > threshold
    shifts.sort(key=lambda s: -s.psi)
    drifted = [s.name for s in shifts if s.drifted] + ([prediction.name] if prediction.drifted else [])
    times = entries["time"]
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    not_logged = [name for name in profile["features"] if name not in logged]
    return DriftResult(version, len(entries), threshold, stamp(times.min()), stamp(times.max()), shifts, prediction, drifted, not_logged)
