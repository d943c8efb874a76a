"""Big data for bench/train_bench.py (--rows, --scale): `invoke train` against the bare library fit.

Generated data: eight numbers and three text categories (4, 30 and 200 values), a binary label that
depends on both. Each measurement runs in a wrapper process of its own that reports the wall time and
the peak resident memory of its descendants (resource.getrusage(RUSAGE_CHILDREN): the largest single
process, which for `invoke train` is its main process or its forked fit worker). The bare fit is the
15-line script a user would write: read the same CSV with pandas, the same seeded stratified split,
categories as pandas `category` (HistGradientBoostingClassifier(categorical_features="from_dtype"),
LGBMClassifier(categorical_feature=...)), fit, score the test split. The MLP has no bare counterpart:
its time per epoch is the difference between a 5-epoch and a 1-epoch fit (the worker's fit phase) over 4,
with batches of 512 rows (the default 32 makes a million-row epoch 25,000 steps).
Beside wall time, the CPU seconds (user + system) of each run's processes: on a shared machine they move
less than wall time, which stretches with the others' load (printed per run).
Not a test. The machine is shared and has two cores: read the ratios, and expect noise.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.5
CATEGORIES = {"colour": 4, "region": 30, "shop": 200}  # HistGradientBoosting takes at most 255 per column
# The template's boosting adapter stops early on a validation split, up to 1000 rounds; the bare fit runs the
# library's default 100 rounds. Same work on both sides: the overhead is what is measured.
SAME_AS_BARE = {"lightgbm": {"n_estimators": 100, "early_stopping_rounds": 0}}
WRAPPER = (
    "import resource, subprocess, sys, time; start = time.perf_counter(); "
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); wall = time.perf_counter() - start; "
    "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr); "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(f'@@ {done.returncode} {wall:.3f} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime:.3f}')"
)
BARE = """
import sys
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
path, model, categories = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
frame = pd.read_csv(path)
y = frame.pop("label")
for name in categories:
    frame[name] = frame[name].astype("category")
X_train, X_test, y_train, y_test = train_test_split(frame, y, test_size=0.2, random_state=42, stratify=y)
if model == "hist_gradient_boosting":
    from sklearn.ensemble import HistGradientBoostingClassifier
    fitted = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=42).fit(X_train, y_train)
else:
    import lightgbm
    fitted = lightgbm.LGBMClassifier(random_state=42, verbose=-1).fit(X_train, y_train, categorical_feature=categories)
