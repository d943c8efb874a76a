"""env_files/*.env: KEY=VALUE lines loaded into the environment. The real environment wins."""

from __future__ import annotations

import os
import shlex
from pathlib import Path


def parse_env_file(path: str | Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            value = shlex.split(value)[0] if value else ""
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values


def load_env_files(*paths: str | Path, environ=os.environ) -> dict[str, str]:
    """Set each file's variables that the environment does not already have; later files do not override earlier ones."""
    applied: dict[str, str] = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        for key, value in parse_env_file(path).items():
            if key not in environ:
                environ[key] = value
                applied[key] = value
    return applied
