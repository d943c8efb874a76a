"""POST /predict?explain=true: each answer row gains its additive explanation.

The math is tand.models.attribution (per input column); here the columns are summed back to their
feature (a one-hot's columns to one entry) and laid out per row:
{"unit", "base", "output", "contributions": {feature: value}}, one per class for multiclass.
Everything that depends only on the model is an Explainer, built once per Predictor (Predictor.explainer).
"""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np

from app.predict.predictor import fitted_classes
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


class Explainer:
    """The predictor's model as explanations: its attribution (tand.models.attribution.attributor), the
    matrix summing input columns to features, and the map from raw outputs to the answer's units."""

    def __init__(self, predictor):
        model, preprocessor = predictor.model_parts
        self._attribute = attribution.attributor(model) if preprocessor is not None else None
        if self._attribute is None:
            raise NotExplainable(f"explanations are not supported for {type(model).__name__} models")
        self.features = list(predictor.schema.names)
        owners = _column_owners(predictor, preprocessor)
        self._width, self._groups = len(owners), _groups(owners, self.features)
        self.units, self._mix, self._scale, self._shift = _units(predictor, model)

    def __call__(self, X) -> list[dict]:
        """One explanation object per row of the model's input matrix (multiclass: one per class, keyed by class)."""
        if X.shape[1] != self._width:
            raise NotExplainable("the model's input columns could not be traced back to its features")
        base, contributions = self._attribute(X)  # (n, k), (n, columns, k)
        values = contributions.transpose(0, 2, 1)  # (n, k, columns)
        if self._groups is not None:
            values = values @ self._groups  # (n, k, features)
        if self._mix is not None:
            base, values = base @ self._mix, self._mix.T @ values  # (n, units), (n, units, features)
        if self._scale != 1.0:
            base, values = base * self._scale, values * self._scale
        base = base + self._shift
        outputs = (base + values.sum(axis=2)).tolist()
        base, values = base.tolist(), values.tolist()
        features, units = self.features, self.units
        out = []
        for row_base, row_values, row_outputs in zip(base, values, outputs):
            objects = [
                {"unit": unit, "base": b, "output": o, "contributions": dict(zip(features, v))}
                for (unit, _), b, v, o in zip(units, row_base, row_values, row_outputs)
            ]
            out.append(objects[0] if len(objects) == 1 else {name: item for (_, name), item in zip(units, objects)})
        return out


def _column_owners(predictor, preprocessor) -> list[str]:
    """The original feature behind each column of the model's input matrix."""
    owners = predictor.column_features()
    if not owners:  # the DataFrame path: the fitted preprocessor's own output names
        from tand.training.importance import output_features

        owners = output_features(preprocessor)
    return owners


def _groups(owners: list[str], features: list[str]) -> np.ndarray | None:
    """(columns, features) 0/1 matrix summing a feature's columns; None when each column is its feature, in order."""
    if owners == features:
        return None
    index = {name: i for i, name in enumerate(features)}
    if any(owner not in index for owner in owners):
        raise NotExplainable("the model's input columns could not be traced back to its features")
    groups = np.zeros((len(owners), len(features)))
    groups[np.arange(len(owners)), [index[owner] for owner in owners]] = 1.0
    return groups


def _units(predictor, model):
    """[(unit, class)], the (k, units) map from the model's raw outputs (None: as they are), scale, shift."""
    schema = predictor.schema
    if schema.task == "regression":
        # The MLP's outputs are its standardised target.
        return [("prediction", None)], None, float(getattr(model, "y_std", 1.0)), float(getattr(model, "y_mean", 0.0))
    fitted = fitted_classes(model)
    kind = "probability" if attribution.method(model) == "saabas" else "logit"
    if len(fitted) > 2:
        unit = "probability" if kind == "probability" else "score"
        return [(f"{unit}({name})", name) for name in fitted], None, 1.0, 0.0
    positive = schema.positive_class if schema.positive_class in fitted else fitted[1]
    p = fitted.index(positive)
    outputs = _raw_outputs(model)
    if outputs == 1:  # one raw score: the logit of fitted[1]
        mix = np.array([[1.0 if p == 1 else -1.0]])
    elif kind == "probability":
        mix = np.eye(2)[:, [p]]
    else:  # two logits (the MLP's softmax): the positive class's log-odds is their difference
        mix = (np.eye(2)[:, p] - np.eye(2)[:, 1 - p])[:, None]
    return [(f"{kind}({positive})", positive)], mix, 1.0, 0.0


def _raw_outputs(model) -> int:
    """How many raw outputs a binary classifier's attribution has: 1 (a logit) or 2 (one per class)."""
    method = attribution.method(model)
    if method == "deeplift":
        return int(np.shape(model.weights[-1])[1])
    if method == "linear":
        return int(np.atleast_2d(model.coef_).shape[0])
    return 2 if method == "saabas" else 1  # the boosting libraries give binary models one raw score


def explained_answers(predictor, rows: list[tuple]) -> list[dict]:
    """Answers and their explanations from one model input matrix (the prediction's own X)."""
    explainer = predictor.explainer
    inputs = predictor.model_input(rows)
    answers = predictor.answers(rows, inputs)
    return [{**answer, "explanation": explanation} for answer, explanation in zip(answers, explainer(inputs[0]))]
