"""What differs between LightGBM, XGBoost and CatBoost: their parameter names, how each is told which
columns are categorical, how it stops early, reports a round and measures importance.

Each library is imported when a model of it is built, fitted or unpickled, never when this module is.
`check_args` checks `model_args` against the library's own parameter names: LightGBM's full list with its
aliases (the one the library itself parses), XGBoost's documented parameters (its scikit-learn class
takes **kwargs and only warns about unknown ones), CatBoost's constructor.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tand.config_errors import did_you_mean
from tand.errors import ConfigError

DEFAULT_ROUNDS = 1000
DEFAULT_EARLY_STOPPING = 50
MAX_THREADS = 4  # beyond this, boosting on small tabular data gains little and starves the processes beside it

DOCS = {
    "lightgbm": "https://lightgbm.readthedocs.io/en/stable/Parameters.html",
    "xgboost": "https://xgboost.readthedocs.io/en/stable/parameter.html",
    "catboost": "https://catboost.ai/docs/en/references/training-parameters/",
}
# XGBoost's documented booster and learning-task parameters (parameter.html) beyond its scikit-learn
# constructor's named ones, aliases included.
XGBOOST_DOCUMENTED = frozenset(
    """eta min_split_loss lambda alpha nthread seed seed_per_iteration disable_default_eval_metric updater
    refresh_leaf process_type max_cached_hist_node sample_type normalize_type rate_drop one_drop skip_drop
    feature_selector top_k tweedie_variance_power huber_slope quantile_alpha aft_loss_distribution
    aft_loss_distribution_scale num_class max_bin sketch_eps use_rmm""".split()
)
# The template sets these from the columns' kinds (and its own early-stopping split).
_RESERVED = {
    "lightgbm": {"categorical_feature", "cat_feature", "categorical_column", "cat_column", "categorical_features"},
    "xgboost": {"enable_categorical", "feature_types", "callbacks"},
    "catboost": {"cat_features", "callbacks", "eval_set", "use_best_model"},
}
_ROUNDS_KEYS = {
    "lightgbm": ("num_iterations", "n_iter", "nrounds", "max_iter", "num_tree", "num_round", "num_trees", "num_rounds",
                 "n_estimators", "num_iteration", "num_boost_round"),
    "xgboost": ("n_estimators", "num_boost_round"),
    "catboost": ("iterations", "n_estimators", "num_boost_round", "num_trees"),
}  # fmt: skip
_EARLY_KEYS = {
    "lightgbm": ("early_stopping_round", "early_stopping_rounds", "early_stopping", "n_iter_no_change"),
    "xgboost": ("early_stopping_rounds",),
    "catboost": ("early_stopping_rounds", "od_wait"),
}
_THREAD_KEYS = {
    "lightgbm": ("n_jobs", "num_threads", "num_thread", "nthread", "nthreads"),
    "xgboost": ("n_jobs", "nthread"),
    "catboost": ("thread_count",),
}
_SEED_KEYS = {
    "lightgbm": ("random_state", "seed", "random_seed"),
    "xgboost": ("random_state", "seed"),
    "catboost": ("random_seed", "random_state"),
}
_QUIET_KEYS = {
    "lightgbm": ("verbose", "verbosity"),
    "xgboost": ("verbosity",),
    "catboost": ("verbose", "silent", "logging_level", "verbose_eval"),
}
_CLASSES = {
    "lightgbm": ("lightgbm", "LGBMClassifier", "LGBMRegressor"),
    "xgboost": ("xgboost", "XGBClassifier", "XGBRegressor"),
    "catboost": ("catboost", "CatBoostClassifier", "CatBoostRegressor"),
}


def library_class(library: str, task: str):
    module, classifier, regressor = _CLASSES[library]
    return getattr(importlib.import_module(module), classifier if task == "classification" else regressor)


def threads() -> int:
    """Threads for one fit: OMP_NUM_THREADS when set (the task layer sets it for processes beside others),
    else the CPUs this process may use, at most MAX_THREADS."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_THREADS, available))


