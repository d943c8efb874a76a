"""The template's code a logged model carries (MLflow's code_paths), so that MLflow's own tools load it
where the template is not installed: `mlflow models serve`/`predict`, mlflow.pyfunc.load_model, spark_udf.

A pickled pipeline refers to the template's own classes (the MLP and the boosting adapters, in tand.models),
and unpickling imports their modules. Only what that import needs is logged, not the whole package: a
tracking server stores each file with a request of its own (the whole package, about 50 files, added 1-2 s
to log_model against a local server).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# What importing tand.models imports from tand; tests/tracking/test_logged_code.py checks that it is all.
MODULES = ("__init__.py", "errors.py", "config_errors.py", "models")


@contextmanager
def package_subset() -> Iterator[str]:
    """A temporary folder named like the package, holding MODULES (no __pycache__): log_model's code path."""
    with tempfile.TemporaryDirectory(prefix="tand-code-") as folder:
        target = Path(folder) / PACKAGE_DIR.name
        target.mkdir()
        for name in MODULES:
            source = PACKAGE_DIR / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target / name)
        yield str(target)
