"""The template's example as the benchmarks train it: scikit-learn's bundled breast-cancer data (the same file
as examples/breast_cancer.csv) and the config the template ships for it (tand.training.examples), never the
repository's config.json, which in a fork describes the user's own data."""

from __future__ import annotations

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def write_example(data_path: Path) -> dict:
    """Writes the example's CSV at `data_path` and returns its config (the template's defaults elsewhere)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from tand.training.examples import export

    config = export("breast_cancer", data_path)
    config.pop("$schema", None)
    return config