def known_parameters(library: str) -> set[str]:
    """The parameter names (and aliases) the library documents."""
    names = set()
    for task in ("classification", "regression"):
        cls = library_class(library, task)
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                names |= set(inspect.signature(klass.__init__).parameters)
    names -= {"self", "kwargs", "args"}
    if library == "lightgbm":
        from lightgbm.basic import _ConfigAliases  # the library's own table, from its C++ config

        for name, aliases in _ConfigAliases._get_all_param_aliases().items():
            names |= {name, *aliases}
    elif library == "xgboost":
        names |= XGBOOST_DOCUMENTED
    return names


def check_args(library: str, args: dict) -> tuple[dict, int, int | None]:
    """`model_args` as (the library's parameters, boosting rounds, early-stopping rounds); one ConfigError
    line for a name the library does not know or one the template sets itself."""
    reserved = sorted(set(args) & _RESERVED[library])
    if reserved:
        raise ConfigError(
            f"train.model_args: {', '.join(map(repr, reserved))} is set by the template for {library} (categorical columns "
            "are told to the library from their kind; list them in train.categorical; early stopping uses its own split)"
        )
    known = known_parameters(library)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(
            f"train.model_args: {library} has no parameter {unknown[0]!r}{did_you_mean(unknown[0], sorted(known))}; "
            f"its parameters: {DOCS[library]}"
        )
    params = dict(args)
    rounds, early = DEFAULT_ROUNDS, DEFAULT_EARLY_STOPPING
    for key in _ROUNDS_KEYS[library]:
        if key in params:
            rounds = params.pop(key)
    for key in _EARLY_KEYS[library]:
        if key in params:
            early = params.pop(key)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"train.model_args: the number of boosting rounds (n_estimators) must be a whole number >= 1; got {rounds!r}")
    if early is not None and (not isinstance(early, int) or isinstance(early, bool) or early < 0):
        raise ConfigError(f"train.model_args: early_stopping_rounds must be a whole number >= 0 (0: off); got {early!r}")
    return params, rounds, early or None


def _defaults(library: str, params: dict, seed: int) -> dict:
    """The seed, bounded threads and silence, unless model_args set them."""
    out = {}
    if not set(params) & set(_SEED_KEYS[library]):
        out["random_seed" if library == "catboost" else "random_state"] = seed
    if not set(params) & set(_THREAD_KEYS[library]):
        out["thread_count" if library == "catboost" else "n_jobs"] = threads()
    if not set(params) & set(_QUIET_KEYS[library]):
        out.update({"lightgbm": {"verbose": -1}, "xgboost": {"verbosity": 0}, "catboost": {"verbose": False}}[library])
    return out


@dataclass(frozen=True)
class Library:
    build: Callable  # (task, params, rounds, early or None, seed, categorical, width) -> unfitted estimator
    data: Callable  # (float matrix, categorical) -> what the library's fit and predict take
    fit: Callable  # (model, (X, y, w), (X, y, w) or None, categorical, early, progress) -> None
    rounds: Callable  # fitted model -> rounds kept
    validation_curve: Callable  # fitted model -> (metric name, values per round) or None
    importances: Callable  # (fitted model, width) -> importance per column


# -- LightGBM ---------------------------------------------------------------------
def _lgb_build(task, params, rounds, early, seed, categorical, width):
    return library_class("lightgbm", task)(n_estimators=rounds, **{**_defaults("lightgbm", params, seed), **params})


def _lgb_fit(model, train, valid, categorical, early, progress):
    import lightgbm

    def report(env):
        results = env.evaluation_result_list or []
        progress.round(results[0][2] if results else None)

    callbacks = [report]
    kwargs = {"categorical_feature": list(categorical) or "auto", "sample_weight": train[2]}
    if valid is not None:
        callbacks.append(lightgbm.early_stopping(early, first_metric_only=True, verbose=False))
        kwargs.update(eval_X=(valid[0],), eval_y=(valid[1],), eval_sample_weight=None if valid[2] is None else [valid[2]])
    model.fit(train[0], train[1], callbacks=callbacks, **kwargs)


def _lgb_curve(model):
    results = getattr(model, "evals_result_", None) or {}
    for metrics in results.values():
        for name, values in metrics.items():
            return name, list(values)
    return None


