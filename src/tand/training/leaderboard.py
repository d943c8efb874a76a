"""What `model: auto` leaves in MLflow: one nested run per candidate, and the leaderboard on the parent run.

Each candidate's nested run (tag mlflow.parentRunId, the parent being the run that registers the winner)
holds its CV mean and standard deviation of every metric (`cv_mean_<metric>`, `cv_std_<metric>`), its fit
seconds and fold count, params model / framework / status, and its real start and end times. They are
written after the selection, which runs before the parent run starts (so a bad config or dataset leaves no
run at all), with MlflowClient calls: one batch per candidate rather than a run kept open per candidate.
The parent gets auto/leaderboard.csv and .json (one row per candidate, best first) and auto/leaderboard.png.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

from tand.training.auto import Candidate, Selection


def rows(selection: Selection) -> list[dict]:
    """The leaderboard as plain rows, ranked: completed candidates best first, then the others in order."""
    from tand.training.crossval import greater_is_better

    sign = -1 if greater_is_better(selection.metric) else 1
    done = [c for c in selection.candidates if c.status == "done" and math.isfinite(c.score.mean)]
    done.sort(key=lambda c: sign * c.score.mean)  # stable: ties keep the cheaper one first
    rest = [c for c in selection.candidates if c not in done]
    return [_row(rank, c, c.model == selection.winner_name) for rank, c in enumerate(done + rest, start=1)]


def _row(rank: int, candidate: Candidate, winner: bool) -> dict:
    score = candidate.score
    return {
        "rank": rank if candidate.status == "done" else None,
        "model": candidate.model,
        "framework": candidate.framework,
        "status": "winner" if winner else candidate.status,
        "metric": score.metric if score is not None else None,
        "cv_mean": round(score.mean, 6) if score is not None else None,
        "cv_std": round(score.std, 6) if score is not None else None,
        "folds": score.folds if score is not None else 0,
        "seconds": round(candidate.seconds, 3),
        "note": candidate.error or "",
    }


def to_csv(table: list[dict]) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def figure_png(selection: Selection) -> bytes:
    """Horizontal bars: CV mean ± std per candidate that has a score, the winner in a colour of its own;
    seconds and status to the right of each bar."""
    from tand.training import canvas

    table = [r for r in rows(selection) if r["cv_mean"] is not None]
    others = [r for r in rows(selection) if r["cv_mean"] is None]
    height = 1.3 + 0.42 * max(len(table), 1) + (0.2 if others else 0)
    fig = canvas.new_figure(8.0, height, layout="constrained")
    ax = fig.subplots()
    names = [r["model"] for r in table][::-1]
    means = [r["cv_mean"] for r in table][::-1]
    stds = [r["cv_std"] for r in table][::-1]
    colours = ["#d95f02" if r["status"] == "winner" else ("#7570b3" if r["status"] == "done" else "#bbbbbb") for r in table][::-1]
    ax.barh(names, means, xerr=stds, color=colours, capsize=3, height=0.6)
    low, high = (min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))) if means else (0, 1)
    span = (high - low) or abs(high) or 1.0
    ax.set_xlim(low - 0.1 * span, high + 0.1 * span)
    # Score, seconds and status in a column right of the axes (constrained layout makes room for it).
    beside = ax.get_yaxis_transform()
    for y, r in enumerate(table[::-1]):
        label = f"{r['cv_mean']:.4f} ± {r['cv_std']:.4f}   {r['seconds']:.1f} s"
        if r["status"] not in ("done", "winner"):
            label += f"   ({r['status']}, {r['folds']} fold{'s' if r['folds'] != 1 else ''})"
        ax.text(1.02, y, label, transform=beside, va="center", fontsize=canvas.TICK + 1, clip_on=False,
                fontweight="bold" if r["status"] == "winner" else "normal")  # fmt: skip
    better = "higher" if _higher(selection.metric) else "lower"
    title = f"model auto: cross-validated {selection.metric} ({better} is better), {selection.rows} training rows"
    ax.set_title(title, fontsize=canvas.TITLE)
    xlabel = f"{selection.metric}, mean ± std over the folds; winner: {selection.winner_name}"
    if others:  # a second line of the label, so constrained layout keeps it clear of the ticks
        xlabel += "\nnot scored: " + ", ".join(f"{r['model']} ({r['status']}{': ' + r['note'] if r['note'] else ''})" for r in others)
    ax.set_xlabel(xlabel, fontsize=canvas.LABEL)
    ax.tick_params(labelsize=canvas.LABEL)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _higher(metric: str) -> bool:
    from tand.training.crossval import greater_is_better

    return greater_is_better(metric)


def log_candidates(client, experiment_id: str, parent_run_id: str, selection: Selection, tags: dict) -> list[str]:
    """One finished nested run per candidate under `parent_run_id`; returns their ids."""
    from mlflow.entities import Metric, Param

    ids = []
    for candidate in selection.candidates:
        start = int((candidate.started_at or 0) * 1000) or None
        run = client.create_run(
            experiment_id, start_time=start, run_name=f"auto-{candidate.model}",
            tags={**tags, "mlflow.parentRunId": parent_run_id, "auto.status": candidate.status},
        )  # fmt: skip
        metrics, score = [], candidate.score
        if score is not None:
            now = start or 0
            metrics = [Metric(f"cv_mean_{k}", v, now, 0) for k, v in score.means.items() if math.isfinite(v)]
            metrics += [Metric(f"cv_std_{k}", v, now, 0) for k, v in score.stds.items() if math.isfinite(v)]
            metrics += [Metric("cv_folds", score.folds, now, 0), Metric("fit_seconds", score.seconds, now, 0)]
        params = [Param("model", candidate.model), Param("framework", candidate.framework), Param("status", candidate.status)]
        if candidate.error:
            params.append(Param("note", candidate.error[:6000]))
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        end = start + int(candidate.seconds * 1000) if start else None
        client.set_terminated(run.info.run_id, "FINISHED" if candidate.status != "failed" else "FAILED", end_time=end)
        ids.append(run.info.run_id)
    return ids


def log_leaderboard(selection: Selection) -> list[dict]:
    """The table (CSV, JSON) and the plot on the active (parent) run; returns the table."""
    import mlflow

    table = rows(selection)
    mlflow.log_text(to_csv(table), "auto/leaderboard.csv")
    mlflow.log_text(json.dumps({"metric": selection.metric, "rows": selection.rows, "candidates": table}, indent=2), "auto/leaderboard.json")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leaderboard.png"
        path.write_bytes(figure_png(selection))
        mlflow.log_artifact(str(path), "auto")
    return table


def log_selection(run_id: str, experiment_id: str, selection: Selection) -> list[dict]:
    """Nested runs, the winner's params and CV score, and the leaderboard on the active run `run_id`."""
    import mlflow

    from tand.tracking import runs

    log_candidates(mlflow.MlflowClient(), experiment_id, run_id, selection, runs.owner_tags())
    winner = next(c for c in selection.candidates if c.model == selection.winner_name)
    mlflow.log_params(
        {
            "auto.winner": selection.winner_name,
            "auto.metric": selection.metric,
            "auto.candidates": ",".join(c.model for c in selection.candidates),
            "auto.selection_rows": str(selection.rows),
            "auto.notes": "; ".join(selection.notes) or "-",
        }
    )
    mlflow.log_metrics(
        {"auto_cv_mean": winner.score.mean, "auto_cv_std": winner.score.std, "auto_selection_seconds": selection.seconds}
    )
    return log_leaderboard(selection)
