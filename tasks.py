"""Train and deploy a tabular model: `invoke --list` shows every task, `invoke --help TASK` its flags.

Run invoke from the project root: relative paths (data, database.db, mlruns/) resolve there.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # the library (src/tand), then the app and the task modules (cli/)

from invoke import Collection  # noqa: E402

from cli import checking, monitoring, scoring, serving, shipping, tracking, training, tuning  # noqa: E402

ns = Collection()
for module in (training, tuning, checking, serving, scoring, tracking, monitoring, shipping):
    for name, task in Collection.from_module(module).tasks.items():
        ns.add_task(task, name=name)
