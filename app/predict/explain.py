"""POST /predict?explain=true: each answer row gains its additive explanation.

The math is tand.models.attribution (per input column); here the columns are summed back to their
feature (a one-hot's columns to one entry) and laid out per row:
{"unit", "base", "output", "contributions": {feature: value}}, one per class for multiclass.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np

from tand.compiled.model import CompiledPreprocessor, NumericBlock
from tand.models import attribution


class NotExplainable(Exception):
    """The served model has no supported explanation (answered 422)."""


def wants_explanation(scope) -> bool:
    """Whether the query string asks for explain=true (parsed only when there is one)."""
    query = scope.get("query_string")
    if not query:
        return False
    values = parse_qs(query.decode("latin-1")).get("explain", [])
    return bool(values) and values[-1].lower() in ("true", "1", "yes")


def column_owners(preprocessor, width: int) -> list[str]:
    """The original feature behind each column of the model's input matrix."""
    if isinstance(preprocessor, CompiledPreprocessor):
        owners = []
        for block in preprocessor.blocks:
            if isinstance(block, NumericBlock):
                owners += list(block.columns)
            else:
                for column, values in zip(block.columns, block.categories):
                    owners += [column] * len(values)
        return owners
    from tand.training.importance import output_features

    owners = output_features(preprocessor)
    if len(owners) != width:
        raise NotExplainable("the model's input columns could not be traced back to its features")
    return owners


def _grouped(contributions: np.ndarray, owners: list[str], features: list[str]) -> np.ndarray:
    """(n, columns, k) → (n, features, k), a feature's columns summed."""
    index = {name: i for i, name in enumerate(features)}
    groups = np.zeros((len(owners), len(features)))
    for j, owner in enumerate(owners):
        groups[j, index[owner]] = 1.0
    return np.einsum("nck,cf->nfk", contributions, groups)


def explanations(predictor, rows: list[tuple]) -> list[dict]:
    """One explanation object per row (multiclass: one per class, keyed by class)."""
    X, model, preprocessor = predictor.model_input(rows)
    if preprocessor is None or attribution.method(model) is None:
        raise NotExplainable(f"explanations are not supported for {type(model).__name__} models")
    base, contributions = attribution.attribute(model, X)
    schema = predictor.schema
    features = schema.names
    per_feature = _grouped(contributions, column_owners(preprocessor, contributions.shape[1]), features)
    units, base, per_feature = _units(predictor, model, base, per_feature)
    out = []
    for i in range(len(rows)):
        objects = {}
        for u, unit in enumerate(units):
            values = per_feature[i, :, u]
            objects[unit[1]] = {
                "unit": unit[0], "base": float(base[i, u]), "output": float(base[i, u] + values.sum()),
                "contributions": dict(zip(features, values.tolist())),
            }
        out.append(next(iter(objects.values())) if len(objects) == 1 else objects)
    return out


def _units(predictor, model, base, values):
    """The raw outputs as the answer reports them: [(unit, class)], base (n, u), values (n, f, u)."""
    if predictor.schema.task == "regression":
        scale, shift = getattr(model, "y_std", 1.0), getattr(model, "y_mean", 0.0)  # the MLP's standardised target
        return [("prediction", None)], base * scale + shift, values * scale
    fitted = [str(c) for c in (model.classes if hasattr(model, "classes") and not hasattr(model, "classes_") else model.classes_)]
    kind = "probability" if attribution.method(model) == "saabas" else "logit"
    if len(fitted) == 2:
        positive = predictor.schema.positive_class if predictor.schema.positive_class in fitted else fitted[1]
        p = fitted.index(positive)
        if values.shape[2] == 1:  # one raw score: the logit of fitted[1]
            sign = 1.0 if p == 1 else -1.0
            return [(f"logit({positive})", positive)], sign * base, sign * values
        if kind == "probability":
            return [(f"probability({positive})", positive)], base[:, [p]], values[:, :, [p]]
        q = 1 - p  # two logits (the MLP's softmax): the positive class's log-odds is their difference
        return [(f"logit({positive})", positive)], base[:, [p]] - base[:, [q]], values[:, :, [p]] - values[:, :, [q]]
    unit = "probability" if kind == "probability" else "score"
    return [(f"{unit}({name})", name) for name in fitted], base, values


def explained(predictor, rows: list[tuple], answers: list[dict]) -> list[dict]:
    """`answers` with each row's explanation added."""
    return [{**answer, "explanation": explanation} for answer, explanation in zip(answers, explanations(predictor, rows))]
