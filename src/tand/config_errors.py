"""Pydantic's validation errors as phrases for config.json's users: the key, what the file holds, the fix."""

from __future__ import annotations

import difflib
import json
from typing import Any

from pydantic import BaseModel


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_for(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        annotation = field.annotation if field else None
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
    return model


def describe(error: dict, root: type[BaseModel]) -> str:
    """One pydantic error as a phrase that names the key and the fix."""
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _model_for(loc, root)
        valid = sorted(f.alias or name for name, f in parent.model_fields.items()) if parent else []
        return (
            f"unknown key {where!r}{did_you_mean(str(loc[-1]), valid)}; "
            f"remove it or use one of: {', '.join(valid)}"
        )
    if error["type"] == "missing":
        return f"missing required key {where!r}; add it"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in _TYPE_ERRORS:
        message += f", got {_json(error['input'])}"
        if isinstance(error["input"], str) and _is_json_number(error["input"]):
            message += f"; write {error['input'].strip()} without quotes"
    return f"{where}: {message}"


# Strict-mode type errors: the message adds what the file holds, so the fix is visible in the line.
_TYPE_ERRORS = {"int_type", "float_type", "string_type", "bool_type", "list_type", "dict_type", "int_from_float"}


def _json(value: Any) -> str:
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return repr(value)[:60]


def _is_json_number(text: str) -> bool:
    try:
        return isinstance(json.loads(text), int | float)
    except ValueError:
        return False
