"""Example datasets exported from scikit-learn's bundled copies (no download), each with a config."""

from __future__ import annotations

import json
from pathlib import Path

DATASETS = {
    # name: (loader, task, label names, model name, experiment)
    "breast_cancer": ("load_breast_cancer", "classification", "diagnosis"),
    "wine": ("load_wine", "classification", "cultivar"),
    "diabetes": ("load_diabetes", "regression", "progression"),
}


def export(name: str, data_path: str | Path) -> dict:
    """Write dataset `name` as CSV at `data_path`; return a matching config (as a dict)."""
    import sklearn.datasets

    if name not in DATASETS:
        raise KeyError(name)
    loader, task, label = DATASETS[name]
    bunch = getattr(sklearn.datasets, loader)(as_frame=True, scaled=False) if name == "diabetes" else getattr(
        sklearn.datasets, loader
    )(as_frame=True)
    frame = bunch.frame.rename(columns={"target": label})
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    Path(data_path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data_path, index=False)
    train = {
        "__help": "What to learn and how. See README.md, 'config.json reference'.",
        "data_path": str(data_path),
        "labels_column": label,
        "task": task,
        "framework": "pytorch",
        "to_drop": [],
    }
    if task == "classification":
        train["labels"] = [str(n) for n in bunch.target_names]
    slug = name.replace("_", "-")
    return {
        "$schema": "./config.schema.json",
        "train": train,
        "mlflow": {
            "__help": "Where the model is tracked and registered.",
            "model_name": f"{slug}-{'classifier' if task == 'classification' else 'regressor'}",
            "experiment_name": f"{slug}-experiment",
        },
    }


def write_config(config: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
