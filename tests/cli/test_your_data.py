"""A fork with the user's own data: the template's suite stays green, and `invoke check` tests their model.

As the README's "Your data" section says: a CSV in data/, config.json pointed at it (label column,
no `labels` for a text label, an id column dropped, the model's own name). The data is not the
example: a text label, text categories, missing values, an imbalanced class.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def churn_frame(rows: int = 1200, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], rows, p=[0.55, 0.25, 0.2])
    payment = rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"], rows)
    tenure = rng.integers(0, 72, rows)
    monthly = np.round(rng.uniform(18, 120, rows), 2)
    total = np.round(monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.1, rows), 2)
    logit = -1.2 + 1.4 * (contract == "Month-to-month") - 0.04 * tenure + 0.01 * monthly + 0.5 * (payment == "Electronic check")
    churn = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(rows)],
            "gender": rng.choice(["Female", "Male"], rows),
            "senior_citizen": rng.integers(0, 2, rows),
            "tenure": tenure,
            "contract": contract,
            "payment_method": payment,
            "monthly_charges": monthly,
            "total_charges": total,
            "churn": churn,
        }
    )
    frame.loc[rng.choice(rows, 25, replace=False), "total_charges"] = np.nan
    frame.loc[rng.choice(rows, 10, replace=False), "payment_method"] = np.nan
    return frame


def copy_template(dest):
    """The template as a fork has it: its tracked files (no .venv, no store, no caches)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("the template is not a git checkout here; this test copies its tracked files")
    for name in listed.stdout.splitlines():
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def use_your_data(project) -> None:
    """What the README's "Your data" section tells a user to do."""
    churn_frame().to_csv(project / "data" / "churn.csv", index=False)
    config = json.loads((project / "config.json").read_text())
    config["train"].update(data_path="data/churn.csv", labels_column="churn", to_drop=["customer_id"], epochs=5)
    config["train"].pop("labels", None)
    config["mlflow"].update(model_name="churn-classifier", experiment_name="churn")
    (project / "config.json").write_text(json.dumps(config, indent=2))


def test_the_templates_suite_is_green_on_a_fork_with_other_data(tmp_path):
    project = copy_template(tmp_path / "fork")
    use_your_data(project)
    assert not (project / "data" / "data.csv").exists()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", "tests"],
        cwd=project, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_invoke_check_trains_and_serves_the_users_own_model(tmp_path):
    project = copy_template(tmp_path / "fork")
    use_your_data(project)
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "check"], cwd=project, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trained churn-classifier" in done.stdout and "POST /predict with request_model.json: 200" in done.stdout
    assert not (project / "database.db").exists() and not (project / "mlruns").exists()
