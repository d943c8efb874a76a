"""Time `invoke train` end to end: its start-up on the default data, or, with --rows / --scale, big data
against the bare library fit on the same data and split.

Start-up mode (no --rows, no --scale). Each case runs the real CLI in a fresh temporary project under /usr/bin/time -v
(wall clock and peak memory), then once more on the now-warm store, then warm again with
--inline (everything in the main process: the alternative the processes are measured
against). The task prints its own phase timings (tand.training.workers draws the processes):
"data" is importing pandas and scikit-learn and reading the CSV (meanwhile, for PyTorch, a process
imports torch); "store" is MLflow's import and store set-up (meanwhile a forked worker fits the
preprocessing, the other process trains the network, and the worker computes the metrics:
worker_fit, which includes waiting for the torch import, and worker_metrics); "fit_wait" is what
the main process still waits for them; "log_model" logs the metrics and the model while the worker
renders the plots (worker_plots); "plots_wait" is what is left of that wait; "startup" is what
is left of the wall time: interpreter start, invoke, and exit. Peak memory is the largest single
process. This machine's two cores slow each other down when both are busy, and its speed drifts
(the benchmark prints a fixed loop's time before and after): read the median, and the ratios.

    .venv/bin/python bench/train_bench.py [--repeat 2]

Big-data mode (bench/train_scale.py generates the data and runs the cases):

    .venv/bin/python bench/train_bench.py --rows 1000000
    .venv/bin/python bench/train_bench.py --scale        # 100k, 300k and 1M rows
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from example import write_example  # bench/example.py: run as a script, bench/ is on the path
from machine import machine_speed

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS, TARGET_MB = 8.0, 500


def run_once(project: Path, config: str, inline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TAND_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "invoke", "--search-root", str(REPO), "train", "--config", config, "--quiet", "--verbose"]
    if inline:
        cmd.append("--inline")  # the alternative: fit and evaluate in the main process, after MLflow
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"invoke train failed:\n{done.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    phases = dict(
        (name, float(value)) for name, value in re.findall(r"(\w+) ([\d.]+)", done.stdout.split("seconds:", 1)[1])
    )
    total = hours * 3600 + minutes * 60 + seconds
    # worker_* phases ran in the forked worker, overlapping "store"; they are not part of the sum
    serial = sum(v for k, v in phases.items() if not k.startswith("worker_"))
    return {"wall": total, "rss_mb": rss_kb / 1024, "startup": total - serial, **phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh-store runs per framework (default 3)")
    parser.add_argument("--rows", type=int, help="big-data mode: generated rows, invoke train against the bare library fit")
    parser.add_argument("--scale", action="store_true", help="big-data mode at 100k, 300k and 1M rows (growth check)")
    parser.add_argument("--models", default="hist_gradient_boosting,lightgbm,mlp", help="big-data mode: models to run")
    parser.add_argument("--pairs", type=int, default=1, help="big-data mode: invoke train / bare fit pairs per size and "
                        "tree model, alternated; the verdict takes the median ratio (default 1)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs takes a whole number from 1")
    if args.rows or args.scale:
        from train_scale import run_scale  # bench/train_scale.py

        run_scale([args.rows] if args.rows else [100_000, 300_000, 1_000_000], args.models.split(","), args.pairs)
        return
    with tempfile.TemporaryDirectory() as tmp:  # not config.json: a fork's describes its own data
        base = write_example(Path(tmp) / "breast_cancer.csv")
    base["train"]["data_path"] = "examples/breast_cancer.csv"
    variants = {
        "pytorch (default config)": base["train"],
        "sklearn random_forest": {**base["train"], "framework": "sklearn", "model": "random_forest"},
    }
    speed_before = machine_speed()
    rows = []
    for label, train in variants.items():
        for attempt in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                project = Path(tmp)
                write_example(project / "examples" / "breast_cancer.csv")  # the config's data_path
                (project / "config.json").write_text(json.dumps({**base, "train": train}))
                rows.append((f"{label}, fresh store", run_once(project, "config.json")))
                if attempt == 0:
                    rows.append((f"{label}, warm store", run_once(project, "config.json")))
                    rows.append((f"{label}, warm, inline fit", run_once(project, "config.json", inline=True)))
    phases = ["startup", "data", "store", "fit_wait", "log_model", "plots_wait", "register", "worker_fit",
              "worker_metrics", "worker_plots"]
    print(f"{'case':40} {'wall s':>7} {'peak MB':>8}  " + " ".join(f"{p:>14}" for p in phases))
    for label, row in rows:
        print(f"{label:40} {row['wall']:7.2f} {row['rss_mb']:8.0f}  " + " ".join(f"{row.get(p, 0):14.2f}" for p in phases))
    default = [r for label, r in rows if label.startswith("pytorch") and "fresh" in label]
    walls = sorted(r["wall"] for r in default)
    middle = statistics.median(walls)
    peak = max(r["rss_mb"] for r in default)
    forked = next(r["wall"] for label, r in rows if label == "pytorch (default config), warm store")
    inline = next(r["wall"] for label, r in rows if label == "pytorch (default config), warm, inline fit")
    print(f"\nmachine speed (a fixed 20M-iteration Python loop): {speed_before:.2f} s before the runs, {machine_speed():.2f} s after")
    print(f"forked worker vs inline fit (default config, warm store): {forked:.2f} s vs {inline:.2f} s, "
          f"ratio {forked / inline:.2f}")
    print(f"default PyTorch config, fresh store: median {middle:.2f} s of {len(walls)} runs (min {walls[0]:.2f}, max {walls[-1]:.2f}; "
          f"{middle / TARGET_SECONDS:.2f}x the {TARGET_SECONDS:.0f} s target), "
          f"peak {peak:.0f} MB ({peak / TARGET_MB:.2f}x the {TARGET_MB} MB target)")


if __name__ == "__main__":
    main()
