"""The search space `invoke tune` samples per model, overridable in config.json (`tune.space`).

A parameter is a range (`Range`: low, high, log; whole numbers when both ends are) or a list of choices.
For the MLP the parameters are train keys (lr, hidden_dim...); for every other model they are the
library's own argument names and end up in `train.model_args`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tand.errors import ConfigError


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


_TREE = {"max_depth": Range(2, 12), "min_samples_leaf": Range(1, 20)}
_FOREST = {"n_estimators": Range(50, 400, log=True), "max_features": [1.0, 0.7, 0.5, "sqrt"], **_TREE}
_BOOSTING = {"learning_rate": Range(0.01, 0.3, log=True), "max_depth": Range(2, 8)}
SPACES: dict[str, dict[str, Any]] = {
    "mlp": {
        "lr": Range(1e-4, 1e-2, log=True),
        "hidden_dim": [32, 64, 128, 256],
        "dropout": Range(0.0, 0.5),
        "weight_decay": Range(1e-6, 1e-2, log=True),
        "batch_size": [16, 32, 64, 128],
        "epochs": Range(10, 100),  # a cap: early stopping (patience) usually ends sooner
    },
    "logistic_regression": {"C": Range(1e-3, 1e2, log=True)},
    "linear": {"fit_intercept": [True, False]},
    "ridge": {"alpha": Range(1e-3, 1e2, log=True)},
    "lasso": {"alpha": Range(1e-4, 1e1, log=True)},
    "svm": {"C": Range(1e-2, 1e2, log=True), "gamma": ["scale", "auto"]},
    "knn": {"n_neighbors": Range(3, 50, log=True), "weights": ["uniform", "distance"]},
    "naive_bayes": {"var_smoothing": Range(1e-12, 1e-6, log=True)},
    "decision_tree": dict(_TREE),
    "random_forest": dict(_FOREST),
    "extra_trees": dict(_FOREST),
    "ada_boost": {"n_estimators": Range(25, 300, log=True), "learning_rate": Range(0.01, 2.0, log=True)},
    "gradient_boosting": {**_BOOSTING, "n_estimators": Range(50, 400, log=True), "subsample": Range(0.5, 1.0)},
    "hist_gradient_boosting": {
        "learning_rate": Range(0.01, 0.3, log=True),
        "max_leaf_nodes": Range(8, 128, log=True),
        "min_samples_leaf": Range(5, 100, log=True),
        "l2_regularization": Range(1e-6, 10.0, log=True),
    },
    "lightgbm": {
        "learning_rate": Range(0.01, 0.3, log=True),
        "num_leaves": Range(8, 128, log=True),
        "min_child_samples": Range(5, 100, log=True),
        "subsample": Range(0.5, 1.0),
        "colsample_bytree": Range(0.5, 1.0),
        "reg_lambda": Range(1e-6, 10.0, log=True),
    },
    "xgboost": {
        **_BOOSTING,
        "min_child_weight": Range(1e-2, 10.0, log=True),
        "subsample": Range(0.5, 1.0),
        "colsample_bytree": Range(0.5, 1.0),
        "reg_lambda": Range(1e-6, 10.0, log=True),
    },
    "catboost": {
        "learning_rate": Range(0.01, 0.3, log=True),
        "depth": Range(4, 10),
        "l2_leaf_reg": Range(1.0, 10.0, log=True),
    },
}


def _parse(where: str, value: Any) -> Range | list:
    """One override: {"low", "high", "log"} or a non-empty list of choices; one error line otherwise."""
    if isinstance(value, list) and value:
        return value
    if isinstance(value, dict) and {"low", "high"} <= set(value) <= {"low", "high", "log"}:
        low, high, log = value["low"], value["high"], value.get("log", False)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if numbers and isinstance(log, bool) and low < high and (low > 0 or not log):
            return Range(low, high, log)
    raise ConfigError(
        f"{where}: expected {{\"low\": number, \"high\": larger number, \"log\": true|false}} (log needs low > 0) "
        f"or a non-empty list of choices; got {value!r}"
    )


def search_space(model: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Range | list]:
    """The catalog's space for `model` with config.json's `tune.space[model]` replacing the parameters it names."""
    unknown = sorted(set(overrides) - set(SPACES))
    if unknown:
        raise ConfigError(f"tune.space: no model named {', '.join(map(repr, unknown))}; models: {', '.join(sorted(SPACES))}")
    space = dict(SPACES.get(model, {}))
    space.update({name: _parse(f"tune.space.{model}.{name}", value) for name, value in overrides.get(model, {}).items()})
    if not space:
        raise ConfigError(f"tune: no search space for model {model!r}; declare one in tune.space.{model}")
    return space


def suggest(trial, space: dict[str, Range | list]) -> dict[str, Any]:
    """One trial's parameters (an optuna.Trial samples them)."""
    params = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            params[name] = trial.suggest_categorical(name, spec)
        elif spec.integer:
            params[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        else:
            params[name] = trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log)
    return params


def example_params(space: dict[str, Range | list]) -> dict[str, Any]:
    """One point of the space (the low ends, the first choices): built once to check the names before tuning."""
    return {name: spec[0] if isinstance(spec, list) else spec.low for name, spec in space.items()}
