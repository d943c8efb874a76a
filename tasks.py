"""Train and deploy a tabular model: `invoke --list` shows every task, `invoke --help TASK` its flags.

Run invoke from the project root: relative paths (data, database.db, mlruns/) resolve there.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from invoke import Collection  # noqa: E402

from tand.tasks import serving, shipping, tracking, training  # noqa: E402

ns = Collection()
for module in (training, serving, tracking, shipping):
    for name, task in Collection.from_module(module).tasks.items():
        ns.add_task(task, name=name)