# -- XGBoost ----------------------------------------------------------------------
def _xgb_build(task, params, rounds, early, seed, categorical, width):
    types = ["c" if i in categorical else "q" for i in range(width)]
    kwargs = {"enable_categorical": bool(categorical), "feature_types": types if categorical else None}
    return library_class("xgboost", task)(
        n_estimators=rounds, early_stopping_rounds=early, **kwargs, **{**_defaults("xgboost", params, seed), **params}
    )


def _xgb_fit(model, train, valid, categorical, early, progress):
    import xgboost

    class Report(xgboost.callback.TrainingCallback):
        def after_iteration(self, booster, epoch, evals_log):
            last = next((values[-1] for metrics in evals_log.values() for values in metrics.values()), None)
            progress.round(float(last) if last is not None else None)
            return False

    model.set_params(callbacks=[Report()])
    try:
        kwargs = {"sample_weight": train[2]}
        if valid is not None:
            kwargs.update(eval_set=[valid[:2]], sample_weight_eval_set=None if valid[2] is None else [valid[2]])
        model.fit(train[0], train[1], verbose=False, **kwargs)
    finally:
        model.set_params(callbacks=None)  # the callback holds the progress bar: it would travel in the pickle


def _xgb_rounds(model):
    best = getattr(model, "best_iteration", None) if model.early_stopping_rounds else None
    return int(best) + 1 if best is not None else int(model.get_booster().num_boosted_rounds())


def _xgb_curve(model):
    try:
        results = model.evals_result()
    except Exception:  # noqa: BLE001 - XGBoost raises XGBoostError when fitted without an eval set
        return None
    for metrics in results.values():
        for name, values in metrics.items():
            return name, list(values)
    return None


def _xgb_importances(model, width):
    scores = model.get_booster().get_score(importance_type="total_gain")
    return [scores.get(f"f{i}", 0.0) for i in range(width)]


# -- CatBoost ---------------------------------------------------------------------
def _cb_build(task, params, rounds, early, seed, categorical, width):
    kwargs = {"iterations": rounds, "allow_writing_files": False, "cat_features": list(categorical) or None}
    if early:
        kwargs["early_stopping_rounds"] = early
    return library_class("catboost", task)(**kwargs, **{**_defaults("catboost", params, seed), **params})


def _cb_data(X, categorical):
    """CatBoost takes categories as whole numbers or text, never float or NaN: codes with -1 for missing."""
    if not categorical:
        return X
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    for i in categorical:
        codes = X[:, i]
        frame[f"f{i}"] = np.where(np.isnan(codes), -1, codes).astype(np.int64)
    return frame


def _cb_fit(model, train, valid, categorical, early, progress):
    from catboost import Pool

    class Report:
        def after_iteration(self, info):
            metrics = info.metrics.get("validation") or {}
            values = next(iter(metrics.values()), None)
            progress.round(float(values[-1]) if values else None)
            return True

    eval_set = Pool(valid[0], valid[1], cat_features=list(categorical) or None, weight=valid[2]) if valid is not None else None
    model.fit(train[0], train[1], sample_weight=train[2], eval_set=eval_set, callbacks=[Report()])


def _cb_curve(model):
    metrics = (getattr(model, "evals_result_", None) or {}).get("validation") or {}
    for name, values in metrics.items():
        return name.lower(), list(values)
    return None


LIBRARIES = {
    "lightgbm": Library(
        _lgb_build, lambda X, categorical: X, _lgb_fit,
        lambda m: int(m.best_iteration_ or m.n_estimators_), _lgb_curve,
        lambda m, width: m.booster_.feature_importance(importance_type="gain"),
    ),
    "xgboost": Library(_xgb_build, lambda X, categorical: X, _xgb_fit, _xgb_rounds, _xgb_curve, _xgb_importances),
    "catboost": Library(
        _cb_build, _cb_data, _cb_fit, lambda m: int(m.tree_count_), _cb_curve, lambda m, width: m.get_feature_importance(),
    ),
}  # fmt: skip
