"""Which model is best for data the template has never seen: `model: auto` against the libraries and FLAML.

Not a test. On public tabular datasets that ship inside PyPI packages (scikit-learn's bundled sets and the
ISLP book's CSVs; nothing is downloaded), one run, the same seeded split for everyone (the template's own
`split`, test_size 0.2, seed 42), nothing tuned per dataset:

- `auto`: `invoke train`'s library call with `model: "auto"` and `time_budget` seconds (the selection; the
  refit on the whole training split and the test evaluation come after it), its test metric as it logged it;
- LightGBM, XGBoost and CatBoost with their defaults, fitted directly (categories as pandas `category`
  columns, CatBoost's `cat_features`), no early stopping;
- FLAML's AutoML with the same time budget and metric.

The metric is ROC AUC (binary) or R² (regression) on the test split. Targets (issue 15): `auto` at or above
the best default-library baseline on most datasets, and within 0.005 ROC AUC (0.01 R²) of FLAML on each.

    .venv/bin/pip install --no-deps ISLP==0.6.0 flaml==2.8.0   # the datasets and the AutoML compared with
    OMP_NUM_THREADS=2 .venv/bin/python bench/model_bench.py [--budget 60] [--only Default,OJ]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src")]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from machine import machine_speed  # noqa: E402  (bench/machine.py: run as a script, bench/ is on the path)


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "sklearn:<loader>" or "ISLP:<file>"
    label: str
    task: str
    to_drop: tuple[str, ...] = ()


CASES = (
    Case("breast_cancer", "sklearn:load_breast_cancer", "target", "classification"),
    Case("Default", "ISLP:Default.csv", "default", "classification"),  # 3 % positive; a text category
    Case("Caravan", "ISLP:Caravan.csv", "Purchase", "classification"),  # 6 % positive, 85 features
    Case("OJ", "ISLP:OJ.csv", "Purchase", "classification", ("STORE",)),  # text categories; STORE duplicates StoreID
    Case("College", "ISLP:College.csv", "Private", "classification"),
    Case("Bikeshare", "ISLP:Bikeshare.csv", "bikers", "regression", ("casual", "registered")),  # those sum to bikers
    Case("Wage", "ISLP:Wage.csv", "wage", "regression", ("logwage",)),  # logwage is the label's log
)


def read_case(case: Case) -> pd.DataFrame:
    kind, what = case.source.split(":", 1)
    if kind == "sklearn":
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, what)(as_frame=True)
        return bunch.frame
    # find_spec does not import ISLP (whose __init__ wants PyTorch Lightning): read its CSV directly.
    spec = importlib.util.find_spec(kind)
    if spec is None:
        sys.exit(f"{kind} is not installed: .venv/bin/pip install --no-deps ISLP==0.6.0")
    frame = pd.read_csv(Path(next(iter(spec.submodule_search_locations))) / "data" / what)
    return frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed")])


def config_for(case: Case, csv: Path, budget: float) -> dict:
    return {
        "train": {
            "data_path": str(csv),
            "labels_column": case.label,
            "task": case.task,
            "to_drop": list(case.to_drop),
            "model": "auto",
            "time_budget": budget,
            "seed": 42,
            "test_size": 0.2,
        },
        "mlflow": {"model_name": f"bench-{case.name.lower()}", "experiment_name": "model-bench"},
    }


def score(task: str, y_true, predicted, classes=None) -> float:
    from sklearn.metrics import r2_score, roc_auc_score

    if task == "regression":
        return float(r2_score(y_true, predicted))
    # ROC AUC of the second class's column (the same number for either class of a binary task).
    return float(roc_auc_score(np.asarray(y_true) == classes[1], predicted[:, 1]))


def with_categories(X: pd.DataFrame, reference: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    X = X.copy()
    for column in columns:
        X[column] = pd.Categorical(X[column].astype("string"), categories=sorted(reference[column].dropna().astype(str).unique()))
    return X


def baselines(case: Case, parts, schema) -> dict[str, tuple[float, float]]:
    """Each boosting library with its defaults: {name: (metric, seconds)}."""
    import catboost
    import lightgbm
    import xgboost

    cats = list(schema.categorical)
    X_train, X_test = with_categories(parts.X_train, parts.X_train, cats), with_categories(parts.X_test, parts.X_train, cats)
    classes = sorted(parts.y_train.astype(str).unique())
    classify = case.task == "classification"
    y_train = parts.y_train.astype(str).map(classes.index).to_numpy() if classify else parts.y_train.to_numpy(float)
    out = {}
    for name, make in {
        "lightgbm": lambda: (lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor)(verbose=-1, random_state=42),
        "xgboost": lambda: (xgboost.XGBClassifier if classify else xgboost.XGBRegressor)(enable_categorical=True, random_state=42),
        "catboost": lambda: (catboost.CatBoostClassifier if classify else catboost.CatBoostRegressor)(
            verbose=0, random_seed=42, cat_features=cats, allow_writing_files=False
        ),
    }.items():
        started = time.perf_counter()
        model = make()
        train_X, test_X = X_train, X_test
        if name == "catboost":  # CatBoost wants its categories as text, missing ones too
            train_X, test_X = (X.astype({c: str for c in cats}) for X in (parts.X_train, parts.X_test))
        model.fit(train_X, y_train)
        predicted = model.predict_proba(test_X) if classify else model.predict(test_X)
        out[name] = (score(case.task, parts.y_test.astype(str) if classify else parts.y_test, predicted, classes), time.perf_counter() - started)
    return out


def flaml_automl(case: Case, parts, schema, budget: float) -> tuple[float, float, str]:
    from flaml import AutoML

    cats = list(schema.categorical)
    X_train, X_test = with_categories(parts.X_train, parts.X_train, cats), with_categories(parts.X_test, parts.X_train, cats)
    classify = case.task == "classification"
    classes = sorted(parts.y_train.astype(str).unique())
    automl = AutoML()
    started = time.perf_counter()
    automl.fit(
        X_train, parts.y_train.astype(str) if classify else parts.y_train.astype(float),
        task="classification" if classify else "regression", metric="roc_auc" if classify else "r2",
        time_budget=budget, seed=42, verbose=0,
    )  # fmt: skip
    if classify:
        proba = automl.predict_proba(X_test)
        order = [list(map(str, automl.classes_)).index(c) for c in classes]
        predicted = proba[:, order]
    else:
        predicted = automl.predict(X_test)
    metric = score(case.task, parts.y_test.astype(str) if classify else parts.y_test, predicted, classes)
    return metric, time.perf_counter() - started, str(automl.best_estimator)


def template_auto(case: Case, config: dict, folder: Path) -> tuple[float, float, str]:
    """`model: auto` through the template's own train(), into a fresh store in `folder`."""
    import mlflow

    from tand.config import parse_config
    from tand.training.run import train

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'database.db'}"
    cfg = parse_config(config)
    started = time.perf_counter()
    result = train(cfg, project_dir=folder, progress=False)
    seconds = time.perf_counter() - started
    params = mlflow.MlflowClient().get_run(result.run_id).data.params
    key = "test_roc_auc" if case.task == "classification" else "test_r2"
    return result.metrics[key], seconds, params.get("auto.winner") or params.get("train.model", "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds for auto and for FLAML (default 60)")
    parser.add_argument("--only", default="", help="comma-separated dataset names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    cases = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    from tand.config import parse_config
    from tand.training.data import load_dataset, split

    print(f"machine: fixed loop {machine_speed():.2f} s; budget {args.budget:.0f} s; {len(cases)} datasets", flush=True)
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            csv = folder / f"{case.name}.csv"
            read_case(case).to_csv(csv, index=False)
            config = config_for(case, csv, args.budget)
            cfg = parse_config(config)
            dataset = load_dataset(cfg.train)
            parts = split(dataset, cfg.train.test_size, cfg.train.seed)
            row = {"dataset": case.name, "rows": len(dataset.X), "features": dataset.X.shape[1],
                   "metric": "roc_auc" if case.task == "classification" else "r2"}  # fmt: skip
            for name, (metric, seconds) in baselines(case, parts, dataset.schema).items():
                row[name], row[f"{name}_s"] = metric, seconds
            row["flaml"], row["flaml_s"], row["flaml_model"] = flaml_automl(case, parts, dataset.schema, args.budget)
            row["auto"], row["auto_s"], row["auto_model"] = template_auto(case, config, folder)
        best = max(row[n] for n in ("lightgbm", "xgboost", "catboost"))
        row["auto_vs_best_default"], row["auto_vs_flaml"] = row["auto"] - best, row["auto"] - row["flaml"]
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def print_table(rows: list[dict]) -> None:
    print()
    print("| dataset | rows | metric | auto (winner, s) | LightGBM | XGBoost | CatBoost | FLAML (best, s) | auto − best default | auto − FLAML |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['rows']} | {r['metric']} | {r['auto']:.4f} ({r['auto_model']}, {r['auto_s']:.0f}) "
            f"| {r['lightgbm']:.4f} | {r['xgboost']:.4f} | {r['catboost']:.4f} | {r['flaml']:.4f} ({r['flaml_model']}, {r['flaml_s']:.0f}) "
            f"| {r['auto_vs_best_default']:+.4f} | {r['auto_vs_flaml']:+.4f} |"
        )
    at_or_above = sum(r["auto_vs_best_default"] >= 0 for r in rows)
    within = sum(r["auto_vs_flaml"] >= -(0.005 if r["metric"] == "roc_auc" else 0.01) for r in rows)
    print(f"\nauto at or above the best default library on {at_or_above} of {len(rows)}; "
          f"within 0.005 AUC / 0.01 R² of FLAML (or above it) on {within} of {len(rows)}")  # fmt: skip


if __name__ == "__main__":
    main()
