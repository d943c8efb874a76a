"""What every task shares: the project root, env-file loading, and known errors as one line."""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from invoke.exceptions import Exit

from cli.envfiles import load_env_files
from tand.errors import TandError

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = REPO_ROOT / "env_files"


def load_env(*names: str) -> None:
    """Load env_files/<name> for each name; the real environment wins. Telemetry stays off unless opted in."""
    try:
        load_env_files(*(ENV_DIR / name for name in names))
    except ValueError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    src = str(REPO_ROOT / "src")
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if src not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [src, str(REPO_ROOT), *paths] if p)


@contextmanager
def known_errors():
    """Turn a known failure into one line on stderr and exit status 1 (no traceback)."""
    try:
        yield
    except TandError as exc:
        raise Exit(f"error: {exc}", code=1) from None


def quote(value) -> str:
    return shlex.quote(str(value))


def python() -> str:
    return quote(sys.executable)


def whole_number(flag: str, value) -> int | None:
    """A task flag's value as an int (None stays None), or one error line naming the flag (e.g. "--workers")."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Exit(f"error: {flag} {value!r} is not a whole number", code=1) from None