print("roc_auc", roc_auc_score(y_test == "yes", fitted.predict_proba(X_test)[:, list(fitted.classes_).index("yes")]))
"""


def generate(rows: int, path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows).round(4) for i in range(8)})
    score = frame["x0"] - 0.5 * frame["x1"] + 0.3 * frame["x2"] * frame["x3"]
    for name, count in CATEGORIES.items():
        codes = rng.integers(0, count, rows)
        frame[name] = np.array([f"{name}_{k}" for k in range(count)], dtype=object)[codes]
        score += rng.normal(size=count)[codes] * 0.5
    frame["label"] = np.where(score + rng.normal(size=rows) > 0, "yes", "no")
    frame.to_csv(path, index=False)


def measure(command: list[str], cwd: Path, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], cwd=cwd, env=env, capture_output=True, text=True)
    code, wall, rss_kb, cpu = re.search(r"@@ (-?\d+) ([\d.]+) (\d+) ([\d.]+)", done.stdout).groups()
    if int(code) != 0:
        sys.exit(f"{command[1:3]}... failed (exit {code}):\n{done.stderr[-2000:]}")
    phases = {}
    if "seconds:" in done.stdout:
        line = done.stdout.split("seconds:", 1)[1].splitlines()[0]
        phases = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+)", line)}
    return {"wall": float(wall), "mb": int(rss_kb) / 1024, "cpu": float(cpu), "load": os.getloadavg()[0], **phases}


def invoke_train(data: Path, work: Path, train: dict) -> dict:
    project = Path(tempfile.mkdtemp(dir=work))
    config = {"train": {"data_path": str(data), "labels_column": "label", **train}, "mlflow": {"model_name": "bench"}}
    (project / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TAND_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=f"sqlite:///{project / 'database.db'}")
    cmd = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "train", "--config", "config.json", "--quiet", "--verbose"]
    return measure(cmd, project, env)


def run_scale(sizes: list[int], models: list[str], pairs: int = 1) -> None:
    """`pairs`: runs of `invoke train` and the bare fit, alternated, per size and tree model (the verdict takes
    the median ratio: on a shared machine one pair can land on a busy moment)."""
    from machine import machine_speed

    speed = machine_speed()
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for rows in sizes:
            data = work / f"data_{rows}.csv"
            generate(rows, data)
            for model in models:
                if model == "mlp":
                    mlp = {"framework": "pytorch", "batch_size": 512, "patience": 0}
                    one, five = invoke_train(data, work, {**mlp, "epochs": 1}), invoke_train(data, work, {**mlp, "epochs": 5})
                    per_epoch = (five.get("worker_fit", 0) - one.get("worker_fit", 0)) / 4
                    rows_out.append((rows, "mlp, 1 epoch", one, None, per_epoch))
                    rows_out.append((rows, "mlp, 5 epochs", five, None, per_epoch))
                    continue
                for pair in range(pairs):
                    run_ours = lambda: invoke_train(data, work, {"model": model, "model_args": SAME_AS_BARE.get(model, {})})  # noqa: E731
                    run_bare = lambda: measure([sys.executable, "-c", BARE, str(data), model, ",".join(CATEGORIES)], work)  # noqa: E731
                    if pair % 2:  # every other pair the bare fit first: neither side always gets the warmer cache
                        bare, ours = run_bare(), run_ours()
                    else:
                        ours, bare = run_ours(), run_bare()
                    rows_out.append((rows, model, ours, bare, None))
                    print(f"{rows:,} {model}: invoke train {ours['wall']:.1f} s, bare {bare['wall']:.1f} s", file=sys.stderr, flush=True)
            data.unlink()
    _print(rows_out, speed, machine_speed())


def _print(rows_out, speed_before: float, speed_after: float) -> None:
    phases = ["data", "worker_fit", "worker_metrics", "worker_plots", "log_model", "store"]
    print(f"{'rows':>9} {'model':24} {'invoke s':>9} {'invoke MB':>9} {'bare s':>7} {'bare MB':>8} {'time x':>7} {'mem x':>6} "
          f"{'invoke cpu':>10} {'bare cpu':>8} {'cpu x':>6} {'load':>9}  " + " ".join(f"{p:>14}" for p in phases))
    for rows, model, ours, bare, per_epoch in rows_out:
        if bare is not None:
            extra = (f"{bare['wall']:7.1f} {bare['mb']:8.0f} {ours['wall'] / bare['wall']:7.2f} {ours['mb'] / bare['mb']:6.2f} "
                     f"{ours['cpu']:10.1f} {bare['cpu']:8.1f} {ours['cpu'] / bare['cpu']:6.2f} {ours['load']:4.1f}/{bare['load']:<4.1f}")
        else:
            extra = f"{'-':>7} {'-':>8} {'-':>7} {'-':>6} {ours['cpu']:10.1f} {'-':>8} {'-':>6} {ours['load']:9.1f}"
        print(f"{rows:9,} {model:24} {ours['wall']:9.1f} {ours['mb']:9.0f} {extra}  " + " ".join(f"{ours.get(p, 0):14.2f}" for p in phases))
        if per_epoch is not None and model.endswith("5 epochs"):
            print(f"{'':9} {'mlp per epoch (fit)':24} {per_epoch:9.1f}")
    print(f"\nmachine speed (a fixed 20M-iteration loop): {speed_before:.2f} s before, {speed_after:.2f} s after; "
          "cpu: user + system seconds of the run's processes; load: the 1-minute load average at each run's end "
          "(the machine's other users: above 2, the two cores were shared and wall times stretch)")
    for model in sorted({m for _, m, _, b, _ in rows_out if b is not None}):
        series = [(r, o, b) for r, m, o, b, _ in rows_out if m == model]
        top = max(r for r, _, _ in series)
        largest = [(o, b) for r, o, b in series if r == top]
        time_x = statistics.median(o["wall"] / b["wall"] for o, b in largest)
        mem_x = statistics.median(o["mb"] / b["mb"] for o, b in largest)
        cpu_x = statistics.median(o["cpu"] / b["cpu"] for o, b in largest)
        verdict = "meets" if max(time_x, mem_x) <= TARGET_RATIO else "misses"
        sizes = sorted({r for r, _, _ in series})
        growth = ", ".join(f"{r:,}: {statistics.median(o['wall'] for q, o, _ in series if q == r) / r * 1e5:.2f} s" for r in sizes)
        of = f"median of {len(largest)} pairs" if len(largest) > 1 else "one pair"
        print(f"{model}: {verdict} the {TARGET_RATIO}x target at {top:,} rows ({of}: time {time_x:.2f}x, memory {mem_x:.2f}x, "
              f"cpu {cpu_x:.2f}x); invoke train per 100k rows: {growth}")
