"""Names users put in `train.model`, mapped to scikit-learn classes (imported only when built).

LightGBM, XGBoost and CatBoost are built by tand.models.boosting (their own scikit-learn APIs behind one
adapter); each is known only where its library is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

from tand.errors import ConfigError

CLASSIFIERS = {
    "knn": "sklearn.neighbors.KNeighborsClassifier",
    "decision_tree": "sklearn.tree.DecisionTreeClassifier",
    "random_forest": "sklearn.ensemble.RandomForestClassifier",
    "extra_trees": "sklearn.ensemble.ExtraTreesClassifier",
    "ada_boost": "sklearn.ensemble.AdaBoostClassifier",
    "gradient_boosting": "sklearn.ensemble.GradientBoostingClassifier",
    "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingClassifier",
    "naive_bayes": "sklearn.naive_bayes.GaussianNB",
    "logistic_regression": "sklearn.linear_model.LogisticRegression",
    "svm": "sklearn.svm.SVC",
}

REGRESSORS = {
    "linear": "sklearn.linear_model.LinearRegression",
    "ridge": "sklearn.linear_model.Ridge",
    "lasso": "sklearn.linear_model.Lasso",
    "knn": "sklearn.neighbors.KNeighborsRegressor",
    "decision_tree": "sklearn.tree.DecisionTreeRegressor",
    "random_forest": "sklearn.ensemble.RandomForestRegressor",
    "extra_trees": "sklearn.ensemble.ExtraTreesRegressor",
    "gradient_boosting": "sklearn.ensemble.GradientBoostingRegressor",
    "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingRegressor",
}

# The boosting libraries: train.model name -> the module that must be importable.
BOOSTING = {"lightgbm": "lightgbm", "xgboost": "xgboost", "catboost": "catboost"}
# Tree models that take categories natively (integer codes, told which columns), not one-hot encoded.
NATIVE_CATEGORIES = frozenset({*BOOSTING, "hist_gradient_boosting"})
# The distribution (pinned in requirements.txt) that serving a model of each boosting library needs.
BOOSTING_DISTRIBUTIONS = {"lightgbm": "lightgbm", "xgboost": "xgboost-cpu", "catboost": "catboost"}
# Debian packages the served library needs beyond python:3.11-slim (LightGBM links the system's OpenMP;
# XGBoost's and scikit-learn's wheels carry their own).
BOOSTING_SYSTEM_PACKAGES = {"lightgbm": ("libgomp1",)}

# Arguments we set unless the user does: probabilities for SVC, a seed where the class takes one.
_DEFAULT_ARGS = {"sklearn.svm.SVC": {"probability": True}, "sklearn.linear_model.LogisticRegression": {"max_iter": 1000}}


def installed_boosting() -> list[str]:
    return [name for name, module in BOOSTING.items() if importlib.util.find_spec(module) is not None]


def serving_packages(model: str | None) -> tuple[list[str], list[str]]:
    """(pinned pip requirements, Debian packages) that serving a model named `model` needs beyond
    requirements-serve.txt: its boosting library, at the version installed here; nothing for the others."""
    if model not in BOOSTING_DISTRIBUTIONS:
        return [], []
    from importlib.metadata import version

    distribution = BOOSTING_DISTRIBUTIONS[model]
    return [f"{distribution}=={version(distribution)}"], list(BOOSTING_SYSTEM_PACKAGES.get(model, ()))


def known_models(task: str) -> list[str]:
    return sorted([*(CLASSIFIERS if task == "classification" else REGRESSORS), *installed_boosting()])


def build_sklearn_estimator(task: str, name: str, args: dict, seed: int):
    """The estimator named in config, with `model_args` checked against its signature."""
    dotted = (CLASSIFIERS if task == "classification" else REGRESSORS)[name]
    module_name, class_name = dotted.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        valid = ", ".join(p for p in accepted if p != "self")
        raise ConfigError(f"train.model_args: {class_name} takes no argument {', '.join(map(repr, unknown))}; valid: {valid}")
    kwargs = {**_DEFAULT_ARGS.get(dotted, {}), **args}
    if "random_state" in accepted and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train.model_args: {class_name} refused the arguments: {exc}") from None
