"""The code a logged model carries: every module of tand.models imports from it alone (a new import of
another tand module in tand.models would otherwise break the model outside the template only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tand.tracking import logged_code

IMPORT_ALL = """
import importlib, pkgutil, sys
import tand.models
for module in pkgutil.iter_modules(tand.models.__path__):
    importlib.import_module(f"tand.models.{module.name}")
print(sys.modules["tand"].__file__)
"""


def test_tand_models_imports_from_the_logged_subset_alone(tmp_path):
    with logged_code.package_subset() as code:
        package = Path(code)
        assert package.name == "tand" and not list(package.rglob("__pycache__"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(package.parent)
        imported = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert imported.returncode == 0, f"add the module it names to logged_code.MODULES:\n{imported.stderr[-2000:]}"
        assert Path(imported.stdout.strip()).is_relative_to(package)
    assert not package.exists()
